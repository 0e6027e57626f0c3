//! What the S3 and CloudWatch Logs clients share: configuration from the standard AWS chain
//! (environment, profile, IMDS) with an optional endpoint override, and turning SDK errors into
//! one line that says what is wrong and what to do. Credentials are never logged.

use std::time::Duration;

use anyhow::bail;
use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError};
use aws_sdk_s3::{
    config::{Region, http::HttpResponse},
    error::{ProvideErrorMetadata, SdkError},
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tracing::warn;

/// Where the clients connect and in which region, before the standard chain fills in the rest.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// `--endpoint-url`: an S3- or CloudWatch-compatible endpoint instead of AWS's.
    pub endpoint_url: Option<String>,
    /// Used when the chain has no region (the records' `--region`, when it names one).
    pub fallback_region: Option<String>,
    /// Longest wait for one request (connect, send, answer); [`ATTEMPT_TIMEOUT`] if unset.
    pub attempt_timeout: Option<Duration>,
}

/// Longest wait for one request by default: one attempt may upload a 75 MB object.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The destinations' clients make one attempt per call: the publisher is the one retry layer
/// (its backoff, its failure counter, its log lines and the flow log's delivery status see
/// every failed attempt; the SDK's own retries would hide up to two per call).
pub fn single_attempt() -> RetryConfig {
    RetryConfig::disabled()
}

/// Region when neither the chain nor the flow log names one.
const LAST_RESORT_REGION: &str = "us-east-1";

impl AwsSettings {
    /// Loads the shared configuration; `region` (from a log-group ARN) wins over the chain.
    pub async fn load(&self, region: Option<&str>) -> SdkConfig {
        // rustls with ring: TLS for real AWS, plain HTTP for a local endpoint, and no C/CMake
        // build of aws-lc.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(self.attempt_timeout.unwrap_or(ATTEMPT_TIMEOUT))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts);
        // Without an explicit region the loader asks the standard chain, through the HTTP
        // client above (a chain built outside the loader would lack one for IMDS).
        if let Some(r) = region {
            loader = loader.region(Region::new(r.to_string()));
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        if config.region().is_some() {
            return config;
        }
        let fallback = self
            .fallback_region
            .clone()
            .unwrap_or_else(|| LAST_RESORT_REGION.to_string());
        config.to_builder().region(Region::new(fallback)).build()
    }

    /// How to name the endpoint in messages.
    pub fn endpoint(&self, config: &SdkConfig) -> String {
        match &self.endpoint_url {
            Some(url) => url.clone(),
            None => format!(
                "AWS in {}",
                config.region().map(|r| r.as_ref()).unwrap_or("?")
            ),
        }
    }
}

/// What to do when the standard chain has no credentials.
const PROVIDE_CREDENTIALS: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE \
     with a profile in ~/.aws/credentials, or run with an instance role";

/// Asks the standard chain for credentials once at start. None anywhere in the chain is a
/// configuration error: it fails with one line naming the cause. A provider that fails
/// otherwise (a timeout, a refused role) may recover, so that is only a warning and the
/// publisher retries.
pub async fn require_credentials(config: &SdkConfig, destination: &str) -> anyhow::Result<()> {
    let Some(provider) = config.credentials_provider() else {
        bail!("no AWS credentials for {destination}: {PROVIDE_CREDENTIALS}");
    };
    match provider.provide_credentials().await {
        Ok(_) => Ok(()),
        Err(CredentialsError::CredentialsNotLoaded(_)) => {
            bail!(
                "no AWS credentials found for {destination} (environment, profile, container and instance role all empty): {PROVIDE_CREDENTIALS}"
            )
        }
        Err(e) => {
            warn!(destination, error = %chain(&e),
                  "cannot load AWS credentials yet: records are spooled and publishing is retried");
            Ok(())
        }
    }
}

/// Whether loading credentials is what failed in a call (the SDK reports it as a dispatch
/// failure although nothing was sent).
fn is_credentials_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<CredentialsError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Error codes that mean the credentials themselves were refused.
const CREDENTIAL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "ExpiredToken",
    "ExpiredTokenException",
    "TokenRefreshRequired",
];

/// A failed call: what was attempted (names the batch) and the problem (names the cause, the
/// same for every batch while the cause lasts, so the publisher logs each cause once).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct CallFailed {
    pub what: String,
    pub problem: String,
}

/// One line for a failed call: what failed, the service's code and message, and a hint.
pub fn explain<E>(err: SdkError<E, HttpResponse>, what: &str, endpoint: &str) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = chain(&err);
    let problem = match &err {
        _ if is_credentials_error(&err) => {
            format!("cannot load AWS credentials ({PROVIDE_CREDENTIALS}): {detail}")
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = err.code().unwrap_or("");
            let message = err.message().unwrap_or("");
            let hint = match code {
                // HeadBucket answers a bare 404/403, which the SDK calls NotFound/Forbidden.
                "NoSuchBucket" | "NotFound" => {
                    "the bucket does not exist: create it or fix --destination"
                }
                "Forbidden" => {
                    "access denied or credentials rejected: check the credentials and their s3 permissions"
                }
                c if CREDENTIAL_CODES.contains(&c) => {
                    "the credentials were rejected: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role"
                }
                "AccessDenied" | "AccessDeniedException" => {
                    "access denied: the credentials need s3:PutObject, or logs:CreateLogGroup, logs:CreateLogStream and logs:PutLogEvents"
                }
                "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException" => {
                    "the bucket is in another region: set AWS_REGION to the bucket's region"
                }
                _ if status == 429 || status >= 500 || code.contains("Throttl") => {
                    "the service is throttling or unavailable: retrying with backoff"
                }
                _ => "",
            };
            let code = if code.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("{code} (HTTP {status})")
            };
            let message = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            let hint = if hint.is_empty() {
                String::new()
            } else {
                format!("; {hint}")
            };
            format!("{endpoint} answered {code}{message}{hint}")
        }
        SdkError::DispatchFailure(_) => format!("cannot reach {endpoint}: {detail}"),
        SdkError::TimeoutError(_) => format!("{endpoint} did not answer in time"),
        SdkError::ConstructionFailure(_) => format!(
            "cannot build the request (are AWS credentials set: environment, profile or instance role?): {detail}"
        ),
        SdkError::ResponseError(_) => format!("unreadable answer from {endpoint}: {detail}"),
        _ => format!("{endpoint}: {detail}"),
    };
    CallFailed {
        what: what.to_string(),
        problem,
    }
    .into()
}

/// An error and its sources as `a: b: c` (the SDK's own context printer adds a Debug dump).
fn chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last().is_none_or(|p| !p.ends_with(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// What identifies the cause of a failure across batches: the problem of a [`CallFailed`], else
/// the innermost error (an I/O error of the file destination).
pub fn cause(err: &anyhow::Error) -> String {
    match err.downcast_ref::<CallFailed>() {
        Some(c) => c.problem.clone(),
        None => err.root_cause().to_string(),
    }
}

/// `DeliverLogsErrorMessage` of a failed publish: AWS's category (`Access error`, `Rate
/// limited` or `Unknown error`), then our one-line cause.
pub fn delivery_error(err: &anyhow::Error) -> String {
    let cause = cause(err);
    let has = |needles: &[&str]| needles.iter().any(|n| cause.contains(n));
    let category = if has(&[
        "AccessDenied",
        "Forbidden",
        "HTTP 403",
        "credentials",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "UnrecognizedClient",
    ]) {
        "Access error"
    } else if has(&[
        "Throttl",
        "SlowDown",
        "HTTP 429",
        "Rate exceeded",
        "LimitExceeded",
    ]) {
        "Rate limited"
    } else {
        "Unknown error"
    };
    format!("{category}: {cause}")
}
