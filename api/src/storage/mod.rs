//! The object store: every image and export lives here. Two backends behind one trait:
//! S3-compatible (aws-sdk-s3) and a local directory served through the API's own signed URLs.

pub mod local;
pub mod s3;
pub mod signing;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::stream::BoxStream;
use url::Url;

use crate::config::{Config, StorageConfig};

/// A body streamed in or out of the store, chunk by chunk.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_length: u64,
    pub content_type: Option<String>,
}

pub struct GetObject {
    pub meta: ObjectMeta,
    pub body: ByteStream,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found")]
    NotFound,
    #[error("invalid object key: {0}")]
    InvalidKey(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// `s3` or `local`, for logs and readiness output.
    fn backend(&self) -> &'static str;
    /// Streams `body` into `key`, replacing any object there; returns the bytes written.
    /// Large bodies are never held in memory whole.
    async fn put(
        &self,
        key: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<u64, StorageError>;
    async fn get(&self, key: &str) -> Result<GetObject, StorageError>;
    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError>;
    /// Deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Deletes every object whose key starts with `prefix`; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError>;
    /// Every key under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// A URL anyone holding it can GET until it expires.
    async fn signed_get_url(&self, key: &str, ttl: Duration) -> Result<Url, StorageError>;
    /// Readiness: the store answers and the bucket or directory is usable.
    async fn check(&self) -> Result<(), StorageError>;
}

/// Keys are `/`-separated segments of `[A-Za-z0-9._-]`, never `.` or `..`, at most 512 bytes.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.chars().take(80).collect()))
    }
}

/// A prefix is a key, or a key followed by `/`.
pub fn validate_prefix(prefix: &str) -> Result<(), StorageError> {
    validate_key(prefix.strip_suffix('/').unwrap_or(prefix))
}

/// Wraps an in-memory value as a [`ByteStream`] (small bodies, tests).
pub fn bytes_stream(bytes: impl Into<Bytes>) -> ByteStream {
    Box::pin(futures::stream::once(futures::future::ready(Ok(
        bytes.into()
    ))))
}

/// Reads a whole stream into memory; only for small objects.
pub async fn collect(mut body: ByteStream) -> std::io::Result<Bytes> {
    use futures::StreamExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(buf.freeze())
}

pub async fn from_config(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(match &config.storage {
        StorageConfig::Local { dir } => Arc::new(
            local::LocalStore::new(
                dir.clone(),
                config.public_url.clone(),
                config.url_signing_key.clone(),
            )
            .await?,
        ),
        StorageConfig::S3(s3) => Arc::new(s3::S3Store::new(s3).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        assert!(validate_key("users/0193/images/a.png").is_ok());
        for bad in [
            "", "/abs", "a//b", "../x", "a/../b", "a/./b", "sp ace", "trail/", "ü",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(validate_prefix("users/0193/").is_ok());
    }
}
