-- Top talkers: the 10 source and destination pairs that moved the most bytes.
SELECT srcaddr, dstaddr, SUM(bytes) AS bytes, SUM(packets) AS packets
FROM flow_logs
WHERE log_status = 'OK'
GROUP BY srcaddr, dstaddr
ORDER BY bytes DESC, packets DESC, srcaddr, dstaddr
LIMIT 10;
