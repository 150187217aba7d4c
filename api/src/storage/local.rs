//! STUB: replaced by the storage helper.
use super::*;
use crate::config::Secret;
use std::{path::PathBuf, time::Duration};
use url::Url;

pub struct LocalStore {
    pub dir: PathBuf,
    pub public_url: Url,
    pub signing_key: Secret,
}
impl LocalStore {
    pub async fn new(dir: PathBuf, public_url: Url, signing_key: Secret) -> anyhow::Result<Self> {
        Ok(Self {
            dir,
            public_url,
            signing_key,
        })
    }
}
#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }
    async fn put(&self, _key: &str, _ct: &str, _body: ByteStream) -> Result<u64, StorageError> {
        Err(anyhow::anyhow!("stub").into())
    }
    async fn get(&self, _key: &str) -> Result<GetObject, StorageError> {
        Err(StorageError::NotFound)
    }
    async fn head(&self, _key: &str) -> Result<ObjectMeta, StorageError> {
        Err(StorageError::NotFound)
    }
    async fn delete(&self, _key: &str) -> Result<(), StorageError> {
        Ok(())
    }
    async fn delete_prefix(&self, _p: &str) -> Result<u64, StorageError> {
        Ok(0)
    }
    async fn list(&self, _p: &str) -> Result<Vec<String>, StorageError> {
        Ok(vec![])
    }
    async fn signed_get_url(&self, _key: &str, _ttl: Duration) -> Result<Url, StorageError> {
        Err(anyhow::anyhow!("stub").into())
    }
    async fn check(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
