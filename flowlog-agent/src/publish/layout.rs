//! How objects are laid out: their file format and their key under the destination root,
//! exactly as AWS's S3 delivery names them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `DestinationOptions.FileFormat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// Gzip text with a header line (`.log.gz`).
    #[default]
    PlainText,
    /// Parquet with GZIP-compressed columns (`.log.parquet`).
    Parquet,
}

impl FileFormat {
    /// File name extension after the hash.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::PlainText => "log.gz",
            FileFormat::Parquet => "log.parquet",
        }
    }
}

/// Where objects go under the destination root, as `DestinationOptions` shape it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLayout {
    pub account_id: String,
    pub region: String,
    pub flow_log_id: String,
    pub hive_compatible_partitions: bool,
    pub per_hour_partition: bool,
}

impl ObjectLayout {
    /// `AWSLogs/...` key of the object for the slot starting at `slot` (Unix seconds).
    pub fn key(&self, slot: u64, hash: u32, extension: &str) -> String {
        let t: DateTime<Utc> = DateTime::from_timestamp(slot as i64, 0).unwrap_or_default();
        let (acct, region) = (&self.account_id, &self.region);
        let mut key = if self.hive_compatible_partitions {
            format!(
                "AWSLogs/aws-account-id={acct}/aws-service=vpcflowlogs/aws-region={region}/year={}/month={}/day={}/",
                t.format("%Y"),
                t.format("%m"),
                t.format("%d")
            )
        } else {
            format!(
                "AWSLogs/{acct}/vpcflowlogs/{region}/{}/",
                t.format("%Y/%m/%d")
            )
        };
        if self.per_hour_partition {
            if self.hive_compatible_partitions {
                key.push_str(&format!("hour={}/", t.format("%H")));
            } else {
                key.push_str(&format!("{}/", t.format("%H")));
            }
        }
        key.push_str(&format!(
            "{acct}_vpcflowlogs_{region}_{}_{}_{hash:08x}.{extension}",
            self.flow_log_id,
            t.format("%Y%m%dT%H%MZ")
        ));
        key
    }
}
