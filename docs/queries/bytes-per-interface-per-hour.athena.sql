-- VpcFlowLogsBytesPerInterfacePerHour: Bytes and packets of each interface, per hour, since yesterday
-- (the table `flowlog athena-ddl` creates, yyyy/MM/dd layout)
SELECT interface_id, date_trunc('hour', from_unixtime(start)) AS hour,
       SUM(bytes) AS bytes, SUM(packets) AS packets
FROM "vpc_flow_logs"
WHERE substr("date", 1, 10) >= date_format(current_date - interval '1' day, '%Y/%m/%d') AND start IS NOT NULL
GROUP BY interface_id, date_trunc('hour', from_unixtime(start))
ORDER BY interface_id, hour;
