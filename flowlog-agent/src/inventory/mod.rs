//! Which interfaces there are and who they are.
//!
//! - [`discover`]: the host's interfaces, matched against name globs and selectors.
//! - [`metadata`]: the AWS identity that records carry (account, region, VPC, subnet,
//!   instance, ENI ids), from instance metadata ([`imds`]) or flags.

pub mod aws_ranges;
pub mod discover;
pub mod imds;
pub mod metadata;
