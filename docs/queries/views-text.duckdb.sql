-- DuckDB: the view every *.duckdb.sql query reads, over a file destination's text objects
-- (`flowlog run --destination file:/var/log/flowlog`, any partition layout). Columns are the
-- default format's (version 2), typed as AWS's Athena DDL types them; `-` is NULL.
-- For another --log-format, list its fields here in its order (see `flowlog athena-ddl`).
CREATE OR REPLACE VIEW flow_logs AS
SELECT * FROM read_csv('/var/log/flowlog/AWSLogs/**/*.log.gz',
    delim = ' ', header = true, nullstr = '-', auto_detect = false,
    hive_partitioning = false,
    columns = {
        'version': 'INTEGER', 'account_id': 'VARCHAR', 'interface_id': 'VARCHAR',
        'srcaddr': 'VARCHAR', 'dstaddr': 'VARCHAR', 'srcport': 'INTEGER', 'dstport': 'INTEGER',
        'protocol': 'BIGINT', 'packets': 'BIGINT', 'bytes': 'BIGINT', 'start': 'BIGINT',
        'end': 'BIGINT', 'action': 'VARCHAR', 'log_status': 'VARCHAR'
    });
