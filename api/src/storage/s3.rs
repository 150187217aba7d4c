//! The S3-compatible backend (AWS S3, MinIO, s3s-fs, ...), through aws-sdk-s3.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
    error::{ProvideErrorMetadata, SdkError},
    presigning::PresigningConfig,
    primitives::ByteStream as SdkByteStream,
    types::{
        BucketLocationConstraint, CompletedMultipartUpload, CompletedPart,
        CreateBucketConfiguration, Delete, ObjectIdentifier,
    },
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio_util::io::ReaderStream;
use url::Url;

use super::*;
use crate::config::S3Config;

/// Size of every multipart part but the last; bodies smaller than this go up in one PutObject.
/// S3 needs at least 5 MiB per part and allows 10,000 parts (so objects up to ~78 GiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
const MAX_PARTS: i32 = 10_000;
/// DeleteObjects takes at most 1000 keys per call.
const DELETE_BATCH: usize = 1000;

pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    /// Connects to the bucket; with `create_bucket` the bucket is created when missing.
    pub async fn new(config: &S3Config) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    id,
                    secret.expose(),
                    None,
                    None,
                    "gptimage2-config",
                ));
            }
            (None, None) => {} // the default chain: environment, profile, IMDS, ...
            _ => anyhow::bail!(
                "GI2_S3_ACCESS_KEY_ID and GI2_S3_SECRET_ACCESS_KEY must be set together"
            ),
        }
        let sdk_config = loader.load().await;
        let mut builder =
            aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(config.path_style);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let store = Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
        };
        if config.create_bucket {
            store.ensure_bucket(&config.region).await?;
        }
        Ok(store)
    }

    async fn ensure_bucket(&self, region: &str) -> anyhow::Result<()> {
        if self.head_bucket().await.is_ok() {
            return Ok(());
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that refuses an explicit location constraint.
        if region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, "created the S3 bucket");
                Ok(())
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            // Another instance may have created it meanwhile; usable is all that matters.
            Err(err) => match self.head_bucket().await {
                Ok(()) => Ok(()),
                Err(_) => Err(sdk_error(err, "CreateBucket", &self.bucket).into()),
            },
        }
    }

    async fn head_bucket(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(e, "HeadBucket", &self.bucket))
    }

    async fn put_single(
        &self,
        key: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(SdkByteStream::from(body))
            .send()
            .await
            .map_err(|e| sdk_error(e, "PutObject", key))?;
        Ok(())
    }

    /// Uploads `first` and the rest of `parts` as a multipart upload, aborting it on failure
    /// (or when this future is dropped) so no orphaned parts are left behind.
    async fn put_multipart(
        &self,
        key: &str,
        content_type: &str,
        first: Bytes,
        parts: &mut PartReader,
    ) -> Result<u64, StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| sdk_error(e, "CreateMultipartUpload", key))?;
        let upload_id = created
            .upload_id()
            .context(format!(
                "S3 CreateMultipartUpload {key}: no upload id in the answer"
            ))?
            .to_string();
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let result = self.upload_parts(key, &upload_id, first, parts).await;
        // Completed, or aborted right here (awaited, unlike the guard's background abort).
        guard.armed = false;
        if let Err(err) = &result {
            tracing::warn!(
                key,
                error = format!("{err:#}"),
                "multipart upload failed; aborting it"
            );
            abort_upload(&self.client, &self.bucket, key, &upload_id).await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        parts: &mut PartReader,
    ) -> Result<u64, StorageError> {
        let mut completed = Vec::new();
        let mut written = 0u64;
        let mut next = Some(first);
        let mut number = 0i32;
        while let Some(part) = next {
            number += 1;
            if number > MAX_PARTS {
                return Err(anyhow::anyhow!(
                    "S3 UploadPart {key}: object larger than {MAX_PARTS} parts of {PART_SIZE} bytes"
                )
                .into());
            }
            written += part.len() as u64;
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(SdkByteStream::from(part))
                .send()
                .await
                .map_err(|e| sdk_error(e, "UploadPart", &format!("{key} part {number}")))?;
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .build(),
            );
            next = parts
                .next_part()
                .await
                .with_context(|| format!("reading the body of {key}"))?;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(e, "CompleteMultipartUpload", key))?;
        Ok(written)
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<(), StorageError> {
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .context("building DeleteObjects")?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .context("building DeleteObjects")?;
        let first = keys.first().map(String::as_str).unwrap_or_default();
        match self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
        {
            Ok(out) => match out.errors().first() {
                None => Ok(()),
                Some(failed) => Err(anyhow::anyhow!(
                    "S3 DeleteObjects: {} of {} keys failed, e.g. {}: {} {}",
                    out.errors().len(),
                    keys.len(),
                    failed.key().unwrap_or("?"),
                    failed.code().unwrap_or(""),
                    failed.message().unwrap_or("")
                )
                .into()),
            },
            // Some S3-compatible servers lack the batch call; one by one still works.
            Err(err) if is_not_implemented(&err) => {
                for key in keys {
                    self.delete(key).await?;
                }
                Ok(())
            }
            Err(err) => Err(sdk_error(err, "DeleteObjects", &format!("{first}..."))),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn backend(&self) -> &'static str {
        "s3"
    }

    async fn put(
        &self,
        key: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        validate_key(key)?;
        let mut parts = PartReader::new(body);
        let first = parts
            .next_part()
            .await
            .with_context(|| format!("reading the body of {key}"))?
            .unwrap_or_default();
        if first.len() < PART_SIZE {
            // The stream ended inside the first part: one request is enough.
            let len = first.len() as u64;
            self.put_single(key, content_type, first).await?;
            return Ok(len);
        }
        self.put_multipart(key, content_type, first, &mut parts)
            .await
    }

    async fn get(&self, key: &str) -> Result<GetObject, StorageError> {
        validate_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| not_found_or(e, "GetObject", key))?;
        let meta = ObjectMeta {
            content_length: out.content_length().unwrap_or_default().max(0) as u64,
            content_type: out.content_type().map(str::to_string),
        };
        let body = ReaderStream::new(out.body.into_async_read());
        Ok(GetObject {
            meta,
            body: Box::pin(body),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        validate_key(key)?;
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| not_found_or(e, "HeadObject", key))?;
        Ok(ObjectMeta {
            content_length: out.content_length().unwrap_or_default().max(0) as u64,
            content_type: out.content_type().map(str::to_string),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        // S3 answers 204 for a missing key too.
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(sdk_error(err, "DeleteObject", key)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        validate_prefix(prefix)?;
        // List first, then delete: deleting while paginating can skip keys on some servers.
        let keys = self.list(prefix).await?;
        for batch in keys.chunks(DELETE_BATCH) {
            self.delete_batch(batch).await?;
        }
        Ok(keys.len() as u64)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        validate_prefix(prefix)?;
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(e, "ListObjectsV2", prefix))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(str::to_string),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated().unwrap_or(false) => {
                    token = Some(next.to_string())
                }
                _ => break,
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn signed_get_url(&self, key: &str, ttl: Duration) -> Result<Url, StorageError> {
        validate_key(key)?;
        let presigning = PresigningConfig::expires_in(ttl)
            .with_context(|| format!("presigning {key} for {ttl:?}"))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|e| sdk_error(e, "presign GetObject", key))?;
        Ok(Url::parse(request.uri()).context("the presigned URL does not parse")?)
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.head_bucket().await
    }
}

/// Cuts a byte stream into parts of exactly [`PART_SIZE`] (the last may be shorter), holding
/// at most one part in memory.
struct PartReader {
    body: ByteStream,
    leftover: Bytes,
    done: bool,
}

impl PartReader {
    fn new(body: ByteStream) -> Self {
        Self {
            body,
            leftover: Bytes::new(),
            done: false,
        }
    }

    /// The next part, or `None` once the stream is exhausted.
    async fn next_part(&mut self) -> std::io::Result<Option<Bytes>> {
        let mut part = BytesMut::new();
        loop {
            if !self.leftover.is_empty() {
                let take = (PART_SIZE - part.len()).min(self.leftover.len());
                part.extend_from_slice(&self.leftover.split_to(take));
            }
            if part.len() == PART_SIZE || self.done {
                break;
            }
            match self.body.next().await {
                Some(chunk) => self.leftover = chunk?,
                None => self.done = true,
            }
        }
        Ok((!part.is_empty()).then(|| part.freeze()))
    }
}

/// Aborts a multipart upload whose `put` future was dropped half-way (client gone, timeout).
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, bucket, key, upload_id) = (
                self.client.clone(),
                std::mem::take(&mut self.bucket),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.upload_id),
            );
            runtime.spawn(async move { abort_upload(&client, &bucket, &key, &upload_id).await });
        }
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    if let Err(err) = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        // Harmless but costs storage until a lifecycle rule cleans incomplete uploads.
        tracing::warn!(
            key,
            upload_id,
            error = %aws_sdk_s3::error::DisplayErrorContext(&err),
            "could not abort a multipart upload"
        );
    }
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    match err.code() {
        Some("NoSuchKey" | "NotFound") => true,
        // A missing bucket is a configuration problem, not a missing object.
        Some("NoSuchBucket") => false,
        _ => status(err) == Some(404),
    }
}

fn is_not_implemented<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.code() == Some("NotImplemented") || status(err) == Some(501)
}

fn not_found_or<E>(err: SdkError<E>, op: &str, target: &str) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if is_not_found(&err) {
        StorageError::NotFound
    } else {
        sdk_error(err, op, target)
    }
}

/// Keeps the SDK error as the cause and puts a one-line summary (status, code, message, or
/// the transport failure) in the context, since readiness output shows only the top line.
fn sdk_error<E>(err: SdkError<E>, op: &str, target: &str) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let summary = match err.as_service_error() {
        Some(_) => {
            let mut s = status(&err).map_or_else(String::new, |s| format!("HTTP {s}"));
            for part in [err.code(), err.message()].into_iter().flatten() {
                s.push(' ');
                s.push_str(part);
            }
            s
        }
        // The transport's root cause ("connection refused", "timed out", ...).
        None => {
            let mut source: &dyn std::error::Error = &err;
            while let Some(next) = source.source() {
                source = next;
            }
            format!("{err}: {source}")
        }
    };
    StorageError::Other(
        anyhow::Error::new(err).context(format!("S3 {op} {target}: {}", summary.trim())),
    )
}
