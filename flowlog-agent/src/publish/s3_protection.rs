//! How an S3 object is protected at rest and who owns it: server-side encryption and a canned
//! ACL, sent as PutObject headers (`x-amz-server-side-encryption`,
//! `x-amz-server-side-encryption-aws-kms-key-id`, `x-amz-acl`). From `--s3-sse`,
//! `--s3-sse-kms-key-id` and `--s3-acl`, or the request's `DestinationOptions`
//! (`ServerSideEncryption`, `SSEKMSKeyId`, `ACL`: flowlog's members, named as PutObject names
//! them).
//!
//! Nothing is sent by default: the bucket's default encryption applies (S3 encrypts every new
//! object with SSE-S3 unless the bucket names a KMS key) and the object belongs to the writer.
//! AWS's own flow log delivery writes with `bucket-owner-full-control`, which a bucket of
//! another account needs to own the objects.

use std::fmt;

use aws_sdk_s3::types::{ObjectCannedAcl, ServerSideEncryption};

/// Server-side encryption of each object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Encryption {
    /// `AES256`: SSE-S3, keys managed by S3.
    Aes256,
    /// `aws:kms`: SSE-KMS with this key (ARN, key id or `alias/NAME`), or the account's AWS
    /// managed key for S3 (`aws/s3`) when `None`.
    Kms { key_id: Option<String> },
}

/// The canned ACLs that keep an object private. Public ones (`public-read`,
/// `authenticated-read`, ...) are refused: flow logs are security data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Acl {
    Private,
    BucketOwnerRead,
    BucketOwnerFullControl,
}

/// What S3 PutObject sends besides the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Protection {
    pub encryption: Option<S3Encryption>,
    pub acl: Option<S3Acl>,
}

/// The values `--s3-sse` and `ServerSideEncryption` take.
pub const SSE_VALUES: &str = "AES256 or aws:kms";
/// The values `--s3-acl` and `ACL` take.
pub const ACL_VALUES: &str = "bucket-owner-full-control, bucket-owner-read or private";

impl S3Acl {
    pub fn as_str(self) -> &'static str {
        match self {
            S3Acl::Private => "private",
            S3Acl::BucketOwnerRead => "bucket-owner-read",
            S3Acl::BucketOwnerFullControl => "bucket-owner-full-control",
        }
    }

    fn header(self) -> ObjectCannedAcl {
        match self {
            S3Acl::Private => ObjectCannedAcl::Private,
            S3Acl::BucketOwnerRead => ObjectCannedAcl::BucketOwnerRead,
            S3Acl::BucketOwnerFullControl => ObjectCannedAcl::BucketOwnerFullControl,
        }
    }
}

impl fmt::Display for S3Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for S3Acl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "private" => Ok(S3Acl::Private),
            "bucket-owner-read" => Ok(S3Acl::BucketOwnerRead),
            "bucket-owner-full-control" => Ok(S3Acl::BucketOwnerFullControl),
            "public-read" | "public-read-write" | "authenticated-read" | "aws-exec-read"
            | "log-delivery-write" => Err(format!(
                "the canned ACL {s:?} would let others read flow logs (security data): use {ACL_VALUES}"
            )),
            other => Err(format!("unknown canned ACL {other:?}: use {ACL_VALUES}")),
        }
    }
}

impl S3Protection {
    /// From the flags' or the request's strings: `sse` `AES256` or `aws:kms`, `kms_key_id`
    /// only with `aws:kms`. The error says what to write.
    pub fn new(
        sse: Option<&str>,
        kms_key_id: Option<&str>,
        acl: Option<&str>,
    ) -> Result<Self, String> {
        let key_id = match kms_key_id.map(str::trim) {
            Some(k) if k.is_empty() || k.contains(char::is_whitespace) => {
                return Err(format!(
                    "invalid KMS key id {k:?}: give a key ARN, key id or alias/NAME"
                ));
            }
            k => k.map(str::to_string),
        };
        let encryption = match (sse, key_id) {
            (None, None) => None,
            (Some("AES256"), None) => Some(S3Encryption::Aes256),
            (Some("aws:kms"), key_id) => Some(S3Encryption::Kms { key_id }),
            (Some("AES256") | None, Some(_)) => {
                return Err(
                    "a KMS key id needs server-side encryption aws:kms (--s3-sse aws:kms)".into(),
                );
            }
            (Some(other), _) => {
                return Err(format!(
                    "invalid server-side encryption {other:?}: use {SSE_VALUES}"
                ));
            }
        };
        let acl = acl.map(str::parse).transpose()?;
        Ok(S3Protection { encryption, acl })
    }

    pub fn is_empty(&self) -> bool {
        self.encryption.is_none() && self.acl.is_none()
    }

    /// `ServerSideEncryption` as S3 names it.
    pub fn sse_name(&self) -> Option<&'static str> {
        self.encryption.as_ref().map(|e| match e {
            S3Encryption::Aes256 => "AES256",
            S3Encryption::Kms { .. } => "aws:kms",
        })
    }

    pub fn kms_key_id(&self) -> Option<&str> {
        match &self.encryption {
            Some(S3Encryption::Kms { key_id }) => key_id.as_deref(),
            _ => None,
        }
    }

    /// Adds the headers to a PutObject request.
    pub fn apply(
        &self,
        mut put: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        match &self.encryption {
            None => {}
            Some(S3Encryption::Aes256) => {
                put = put.server_side_encryption(ServerSideEncryption::Aes256);
            }
            Some(S3Encryption::Kms { key_id }) => {
                put = put
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone());
            }
        }
        if let Some(acl) = self.acl {
            put = put.acl(acl.header());
        }
        put
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_and_acl_parse_and_refuse_what_does_not_fit() {
        assert_eq!(
            S3Protection::new(None, None, None),
            Ok(S3Protection::default())
        );
        assert_eq!(
            S3Protection::new(
                Some("aws:kms"),
                Some("alias/logs"),
                Some("bucket-owner-full-control")
            ),
            Ok(S3Protection {
                encryption: Some(S3Encryption::Kms {
                    key_id: Some("alias/logs".into())
                }),
                acl: Some(S3Acl::BucketOwnerFullControl),
            })
        );
        assert_eq!(
            S3Protection::new(Some("AES256"), None, Some("private")),
            Ok(S3Protection {
                encryption: Some(S3Encryption::Aes256),
                acl: Some(S3Acl::Private),
            })
        );
        assert_eq!(
            S3Protection::new(Some("aws:kms"), None, None).map(|p| p.sse_name()),
            Ok(Some("aws:kms"))
        );
        assert_eq!(
            S3Protection::new(Some("AES256"), Some("k"), None),
            Err("a KMS key id needs server-side encryption aws:kms (--s3-sse aws:kms)".into())
        );
        assert_eq!(
            S3Protection::new(Some("aws:kms:dsse"), None, None),
            Err("invalid server-side encryption \"aws:kms:dsse\": use AES256 or aws:kms".into())
        );
        assert_eq!(
            S3Protection::new(Some("aws:kms"), Some(" "), None),
            Err("invalid KMS key id \"\": give a key ARN, key id or alias/NAME".into())
        );
        assert_eq!(
            S3Protection::new(None, None, Some("public-read")),
            Err("the canned ACL \"public-read\" would let others read flow logs (security data): use bucket-owner-full-control, bucket-owner-read or private".into())
        );
        assert_eq!(
            S3Protection::new(None, None, Some("owner")),
            Err("unknown canned ACL \"owner\": use bucket-owner-full-control, bucket-owner-read or private".into())
        );
    }
}
