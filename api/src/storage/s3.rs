//! STUB: replaced by the storage helper.
use super::*;
use std::time::Duration;
use url::Url;

pub struct S3Store;
impl S3Store {
    pub async fn new(_c: &crate::config::S3Config) -> anyhow::Result<Self> {
        Ok(Self)
    }
}
#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
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
