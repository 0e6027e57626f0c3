-- VpcFlowLogsNewPeersLastHour: Source and destination pairs first seen in the last hour (of the last 7 days)
-- (the table `flowlog athena-ddl` creates, yyyy/MM/dd layout)
SELECT srcaddr, dstaddr, from_unixtime(MIN(start)) AS first_seen
FROM "vpc_flow_logs"
WHERE substr("date", 1, 10) >= date_format(current_date - interval '7' day, '%Y/%m/%d') AND start IS NOT NULL AND srcaddr <> '-'
GROUP BY srcaddr, dstaddr
HAVING MIN(start) >= to_unixtime(current_timestamp) - 3600
ORDER BY first_seen, srcaddr, dstaddr;
