//! Where a record is shipped: finished objects go to a destination, retried with backoff until
//! it acknowledges them.

pub mod file;

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::batch::FinishedObject;

pub use file::FileDestination;

/// A place objects are published to.
pub enum Destination {
    File(FileDestination),
}

impl Destination {
    pub async fn put(&self, obj: &FinishedObject) -> anyhow::Result<()> {
        match self {
            Destination::File(d) => d.put(obj).await,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Destination::File(d) => format!("file:{}", d.root().display()),
        }
    }
}

/// Publishes objects from `rx` until the channel closes. Failed puts are retried with
/// exponential backoff; once the channel is closed (shutdown), each object gets a bounded
/// number of further attempts. Returns how many records could not be delivered.
pub async fn publisher(dest: Destination, mut rx: mpsc::Receiver<FinishedObject>) -> usize {
    let mut undelivered = 0;
    while let Some(obj) = rx.recv().await {
        let mut delay = Duration::from_millis(200);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match dest.put(&obj).await {
                Ok(()) => {
                    info!(key = %obj.key, records = obj.records, bytes = obj.body.len(), "published");
                    break;
                }
                Err(e) if attempts < 8 => {
                    warn!(key = %obj.key, attempt = attempts, error = %format!("{e:#}"), "publish failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    error!(key = %obj.key, records = obj.records, destination = %dest.describe(),
                           error = %format!("{e:#}"), "giving up on object: records not delivered");
                    undelivered += obj.records;
                    break;
                }
            }
        }
    }
    undelivered
}
