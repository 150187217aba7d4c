//! The local-directory backend, for development and single-machine installs. Downloads go
//! through the API's own `/files/{key}` route behind HMAC-signed, expiring URLs.
//!
//! Layout under `dir`: `objects/<key>` holds the bytes, `meta/<key>` the content type (a
//! parallel tree, so no key can collide with a sidecar), `tmp/` the uploads in progress.
//! Writes land in `tmp/` and are renamed into place, so readers never see half an object.
//! As with any file system, a key cannot be both an object and a "directory" of others
//! (`a` and `a/b`); such a put fails.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::{fs, io::AsyncWriteExt};
use tokio_util::io::ReaderStream;
use url::Url;

use super::*;
use crate::config::Secret;

/// Temporary files older than this are leftovers of a crashed process, removed at start-up.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

pub struct LocalStore {
    pub dir: PathBuf,
    pub public_url: Url,
    pub signing_key: Secret,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    content_type: String,
}

impl LocalStore {
    pub async fn new(dir: PathBuf, public_url: Url, signing_key: Secret) -> anyhow::Result<Self> {
        let store = Self {
            dir,
            public_url,
            signing_key,
        };
        for sub in [store.objects(), store.metas(), store.tmp()] {
            fs::create_dir_all(&sub).await.with_context(|| {
                format!("cannot create the storage directory {}", sub.display())
            })?;
        }
        store.remove_stale_tmp().await;
        Ok(store)
    }

    fn objects(&self) -> PathBuf {
        self.dir.join("objects")
    }
    fn metas(&self) -> PathBuf {
        self.dir.join("meta")
    }
    fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    /// Keys are validated first: their segments cannot be `..`, absolute or empty.
    fn object_path(&self, key: &str) -> PathBuf {
        self.objects().join(key)
    }
    fn meta_path(&self, key: &str) -> PathBuf {
        self.metas().join(key)
    }

    async fn remove_stale_tmp(&self) {
        let Ok(mut entries) = fs::read_dir(self.tmp()).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let stale = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP);
            if stale {
                let _ = fs::remove_file(entry.path()).await;
            }
        }
    }

    /// Streams `body` into a new file under `tmp/`; the guard deletes it unless kept.
    async fn write_tmp(&self, mut body: ByteStream) -> anyhow::Result<(TempFile, u64)> {
        let tmp = TempFile(Some(
            self.tmp().join(uuid::Uuid::new_v4().simple().to_string()),
        ));
        let path = tmp.path();
        let mut file = fs::File::create(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("reading the body")?;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", path.display()))?;
            written += chunk.len() as u64;
        }
        // tokio's File finishes writes in the background; flush before the rename.
        file.flush()
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        Ok((tmp, written))
    }

    async fn read_meta(&self, key: &str) -> Option<String> {
        let raw = fs::read(self.meta_path(key)).await.ok()?;
        serde_json::from_slice::<Meta>(&raw)
            .ok()
            .map(|m| m.content_type)
    }

    /// Every object key under `prefix`, unsorted.
    async fn walk(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let root = self.objects();
        // Start at the deepest directory the prefix names; nothing outside it can match.
        let start = match prefix.rfind('/') {
            Some(i) => root.join(&prefix[..i]),
            None => root.clone(),
        };
        let mut keys = Vec::new();
        let mut dirs = vec![start];
        while let Some(dir) = dirs.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .with_context(|| format!("listing {}", dir.display()))?
            {
                let file_type = entry.file_type().await?;
                let path = entry.path();
                if file_type.is_dir() {
                    dirs.push(path);
                } else if file_type.is_file()
                    && let Some(key) = relative_key(&root, &path)
                    && key.starts_with(prefix)
                {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    /// Removes the now-empty directories above `path`, up to (not including) `root`.
    async fn prune_empty_dirs(root: &Path, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == root || !d.starts_with(root) || fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn put(
        &self,
        key: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        validate_key(key)?;
        let (object_tmp, written) = self
            .write_tmp(body)
            .await
            .with_context(|| format!("storing {key}"))?;
        let meta = serde_json::to_vec(&Meta {
            content_type: content_type.to_string(),
        })
        .context("encoding metadata")?;
        let (meta_tmp, _) = self
            .write_tmp(bytes_stream(meta))
            .await
            .with_context(|| format!("storing the metadata of {key}"))?;
        move_into_place(object_tmp, &self.object_path(key))
            .await
            .with_context(|| format!("storing {key}"))?;
        move_into_place(meta_tmp, &self.meta_path(key))
            .await
            .with_context(|| format!("storing the metadata of {key}"))?;
        Ok(written)
    }

    async fn get(&self, key: &str) -> Result<GetObject, StorageError> {
        validate_key(key)?;
        let path = self.object_path(key);
        let file = match fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Err(StorageError::NotFound),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("opening {key}"))
                    .into());
            }
        };
        // The open handle keeps reading this version even if a put replaces it meanwhile.
        let metadata = file
            .metadata()
            .await
            .with_context(|| format!("reading {key}"))?;
        if !metadata.is_file() {
            return Err(StorageError::NotFound);
        }
        Ok(GetObject {
            meta: ObjectMeta {
                content_length: metadata.len(),
                content_type: self.read_meta(key).await,
            },
            body: Box::pin(ReaderStream::new(file)),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        validate_key(key)?;
        let metadata = match fs::metadata(self.object_path(key)).await {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Err(StorageError::NotFound),
            Err(e) if is_missing(&e) => return Err(StorageError::NotFound),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("reading {key}"))
                    .into());
            }
        };
        Ok(ObjectMeta {
            content_length: metadata.len(),
            content_type: self.read_meta(key).await,
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        for (root, path) in [
            (self.objects(), self.object_path(key)),
            (self.metas(), self.meta_path(key)),
        ] {
            match fs::remove_file(&path).await {
                Ok(()) => Self::prune_empty_dirs(&root, &path).await,
                // Missing, or a "directory" of other keys rather than an object.
                Err(e) if is_missing(&e) || e.kind() == ErrorKind::IsADirectory => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("deleting {key}"))
                        .into());
                }
            }
        }
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        validate_prefix(prefix)?;
        let keys = self
            .walk(prefix)
            .await
            .with_context(|| format!("listing {prefix}"))?;
        for key in &keys {
            self.delete(key).await?;
        }
        Ok(keys.len() as u64)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        validate_prefix(prefix)?;
        let mut keys = self
            .walk(prefix)
            .await
            .with_context(|| format!("listing {prefix}"))?;
        keys.sort();
        Ok(keys)
    }

    async fn signed_get_url(&self, key: &str, ttl: Duration) -> Result<Url, StorageError> {
        validate_key(key)?;
        let now = chrono::Utc::now().timestamp();
        // Round up so a sub-second TTL still yields a usable link.
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2)
            + i64::from(ttl.subsec_nanos() > 0);
        let expires = now.saturating_add(ttl_secs);
        let signature = signing::sign(
            &self.signing_key,
            signing::Purpose::DownloadUrl,
            key,
            expires,
        );
        let base = self.public_url.as_str().trim_end_matches('/');
        // Keys are `[A-Za-z0-9._-/]` only, so they need no escaping.
        let url = format!("{base}/files/{key}?expires={expires}&signature={signature}");
        Ok(Url::parse(&url).with_context(|| format!("building the download URL of {key}"))?)
    }

    async fn check(&self) -> Result<(), StorageError> {
        let objects = self.objects();
        let is_dir = fs::metadata(&objects).await.is_ok_and(|m| m.is_dir());
        if !is_dir {
            return Err(anyhow::anyhow!("{} is not a directory", objects.display()).into());
        }
        // Writable: the same kind of write a put does.
        let (probe, _) = self
            .write_tmp(bytes_stream(&b"probe"[..]))
            .await
            .with_context(|| format!("{} is not writable", self.tmp().display()))?;
        drop(probe);
        Ok(())
    }
}

/// A file under `tmp/`, removed on drop unless it was moved into place (also when the put
/// future is dropped half-way).
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Renames `tmp` to `dest`, creating its parent directories. A concurrent delete may prune
/// a just-created parent, so the pair is retried a few times.
async fn move_into_place(mut tmp: TempFile, dest: &Path) -> anyhow::Result<()> {
    let parent = dest.parent().context("an object path has a parent")?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match fs::create_dir_all(parent).await {
            Ok(()) => fs::rename(tmp.path(), dest).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tmp.0 = None;
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::NotFound && attempt < 5 => continue,
            Err(e) => return Err(e).with_context(|| format!("moving into {}", dest.display())),
        }
    }
}

fn is_missing(e: &std::io::Error) -> bool {
    // NotADirectory: a parent segment of the key is itself an object.
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// `root/a/b.png` → `a/b.png`; `None` for names that are not valid keys.
fn relative_key(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let segments = rel
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<Vec<_>>>()?;
    let key = segments.join("/");
    validate_key(&key).is_ok().then_some(key)
}
