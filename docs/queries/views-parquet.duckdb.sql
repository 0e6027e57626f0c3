-- DuckDB: the view every *.duckdb.sql query reads, over a file destination's Parquet objects
-- (`--file-format parquet`, any partition layout). The columns and types come from the files.
CREATE OR REPLACE VIEW flow_logs AS
SELECT * FROM read_parquet('/var/log/flowlog/AWSLogs/**/*.log.parquet', hive_partitioning = false);
