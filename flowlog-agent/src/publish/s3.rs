//! The `s3` destination: the same objects, keys and names as the `file` destination, put under
//! `bucket/prefix/`. Keys are deterministic per batch, so a replay overwrites.

use aws_sdk_s3::{Client, primitives::ByteStream};

use super::{
    S3Protection,
    aws::{AwsSettings, explain, require_credentials, single_attempt},
};
use crate::publish::batch::FinishedObject;

pub struct S3Destination {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
    /// Encryption and ACL headers of every PutObject.
    protection: S3Protection,
}

impl S3Destination {
    /// Fails when the standard chain has no credentials at all.
    pub async fn new(
        settings: &AwsSettings,
        bucket: &str,
        prefix: &str,
        protection: S3Protection,
    ) -> anyhow::Result<Self> {
        let shared = settings.load(None).await;
        let endpoint = settings.endpoint(&shared);
        let mut config = aws_sdk_s3::config::Builder::from(&shared).retry_config(single_attempt());
        if settings.endpoint_url.is_some() {
            // S3-compatible stores rarely resolve virtual-hosted bucket names.
            config = config.force_path_style(true);
        }
        let destination = S3Destination {
            client: Client::from_conf(config.build()),
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint,
            protection,
        };
        require_credentials(&shared, &destination.describe()).await?;
        Ok(destination)
    }

    /// The key of `obj` in the bucket: `prefix/AWSLogs/...`.
    pub fn key(&self, obj: &FinishedObject) -> String {
        if self.prefix.is_empty() {
            obj.key.clone()
        } else {
            format!("{}/{}", self.prefix, obj.key)
        }
    }

    pub fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    pub async fn put(&self, obj: &FinishedObject) -> anyhow::Result<()> {
        let key = self.key(obj);
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(obj.body.clone()));
        self.protection.apply(put).send().await.map_err(|e| {
            explain(
                e,
                &format!("cannot put s3://{}/{key}", self.bucket),
                &self.endpoint,
            )
        })?;
        Ok(())
    }

    /// Startup check that the bucket exists and the credentials can reach it.
    pub async fn check(&self) -> anyhow::Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| {
                explain(
                    e,
                    &format!("cannot reach bucket {}", self.bucket),
                    &self.endpoint,
                )
            })?;
        Ok(())
    }
}
