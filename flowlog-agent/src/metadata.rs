//! Per-host values that are not in the packets (account, region, VPC ids...). A field that is
//! not known is written as AWS writes it then: `-`, or `unknown` for the account.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub account_id: String,
    pub region: String,
    pub az_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub instance_id: String,
    pub sublocation_type: String,
    pub sublocation_id: String,
}

impl Default for Metadata {
    fn default() -> Self {
        let dash = || "-".to_string();
        Metadata {
            account_id: "unknown".into(),
            region: dash(),
            az_id: dash(),
            vpc_id: dash(),
            subnet_id: dash(),
            instance_id: dash(),
            sublocation_type: dash(),
            sublocation_id: dash(),
        }
    }
}
