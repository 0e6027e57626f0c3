//! `pkt-src-aws-service` / `pkt-dst-aws-service`: the AWS service whose published address range
//! (AWS's `ip-ranges.json`, given with `--aws-ip-ranges PATH`) a packet address falls in.
//!
//! AWS lists every range of a specific service (S3, EC2, ...) a second time under the umbrella
//! code `AMAZON`, and its records show one code where ranges overlap. The rule here:
//! the longest matching prefix whose service is not `AMAZON` wins; `AMAZON` is shown only when
//! no other service's range holds the address. When one prefix is listed under several specific
//! services, a service other than the broad `EC2` bucket is preferred, then the alphabetically
//! first. With this rule an S3 address reads `S3` (as in AWS's own v5 example), not `AMAZON`.

use std::{collections::HashMap, net::IpAddr, path::Path};

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::Deserialize;

#[derive(Deserialize)]
struct RangesFile {
    prefixes: Vec<V4Prefix>,
    #[serde(default)]
    ipv6_prefixes: Vec<V6Prefix>,
}

#[derive(Deserialize)]
struct V4Prefix {
    ip_prefix: String,
    service: String,
}

#[derive(Deserialize)]
struct V6Prefix {
    ipv6_prefix: String,
    service: String,
}

/// Prefixes of one address family: (prefix length, network bits) → service, with the lengths
/// present sorted longest first. Addresses are 128-bit numbers; IPv4 sits in the top 32 bits.
#[derive(Debug, Default, PartialEq, Eq)]
struct FamilyTable {
    by_prefix: HashMap<(u8, u128), u16>,
    lengths: Vec<u8>,
}

/// AWS's published service ranges, ready for lookups.
#[derive(PartialEq, Eq)]
pub struct AwsIpRanges {
    services: Vec<String>,
    v4: FamilyTable,
    v6: FamilyTable,
}

impl std::fmt::Debug for AwsIpRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsIpRanges")
            .field("services", &self.services.len())
            .field("ipv4_prefixes", &self.v4.by_prefix.len())
            .field("ipv6_prefixes", &self.v6.by_prefix.len())
            .finish()
    }
}

fn masked(bits: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(len)))
    }
}

/// An address as 128 bits (IPv4 in the top 32, so prefix lengths apply unchanged), and
/// whether it is IPv4 (IPv4-mapped IPv6 included).
fn bits(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => ((u128::from(u32::from(v4))) << 96, true),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ((u128::from(u32::from(v4))) << 96, true),
            None => (u128::from(v6), false),
        },
    }
}

/// How strongly a service name is preferred when prefixes overlap (higher wins).
fn rank(service: &str) -> u8 {
    match service {
        "AMAZON" => 0,
        "EC2" => 1,
        _ => 2,
    }
}

impl AwsIpRanges {
    /// Reads an `ip-ranges.json` file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read --aws-ip-ranges file {}: download AWS's ip-ranges.json and give its path",
                path.display()
            )
        })?;
        Self::parse(&text).with_context(|| {
            format!(
                "--aws-ip-ranges file {} is not AWS's ip-ranges.json format",
                path.display()
            )
        })
    }

    /// Parses the text of an `ip-ranges.json` file.
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        let file: RangesFile = serde_json::from_str(json).context(
            "expected a JSON object with \"prefixes\": [{\"ip_prefix\", \"service\"}, ...]",
        )?;
        let mut ranges = AwsIpRanges {
            services: Vec::new(),
            v4: FamilyTable::default(),
            v6: FamilyTable::default(),
        };
        let v4 = file
            .prefixes
            .iter()
            .map(|p| (&p.ip_prefix, &p.service, true));
        let v6 = file
            .ipv6_prefixes
            .iter()
            .map(|p| (&p.ipv6_prefix, &p.service, false));
        for (prefix, service, want_v4) in v4.chain(v6) {
            let net: IpNet = prefix
                .parse()
                .with_context(|| format!("invalid prefix {prefix:?}"))?;
            if matches!(net, IpNet::V4(_)) != want_v4 {
                bail!("prefix {prefix:?} is listed under the wrong address family");
            }
            ranges.insert(net, service);
        }
        for t in [&mut ranges.v4, &mut ranges.v6] {
            t.lengths.sort_unstable_by(|a, b| b.cmp(a));
            t.lengths.dedup();
        }
        Ok(ranges)
    }

    fn insert(&mut self, net: IpNet, service: &str) {
        let idx = match self.services.iter().position(|s| s == service) {
            Some(i) => i,
            None => {
                self.services.push(service.to_string());
                self.services.len() - 1
            }
        } as u16;
        let (addr, is_v4) = bits(net.network());
        let len = net.prefix_len();
        let table = if is_v4 { &mut self.v4 } else { &mut self.v6 };
        table.lengths.push(len);
        let services = &self.services;
        table
            .by_prefix
            .entry((len, masked(addr, len)))
            .and_modify(|cur| {
                let (a, b) = (&services[*cur as usize], &services[idx as usize]);
                if (rank(b), std::cmp::Reverse(b)) > (rank(a), std::cmp::Reverse(a)) {
                    *cur = idx;
                }
            })
            .or_insert(idx);
    }

    /// The service code shown for `ip`, or `None` when no AWS range holds it.
    pub fn service(&self, ip: IpAddr) -> Option<&str> {
        let (addr, is_v4) = bits(ip);
        let table = if is_v4 { &self.v4 } else { &self.v6 };
        let mut umbrella = None;
        for &len in &table.lengths {
            if let Some(&idx) = table.by_prefix.get(&(len, masked(addr, len))) {
                let name = self.services[idx as usize].as_str();
                if rank(name) > 0 {
                    return Some(name);
                }
                umbrella.get_or_insert(name);
            }
        }
        umbrella
    }

    /// Number of prefixes loaded (IPv4, IPv6), for the startup log line.
    pub fn len(&self) -> (usize, usize) {
        (self.v4.by_prefix.len(), self.v6.by_prefix.len())
    }

    pub fn is_empty(&self) -> bool {
        self.v4.by_prefix.is_empty() && self.v6.by_prefix.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = r#"{
      "syncToken": "1",
      "createDate": "2024-01-01-00-00-00",
      "prefixes": [
        {"ip_prefix": "52.95.128.0/21", "region": "ap-southeast-2", "service": "AMAZON", "network_border_group": "ap-southeast-2"},
        {"ip_prefix": "52.95.128.0/21", "region": "ap-southeast-2", "service": "S3", "network_border_group": "ap-southeast-2"},
        {"ip_prefix": "3.5.0.0/16", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
        {"ip_prefix": "3.5.0.0/24", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
        {"ip_prefix": "3.5.0.0/29", "region": "us-east-1", "service": "EC2_INSTANCE_CONNECT", "network_border_group": "us-east-1"},
        {"ip_prefix": "15.177.0.0/18", "region": "GLOBAL", "service": "EC2", "network_border_group": "GLOBAL"},
        {"ip_prefix": "15.177.0.0/18", "region": "GLOBAL", "service": "ROUTE53_HEALTHCHECKS", "network_border_group": "GLOBAL"}
      ],
      "ipv6_prefixes": [
        {"ipv6_prefix": "2600:1f00::/24", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
        {"ipv6_prefix": "2600:1ffa:4000::/40", "region": "us-east-1", "service": "S3", "network_border_group": "us-east-1"}
      ]
    }"#;

    fn svc(r: &AwsIpRanges, ip: &str) -> Option<String> {
        r.service(ip.parse().unwrap()).map(str::to_string)
    }

    #[test]
    fn specific_service_wins_over_amazon_and_longest_prefix_over_shorter() {
        let r = AwsIpRanges::parse(FIXTURE).unwrap();
        assert_eq!(svc(&r, "52.95.128.179").as_deref(), Some("S3"));
        assert_eq!(svc(&r, "3.5.0.3").as_deref(), Some("EC2_INSTANCE_CONNECT"));
        assert_eq!(svc(&r, "3.5.0.200").as_deref(), Some("EC2"));
        assert_eq!(svc(&r, "3.5.7.1").as_deref(), Some("AMAZON"));
        assert_eq!(
            svc(&r, "15.177.1.1").as_deref(),
            Some("ROUTE53_HEALTHCHECKS")
        );
        assert_eq!(svc(&r, "10.0.0.71"), None);
        assert_eq!(svc(&r, "52.95.136.0"), None, "just past the /21");
        assert_eq!(svc(&r, "2600:1ffa:4000::1").as_deref(), Some("S3"));
        assert_eq!(svc(&r, "2600:1f00:1::1").as_deref(), Some("AMAZON"));
        assert_eq!(svc(&r, "2001:db8::1"), None);
        assert_eq!(svc(&r, "::ffff:52.95.128.179").as_deref(), Some("S3"));
        assert_eq!(r.len(), (5, 2), "distinct prefixes");
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(AwsIpRanges::parse("{}").is_err());
        let bad = r#"{"prefixes": [{"ip_prefix": "52.95.128.0/33", "service": "S3"}]}"#;
        assert!(format!("{:#}", AwsIpRanges::parse(bad).unwrap_err()).contains("52.95.128.0/33"));
        let swapped = r#"{"prefixes": [{"ip_prefix": "2600::/24", "service": "S3"}]}"#;
        assert!(AwsIpRanges::parse(swapped).is_err());
    }
}
