//! `flowlog athena-ddl`: what AWS's Athena integration creates for a flow log, for this flow
//! log's own fields and `DestinationOptions`: a `CREATE EXTERNAL TABLE` over its objects (text
//! or Parquet) with partition projection matching the key layout of [`ObjectLayout::key`], and
//! the named queries (top talkers, rejected SSH and RDP, bytes per interface per hour, new
//! peers in the last hour).
//!
//! Column names are the field names with `_` for `-`; types are AWS's published DDL's: `int`
//! for version, ports, tcp-flags and traffic-path, `bigint` for protocol, packets, bytes,
//! start and end, `string` for the rest (spec §6.1). Our Parquet `protocol` column is INT_32
//! (spec §3.2), which Athena reads into a `bigint` column.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike as _, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    flowlogs::{
        api::{ApiError, codes},
        registry::Registry,
        spec::{FlowLogSpec, ObjectOptions},
    },
    inventory::metadata::Metadata,
    publish::{DestinationSpec, layout::FileFormat},
    records::format::{ColumnType, Field},
};

/// What one table is made of.
#[derive(Debug, Clone)]
pub struct TableSource {
    pub flow_log_id: String,
    pub fields: Vec<Field>,
    pub file_format: FileFormat,
    pub hive_compatible_partitions: bool,
    pub per_hour_partition: bool,
    pub account_id: String,
    pub region: String,
    /// Where `AWSLogs/` is: `s3://bucket[/prefix]`, or `file:///dir` (no trailing `/`).
    pub root: String,
    /// The first day partition projection covers (the flow log's creation).
    pub since: DateTime<Utc>,
    /// `vpc_flow_logs` unless named.
    pub table: String,
}

/// How the caller names and places the table (`flowlog athena-ddl`'s own options).
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// Table name (default `vpc_flow_logs`).
    pub table: Option<String>,
    /// Where `AWSLogs/` is, instead of the destination (e.g. `s3://bucket/prefix` for files
    /// copied from a `file:` destination).
    pub location: Option<String>,
    /// First day of partition projection instead of the flow log's creation.
    pub since: Option<DateTime<Utc>>,
}

impl TableSource {
    /// The table over `spec`'s objects, whose keys carry `meta`'s account and region.
    pub fn new(spec: &FlowLogSpec, meta: &Metadata, opts: &TableOptions) -> anyhow::Result<Self> {
        Self::from_parts(
            &spec.id,
            spec.log_format.fields(),
            &spec.destination,
            &spec.options,
            spec.creation_time,
            meta,
            opts,
        )
    }

    /// The table over the objects a flow log with these parts writes.
    pub fn from_parts(
        id: &str,
        fields: &[Field],
        destination: &DestinationSpec,
        options: &ObjectOptions,
        created: DateTime<Utc>,
        meta: &Metadata,
        opts: &TableOptions,
    ) -> anyhow::Result<Self> {
        let root = match (&opts.location, destination) {
            (Some(l), _) => l.trim_end_matches('/').to_string(),
            (None, DestinationSpec::S3 { bucket, prefix }) if prefix.is_empty() => {
                format!("s3://{bucket}")
            }
            (None, DestinationSpec::S3 { bucket, prefix }) => format!("s3://{bucket}/{prefix}"),
            (None, DestinationSpec::File(dir)) => {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                format!("file://{}", dir.display().to_string().trim_end_matches('/'))
            }
            (None, DestinationSpec::CloudWatchLogs { .. }) => anyhow::bail!(
                "flow log {id} delivers to CloudWatch Logs, which Athena does not read: use the Logs Insights queries in docs/queries/"
            ),
        };
        if let Some(table) = &opts.table {
            anyhow::ensure!(
                !table.is_empty()
                    && table
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "table name {table:?}: Athena table names are lowercase letters, digits and _"
            );
        }
        Ok(TableSource {
            flow_log_id: id.to_string(),
            fields: fields.to_vec(),
            file_format: options.file_format,
            hive_compatible_partitions: options.hive_compatible_partitions,
            per_hour_partition: options.per_hour_partition,
            account_id: meta.account_id.clone(),
            region: meta.region.clone(),
            root,
            since: opts.since.unwrap_or(created),
            table: opts
                .table
                .clone()
                .unwrap_or_else(|| "vpc_flow_logs".to_string()),
        })
    }
}

/// Athena's type for a field's column.
pub fn athena_type(field: Field) -> &'static str {
    match (field, field.column_type()) {
        // AWS's DDL has protocol as bigint, though its Parquet column is INT_32.
        (Field::Protocol, _) => "bigint",
        (_, ColumnType::Int32) => "int",
        (_, ColumnType::Int64) => "bigint",
        (_, ColumnType::String) => "string",
    }
}

/// The S3 (or file) location of the account's and region's objects, up to the date folders.
fn base(src: &TableSource) -> String {
    let (root, acct, region) = (&src.root, &src.account_id, &src.region);
    if src.hive_compatible_partitions {
        format!("{root}/AWSLogs/aws-account-id={acct}/aws-service=vpcflowlogs/aws-region={region}/")
    } else {
        format!("{root}/AWSLogs/{acct}/vpcflowlogs/{region}/")
    }
}

/// `PARTITIONED BY` columns and the projection properties for them.
fn partitions(src: &TableSource) -> (String, Vec<(String, String)>) {
    let base = base(src);
    let mut props = vec![("projection.enabled".to_string(), "true".to_string())];
    let mut p = |k: &str, v: String| props.push((k.to_string(), v));
    if src.hive_compatible_partitions {
        let year = src.since.year();
        p("projection.year.type", "integer".into());
        // Integer projection has no NOW: ten years from the flow log's creation.
        p("projection.year.range", format!("{year},{}", year + 9));
        p("projection.month.type", "integer".into());
        p("projection.month.range", "1,12".into());
        p("projection.month.digits", "2".into());
        p("projection.day.type", "integer".into());
        p("projection.day.range", "1,31".into());
        p("projection.day.digits", "2".into());
        let mut cols = "`year` string, `month` string, `day` string".to_string();
        let mut template = format!("{base}year=${{year}}/month=${{month}}/day=${{day}}");
        if src.per_hour_partition {
            p("projection.hour.type", "integer".into());
            p("projection.hour.range", "0,23".into());
            p("projection.hour.digits", "2".into());
            cols.push_str(", `hour` string");
            template.push_str("/hour=${hour}");
        }
        p("storage.location.template", template);
        (cols, props)
    } else {
        let (format, unit, since) = if src.per_hour_partition {
            ("yyyy/MM/dd/HH", "HOURS", src.since.format("%Y/%m/%d/00"))
        } else {
            ("yyyy/MM/dd", "DAYS", src.since.format("%Y/%m/%d"))
        };
        p("projection.date.type", "date".into());
        p("projection.date.format", format.into());
        p("projection.date.range", format!("{since},NOW"));
        p("projection.date.interval", "1".into());
        p("projection.date.interval.unit", unit.into());
        p("storage.location.template", format!("{base}${{date}}"));
        ("`date` string".to_string(), props)
    }
}

/// The `CREATE EXTERNAL TABLE` statement.
pub fn create_table(src: &TableSource) -> String {
    let mut sql = format!("CREATE EXTERNAL TABLE IF NOT EXISTS `{}` (\n", src.table);
    let columns: Vec<String> = src
        .fields
        .iter()
        .map(|f| format!("  `{}` {}", f.column_name(), athena_type(*f)))
        .collect();
    sql.push_str(&columns.join(",\n"));
    let (partition_cols, projection) = partitions(src);
    let _ = writeln!(sql, "\n)\nPARTITIONED BY ({partition_cols})");
    let mut props = Vec::new();
    match src.file_format {
        FileFormat::PlainText => {
            sql.push_str("ROW FORMAT DELIMITED\nFIELDS TERMINATED BY ' '\n");
            props.push(("skip.header.line.count".to_string(), "1".to_string()));
        }
        FileFormat::Parquet => sql.push_str(
            "ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'\n\
             STORED AS INPUTFORMAT 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat'\n\
             OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat'\n",
        ),
    }
    let _ = writeln!(sql, "LOCATION '{}'", base(src));
    props.extend(projection);
    let props: Vec<String> = props
        .iter()
        .map(|(k, v)| format!("  '{k}'='{v}'"))
        .collect();
    let _ = write!(sql, "TBLPROPERTIES (\n{}\n);\n", props.join(",\n"));
    sql
}

/// One named query, as the integration's `AWS::Athena::NamedQuery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedQuery {
    pub name: &'static str,
    pub description: &'static str,
    pub sql: String,
}

/// A predicate keeping the partitions of the last `days` days (partition pruning).
fn recent_partitions(src: &TableSource, days: u32) -> String {
    let day = if src.hive_compatible_partitions {
        "concat(\"year\", '/', \"month\", '/', \"day\")"
    } else {
        "substr(\"date\", 1, 10)"
    };
    format!("{day} >= date_format(current_date - interval '{days}' day, '%Y/%m/%d')")
}

/// The named queries whose fields the format has (the others are left out).
pub fn named_queries(src: &TableSource) -> Vec<NamedQuery> {
    use Field::*;
    let t = &src.table;
    let has = |need: &[Field]| need.iter().all(|f| src.fields.contains(f));
    let mut out = Vec::new();
    let day = recent_partitions(src, 1);
    if has(&[SrcAddr, DstAddr, Packets, Bytes]) {
        out.push(NamedQuery {
            name: "VpcFlowLogsTopTalkers",
            description: "The 10 source and destination pairs that moved the most bytes since yesterday",
            sql: format!(
                "SELECT srcaddr, dstaddr, SUM(bytes) AS bytes, SUM(packets) AS packets\n\
                 FROM \"{t}\"\n\
                 WHERE {day} AND srcaddr <> '-'\n\
                 GROUP BY srcaddr, dstaddr\n\
                 ORDER BY bytes DESC, packets DESC, srcaddr, dstaddr\n\
                 LIMIT 10;\n"
            ),
        });
    }
    if has(&[SrcAddr, DstAddr, DstPort, Protocol, Action, Packets]) {
        out.push(NamedQuery {
            name: "VpcFlowLogsRejectedSshRdp",
            description: "Rejected TCP attempts on SSH (22) and RDP (3389) since yesterday, by source",
            sql: format!(
                "SELECT srcaddr, dstaddr, dstport, SUM(packets) AS packets, COUNT(*) AS records\n\
                 FROM \"{t}\"\n\
                 WHERE {day}\n\
                 \x20 AND action = 'REJECT' AND protocol = 6 AND dstport IN (22, 3389)\n\
                 GROUP BY srcaddr, dstaddr, dstport\n\
                 ORDER BY packets DESC, srcaddr, dstaddr, dstport;\n"
            ),
        });
    }
    if has(&[InterfaceId, Start, Packets, Bytes]) {
        out.push(NamedQuery {
            name: "VpcFlowLogsBytesPerInterfacePerHour",
            description: "Bytes and packets of each interface, per hour, since yesterday",
            sql: format!(
                "SELECT interface_id, date_trunc('hour', from_unixtime(start)) AS hour,\n\
                 \x20      SUM(bytes) AS bytes, SUM(packets) AS packets\n\
                 FROM \"{t}\"\n\
                 WHERE {day} AND start IS NOT NULL\n\
                 GROUP BY interface_id, date_trunc('hour', from_unixtime(start))\n\
                 ORDER BY interface_id, hour;\n"
            ),
        });
    }
    if has(&[SrcAddr, DstAddr, Start]) {
        let week = recent_partitions(src, 7);
        out.push(NamedQuery {
            name: "VpcFlowLogsNewPeersLastHour",
            description: "Source and destination pairs first seen in the last hour (of the last 7 days)",
            sql: format!(
                "SELECT srcaddr, dstaddr, from_unixtime(MIN(start)) AS first_seen\n\
                 FROM \"{t}\"\n\
                 WHERE {week} AND start IS NOT NULL AND srcaddr <> '-'\n\
                 GROUP BY srcaddr, dstaddr\n\
                 HAVING MIN(start) >= to_unixtime(current_timestamp) - 3600\n\
                 ORDER BY first_seen, srcaddr, dstaddr;\n"
            ),
        });
    }
    out
}

/// What `flowlog athena-ddl` prints: the table, then each named query, as one SQL script.
pub fn script(src: &TableSource) -> String {
    let layout = match (src.hive_compatible_partitions, src.per_hour_partition) {
        (false, false) => "yyyy/MM/dd folders",
        (false, true) => "yyyy/MM/dd/HH folders",
        (true, false) => "Hive-compatible year=/month=/day= folders",
        (true, true) => "Hive-compatible year=/month=/day=/hour= folders",
    };
    let format = match src.file_format {
        FileFormat::PlainText => "plain text",
        FileFormat::Parquet => "Parquet",
    };
    let mut out = format!(
        "-- Athena table for flow log {} ({format}, {layout}), with partition projection.\n",
        src.flow_log_id
    );
    out.push_str(&create_table(src));
    for q in named_queries(src) {
        let _ = write!(out, "\n-- {}: {}\n{}", q.name, q.description, q.sql);
    }
    out
}

/// `GetAthenaDdl` input: the flow log and [`TableOptions`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GetAthenaDdlRequest {
    pub flow_log_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// `GetAthenaDdl` output: [`script`]'s text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetAthenaDdlResponse {
    pub flow_log_id: String,
    pub ddl: String,
}

/// Parses `--since`: a `YYYY-MM-DD` day (UTC midnight).
pub fn parse_since(day: &str) -> Result<DateTime<Utc>, String> {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{day:?} is not a day: write it as YYYY-MM-DD"))
}

/// Serves `GetAthenaDdl` from the agent's registry.
pub fn serve(
    registry: &Registry,
    req: &GetAthenaDdlRequest,
) -> Result<GetAthenaDdlResponse, ApiError> {
    let spec = registry
        .flow_logs()
        .find(|s| s.id == req.flow_log_id)
        .ok_or_else(|| {
            ApiError::new(
                codes::FLOW_LOG_NOT_FOUND,
                format!("The flow log ID '{}' does not exist", req.flow_log_id),
            )
        })?;
    let since = req
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(ApiError::invalid)?;
    let opts = TableOptions {
        table: req.table_name.clone(),
        location: req.location.clone(),
        since,
    };
    let src = TableSource::new(spec, registry.metadata(), &opts)
        .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    Ok(GetAthenaDdlResponse {
        flow_log_id: spec.id.clone(),
        ddl: script(&src),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_follow_aws_ddl() {
        assert_eq!(athena_type(Field::Version), "int");
        assert_eq!(athena_type(Field::SrcPort), "int");
        assert_eq!(athena_type(Field::Protocol), "bigint");
        assert_eq!(athena_type(Field::Bytes), "bigint");
        assert_eq!(athena_type(Field::End), "bigint");
        assert_eq!(athena_type(Field::TcpFlags), "int");
        assert_eq!(athena_type(Field::TrafficPath), "int");
        assert_eq!(athena_type(Field::PktSrcAddr), "string");
    }

    #[test]
    fn queries_needing_missing_fields_are_left_out() {
        let src = TableSource {
            flow_log_id: "fl-1".into(),
            fields: vec![Field::SrcAddr, Field::DstAddr, Field::Action],
            file_format: FileFormat::PlainText,
            hive_compatible_partitions: false,
            per_hour_partition: false,
            account_id: "1".into(),
            region: "r".into(),
            root: "s3://b".into(),
            since: DateTime::from_timestamp(0, 0).unwrap_or_default(),
            table: "t".into(),
        };
        assert!(named_queries(&src).is_empty());
    }
}
