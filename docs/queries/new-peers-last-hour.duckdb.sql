-- Source and destination pairs first seen in the last hour (of everything in the files).
SELECT srcaddr, dstaddr, make_timestamp(MIN(start) * 1000000) AS first_seen
FROM flow_logs
WHERE log_status = 'OK'
GROUP BY srcaddr, dstaddr
HAVING MIN(start) >= epoch(current_timestamp) - 3600
ORDER BY first_seen, srcaddr, dstaddr;
