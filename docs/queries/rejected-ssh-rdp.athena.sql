-- VpcFlowLogsRejectedSshRdp: Rejected TCP attempts on SSH (22) and RDP (3389) since yesterday, by source
-- (the table `flowlog athena-ddl` creates, yyyy/MM/dd layout)
SELECT srcaddr, dstaddr, dstport, SUM(packets) AS packets, COUNT(*) AS records
FROM "vpc_flow_logs"
WHERE substr("date", 1, 10) >= date_format(current_date - interval '1' day, '%Y/%m/%d')
  AND action = 'REJECT' AND protocol = 6 AND dstport IN (22, 3389)
GROUP BY srcaddr, dstaddr, dstport
ORDER BY packets DESC, srcaddr, dstaddr, dstport;
