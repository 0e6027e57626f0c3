-- Bytes and packets of each interface per hour (UTC), by the hour of each record's start.
SELECT interface_id, make_timestamp((start // 3600 * 3600) * 1000000) AS hour,
       SUM(bytes) AS bytes, SUM(packets) AS packets
FROM flow_logs
WHERE log_status = 'OK'
GROUP BY interface_id, hour
ORDER BY interface_id, hour;
