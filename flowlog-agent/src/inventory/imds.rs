//! EC2 instance metadata (IMDSv2): the account, region, AZ id, instance and, for each ENI by
//! MAC address, its ENI id, owner, VPC, subnet and CIDR blocks.
//!
//! The client is AWS's own (`aws_config::imds`): the IMDSv2 token flow (`PUT /latest/api/token`
//! with a TTL header, then `GET`s carrying the token), already in the tree for the S3 and
//! CloudWatch destinations. The whole lookup has one deadline, so a host that is not on EC2
//! starts at most that much later.

use std::time::Duration;

use anyhow::{Context, anyhow};
use aws_config::{
    imds::{client::Client, client::error::ImdsError},
    provider_config::ProviderConfig,
};
use ipnet::IpNet;

/// Where IMDS answers on EC2.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// Deadline for the whole lookup (token and every path).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

const META: &str = "/latest/meta-data/";

/// One ENI as instance metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    /// MAC address, lowercase `0e:12:34:56:78:9a`: how an ENI is matched to a Linux interface.
    pub mac: String,
    /// `eni-...`: the `interface-id` of records captured on the matching interface.
    pub interface_id: String,
    /// Owner of the ENI (`account-id`).
    pub account_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    /// CIDR blocks of the ENI's VPC, the primary IPv4 block first.
    pub vpc_cidrs: Vec<IpNet>,
    pub subnet_cidr: Option<IpNet>,
}

/// What instance metadata said. Absent keys are `None`/empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImdsInfo {
    pub instance_id: Option<String>,
    pub region: Option<String>,
    pub az_id: Option<String>,
    /// MAC of the instance's primary ENI (`meta-data/mac`), lowercase.
    pub primary_mac: Option<String>,
    /// Every ENI attached to the instance.
    pub enis: Vec<Eni>,
}

impl ImdsInfo {
    /// The primary ENI (the one `meta-data/mac` names), else the first.
    pub fn primary_eni(&self) -> Option<&Eni> {
        let by_mac = self
            .primary_mac
            .as_ref()
            .and_then(|m| self.enis.iter().find(|e| &e.mac == m));
        by_mac.or(self.enis.first())
    }
}

/// Asks the instance metadata service at `endpoint` (e.g. `http://169.254.169.254`), giving up
/// after `timeout` in total.
pub async fn fetch(endpoint: &str, timeout: Duration) -> anyhow::Result<ImdsInfo> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let client = Client::builder()
        .configure(&ProviderConfig::default().with_http_client(http))
        .endpoint(endpoint)
        .map_err(|e| anyhow!("invalid --imds-endpoint {endpoint:?}: {e}"))?
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .operation_timeout(timeout)
        .operation_attempt_timeout(timeout)
        .max_attempts(2)
        .build();
    let lookup = Lookup { client: &client };
    tokio::time::timeout(timeout, lookup.all())
        .await
        .map_err(|_| anyhow!("no answer from instance metadata at {endpoint} within {timeout:?}"))?
}

struct Lookup<'a> {
    client: &'a Client,
}

impl Lookup<'_> {
    /// A metadata value that must exist.
    async fn get(&self, path: &str) -> anyhow::Result<String> {
        let full = format!("{META}{path}");
        let value = self
            .client
            .get(full.clone())
            .await
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("instance metadata {full}"))?;
        Ok(value.as_ref().trim().to_string())
    }

    /// A metadata value that may be absent (404).
    async fn optional(&self, path: &str) -> anyhow::Result<Option<String>> {
        let full = format!("{META}{path}");
        match self.client.get(full.clone()).await {
            Ok(v) => Ok(Some(v.as_ref().trim().to_string()).filter(|s| !s.is_empty())),
            Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
            Err(e) => Err(anyhow!("{e}")).with_context(|| format!("instance metadata {full}")),
        }
    }

    async fn all(&self) -> anyhow::Result<ImdsInfo> {
        let instance_id = self.optional("instance-id").await?;
        let region = self.optional("placement/region").await?;
        let az_id = self.optional("placement/availability-zone-id").await?;
        let primary_mac = self.optional("mac").await?.map(|m| m.to_ascii_lowercase());
        let macs = self
            .optional("network/interfaces/macs/")
            .await?
            .unwrap_or_default();
        let mut enis = Vec::new();
        for mac in macs
            .lines()
            .map(|l| l.trim().trim_end_matches('/'))
            .filter(|l| !l.is_empty())
        {
            enis.push(self.eni(&mac.to_ascii_lowercase()).await?);
        }
        Ok(ImdsInfo {
            instance_id,
            region,
            az_id,
            primary_mac,
            enis,
        })
    }

    async fn eni(&self, mac: &str) -> anyhow::Result<Eni> {
        let p = |key: &str| format!("network/interfaces/macs/{mac}/{key}");
        let cidrs = |text: Option<String>| -> anyhow::Result<Vec<IpNet>> {
            let text = text.unwrap_or_default();
            text.split_whitespace()
                .map(|c| {
                    c.parse::<IpNet>()
                        .with_context(|| format!("bad CIDR {c:?} for ENI {mac}"))
                })
                .collect()
        };
        let primary_v4: Vec<IpNet> = cidrs(self.optional(&p("vpc-ipv4-cidr-block")).await?)?;
        let mut vpc_cidrs = primary_v4.clone();
        for c in cidrs(self.optional(&p("vpc-ipv4-cidr-blocks")).await?)?
            .into_iter()
            .chain(cidrs(self.optional(&p("vpc-ipv6-cidr-blocks")).await?)?)
        {
            if !vpc_cidrs.contains(&c) {
                vpc_cidrs.push(c);
            }
        }
        let subnet_cidr = cidrs(self.optional(&p("subnet-ipv4-cidr-block")).await?)?
            .into_iter()
            .next();
        Ok(Eni {
            mac: mac.to_string(),
            interface_id: self.get(&p("interface-id")).await?,
            account_id: self.optional(&p("owner-id")).await?,
            vpc_id: self.optional(&p("vpc-id")).await?,
            subnet_id: self.optional(&p("subnet-id")).await?,
            vpc_cidrs,
            subnet_cidr,
        })
    }
}
