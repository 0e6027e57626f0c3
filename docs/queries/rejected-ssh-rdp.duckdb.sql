-- Rejected TCP attempts on SSH (22) and RDP (3389), by source.
SELECT srcaddr, dstaddr, dstport, SUM(packets) AS packets, COUNT(*) AS records
FROM flow_logs
WHERE action = 'REJECT' AND protocol = 6 AND dstport IN (22, 3389)
GROUP BY srcaddr, dstaddr, dstport
ORDER BY packets DESC, srcaddr, dstaddr, dstport;
