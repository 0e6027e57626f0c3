//! `TrafficType`: which records a flow log emits.

use std::{fmt, str::FromStr};

use anyhow::bail;

use crate::{capture::reject::verdict::Action, records::FlowRecord};

/// `--traffic-type`: which records a flow log emits (AWS's `TrafficType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrafficType {
    Accept,
    Reject,
    #[default]
    All,
}

impl TrafficType {
    /// Whether a flow log of this type emits `rec`. NODATA and SKIPDATA describe the interface,
    /// not a verdict, so every flow log keeps them.
    pub fn keeps(self, rec: &FlowRecord) -> bool {
        match (self, &rec.traffic) {
            (TrafficType::All, _) | (_, None) => true,
            (TrafficType::Accept, Some(t)) => t.action == Action::Accept,
            (TrafficType::Reject, Some(t)) => t.action == Action::Reject,
        }
    }
}

impl FromStr for TrafficType {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "ACCEPT" => TrafficType::Accept,
            "REJECT" => TrafficType::Reject,
            "ALL" => TrafficType::All,
            _ => bail!("invalid traffic type {s:?}: use ACCEPT, REJECT or ALL"),
        })
    }
}

impl fmt::Display for TrafficType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrafficType::Accept => "ACCEPT",
            TrafficType::Reject => "REJECT",
            TrafficType::All => "ALL",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_type_parses_and_rejects_bad_values() {
        assert_eq!(
            "ACCEPT".parse::<TrafficType>().unwrap(),
            TrafficType::Accept
        );
        assert_eq!(
            "reject".parse::<TrafficType>().unwrap(),
            TrafficType::Reject
        );
        assert_eq!("All".parse::<TrafficType>().unwrap(), TrafficType::All);
        assert_eq!(
            "DENY".parse::<TrafficType>().unwrap_err().to_string(),
            "invalid traffic type \"DENY\": use ACCEPT, REJECT or ALL"
        );
    }
}
