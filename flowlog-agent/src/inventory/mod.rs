//! Which interfaces there are and who they are.
//!
//! - [`discover`]: the host's interfaces, matched against name globs and selectors.
//! - [`live`]: the interfaces from rtnetlink events ([`links`]), their owners and readable
//!   guest ids ([`guest_id`]), and those deleted during the open window; [`selectors`] name
//!   interfaces by their guest (`container:`, `pod:`, `vm:`).
//! - [`metadata`]: the AWS identity that records carry (account, region, VPC, subnet,
//!   instance, ENI ids), from instance metadata ([`imds`]) or flags.
//! - [`owners`]: who is behind a host-side interface (containers, VMs, ECS tasks).

pub mod aws_ranges;
pub mod discover;
pub mod guest_id;
pub mod imds;
pub mod links;
pub mod live;
pub mod metadata;
pub mod owners;
pub mod selectors;
