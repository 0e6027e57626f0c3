-- VpcFlowLogsTopTalkers: The 10 source and destination pairs that moved the most bytes since yesterday
-- (the table `flowlog athena-ddl` creates, yyyy/MM/dd layout)
SELECT srcaddr, dstaddr, SUM(bytes) AS bytes, SUM(packets) AS packets
FROM "vpc_flow_logs"
WHERE substr("date", 1, 10) >= date_format(current_date - interval '1' day, '%Y/%m/%d') AND srcaddr <> '-'
GROUP BY srcaddr, dstaddr
ORDER BY bytes DESC, packets DESC, srcaddr, dstaddr
LIMIT 10;
