//! Flywheel's artifact store: datasets, model folders and prediction-log segments live at a local
//! path, a `file://` URI or an `s3://bucket/key` URI, and every component reads and writes them
//! through this crate.
//!
//! S3 goes through the `object_store` crate (any S3-compatible service: AWS, MinIO, R2, Ceph…),
//! configured from the standard `AWS_*` environment variables the operator passes to pods from
//! the artifact store's Secret. Local paths use the file system directly, with write-then-rename
//! so a reader never sees half a file.
//!
//! The API is async (object_store is); [`BlockingStore`] wraps it for synchronous callers such as
//! the trainer.
#![forbid(unsafe_code)]

mod error;
mod location;
mod transport;

#[cfg(any(test, feature = "test-support"))]
pub mod moto;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

pub use crate::error::StoreError;
pub use crate::location::Location;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What [`Store::head`] tells about an object: enough to see that it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// The entity tag (S3) — changes whenever the content does; `None` for local files.
    pub e_tag: Option<String>,
    /// Last modification: RFC 3339 for S3, seconds since the epoch for local files. Compared
    /// for equality only.
    pub last_modified: Option<String>,
}

/// Reads and writes objects at [`Location`]s. Cheap to clone; S3 clients are made once per
/// bucket and shared.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The S3 settings every bucket's client starts from.
    s3: AmazonS3Builder,
    clients: Mutex<HashMap<String, Arc<AmazonS3>>>,
}

/// Requests are retried by object_store on 5xx and connection errors; a failing endpoint gives up
/// after this long instead of object_store's default three minutes, so a reload or a trial with a
/// wrong endpoint fails while someone is still watching.
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RETRIES: usize = 4;
/// Whole-request limit: generous, as a large model or log segment can take a while to move.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// S3 settings from the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
    /// `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` (an
    /// S3-compatible service; `http://` endpoints are allowed), and the rest of object_store's
    /// `AWS_*` keys. Nothing is contacted until an `s3://` location is used.
    pub fn from_env() -> Store {
        Store::with_s3(AmazonS3Builder::from_env())
    }

    /// S3 settings given explicitly as object_store config keys (`aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_region`, `aws_endpoint_url`, …), ignoring the environment:
    /// for tests and for embedding.
    pub fn with_s3_options<K: AsRef<str>, V: Into<String>>(
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Store> {
        let mut builder = AmazonS3Builder::new();
        for (key, value) in options {
            let key = key.as_ref();
            let parsed: AmazonS3ConfigKey =
                key.to_ascii_lowercase()
                    .parse()
                    .map_err(|_| StoreError::InvalidOption {
                        key: key.to_string(),
                    })?;
            builder = builder.with_config(parsed, value);
        }
        Ok(Store::with_s3(builder))
    }

    fn with_s3(s3: AmazonS3Builder) -> Store {
        Store {
            inner: Arc::new(Inner {
                s3,
                clients: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Checks, without contacting anything, that `location` can be used at all: for S3, that
    /// credentials are configured. Lets a job fail at its start rather than after its work.
    pub fn check(&self, location: &Location) -> Result<()> {
        match location {
            Location::Local(_) => Ok(()),
            Location::S3 { .. } => self.client(location).map(drop),
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, location: &Location) -> Result<Bytes> {
        match location {
            Location::Local(path) => tokio::fs::read(path)
                .await
                .map(Bytes::from)
                .map_err(|e| StoreError::io("read", path, e)),
            Location::S3 { key, .. } => {
                let client = self.client(location)?;
                let result = client
                    .get(&object_path(location, key)?)
                    .await
                    .map_err(|e| StoreError::s3("read", location, e))?;
                result
                    .bytes()
                    .await
                    .map_err(|e| StoreError::s3("read", location, e))
            }
        }
    }

    /// Writes a whole object, replacing any previous one. Readers see the old content or the new,
    /// never a part: a local file is written beside its destination and renamed into place; an
    /// S3 PUT is atomic by itself.
    pub async fn put(&self, location: &Location, bytes: Bytes) -> Result<()> {
        match location {
            Location::Local(path) => write_atomic(path, bytes).await,
            Location::S3 { key, .. } => {
                let client = self.client(location)?;
                client
                    .put(&object_path(location, key)?, PutPayload::from_bytes(bytes))
                    .await
                    .map_err(|e| StoreError::s3("write", location, e))?;
                Ok(())
            }
        }
    }

    /// Writes a whole object only if none exists at `location` yet, and says whether it did:
    /// `false` means another writer got there first and its object was left untouched. For
    /// content-addressed entries (caches), where every writer of a key writes the same bytes,
    /// this keeps concurrent writers from replacing each other's objects. A local file is
    /// written beside its destination and hard-linked into place (the link fails if the name
    /// exists; file systems without hard links fall back to a rename); S3 uses a conditional
    /// PUT (`If-None-Match: *`), and a service that does not support one gets a plain PUT.
    pub async fn put_if_absent(&self, location: &Location, bytes: Bytes) -> Result<bool> {
        match location {
            Location::Local(path) => create_atomic(path, bytes).await,
            Location::S3 { key, .. } => {
                let client = self.client(location)?;
                let path = object_path(location, key)?;
                let options = object_store::PutOptions::from(object_store::PutMode::Create);
                match client
                    .put_opts(&path, PutPayload::from_bytes(bytes.clone()), options)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => Ok(false),
                    Err(object_store::Error::NotImplemented { .. }) => {
                        self.put(location, bytes).await.map(|()| true)
                    }
                    Err(e) => Err(StoreError::s3("write", location, e)),
                }
            }
        }
    }

    /// Size, entity tag and modification time of an object, without reading it.
    pub async fn head(&self, location: &Location) -> Result<ObjectInfo> {
        match location {
            Location::Local(path) => {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| StoreError::io("stat", path, e))?;
                let last_modified = meta.modified().ok().map(|time| {
                    let since = time
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
                });
                Ok(ObjectInfo {
                    size: meta.len(),
                    e_tag: None,
                    last_modified,
                })
            }
            Location::S3 { key, .. } => {
                let client = self.client(location)?;
                let meta = client
                    .head(&object_path(location, key)?)
                    .await
                    .map_err(|e| StoreError::s3("look up", location, e))?;
                Ok(ObjectInfo {
                    size: meta.size,
                    e_tag: meta.e_tag,
                    last_modified: Some(meta.last_modified.to_rfc3339()),
                })
            }
        }
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, location: &Location) -> Result<()> {
        match location {
            Location::Local(path) => match tokio::fs::remove_file(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StoreError::io("delete", path, e))
                }
                _ => Ok(()),
            },
            Location::S3 { key, .. } => {
                let client = self.client(location)?;
                match client.delete(&object_path(location, key)?).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(StoreError::s3("delete", location, e)),
                }
            }
        }
    }

    /// The contents of every object under `prefix` whose name ends with `suffix`, in name
    /// order (the order [`Store::list`] gives).
    pub async fn read_matching(&self, prefix: &Location, suffix: &str) -> Result<Vec<Bytes>> {
        let mut contents = Vec::new();
        for location in self.list(prefix).await? {
            if location.file_name().is_some_and(|n| n.ends_with(suffix)) {
                contents.push(self.get(&location).await?);
            }
        }
        Ok(contents)
    }

    /// Every object under the folder `prefix`, as locations, sorted.
    pub async fn list(&self, prefix: &Location) -> Result<Vec<Location>> {
        match prefix {
            Location::Local(dir) => {
                let dir = dir.clone();
                let files = tokio::task::spawn_blocking(move || list_local(&dir))
                    .await
                    .map_err(|e| StoreError::io("list", prefix.to_string(), e.into()))??;
                Ok(files.into_iter().map(Location::Local).collect())
            }
            Location::S3 { bucket, key } => {
                use futures_util::TryStreamExt;
                let client = self.client(prefix)?;
                let folder = if key.is_empty() {
                    None
                } else {
                    Some(object_path(prefix, key)?)
                };
                let objects: Vec<object_store::ObjectMeta> = client
                    .list(folder.as_ref())
                    .try_collect()
                    .await
                    .map_err(|e| StoreError::s3("list", prefix, e))?;
                let mut found: Vec<Location> = objects
                    .into_iter()
                    .map(|meta| Location::S3 {
                        bucket: bucket.clone(),
                        key: meta.location.to_string(),
                    })
                    .collect();
                found.sort_by_key(ToString::to_string);
                Ok(found)
            }
        }
    }

    /// Copies the files `names` of the folder `from` into the local folder `to` (created if
    /// missing), each written beside its destination and renamed into place.
    pub async fn download_dir(&self, from: &Location, names: &[&str], to: &Path) -> Result<()> {
        for name in names {
            let bytes = self.get(&from.join(name)).await?;
            write_atomic(&to.join(name), bytes).await?;
        }
        Ok(())
    }

    /// Copies the files `names` of the local folder `from` into the folder `to`, one after the
    /// other in the order given: put the file that marks the folder complete last.
    pub async fn upload_dir(&self, from: &Path, names: &[&str], to: &Location) -> Result<()> {
        for name in names {
            self.upload_file(&from.join(name), &to.join(name)).await?;
        }
        Ok(())
    }

    /// Copies one local file to `to`.
    pub async fn upload_file(&self, from: &Path, to: &Location) -> Result<()> {
        let bytes = tokio::fs::read(from)
            .await
            .map_err(|e| StoreError::io("read", from, e))?;
        self.put(to, Bytes::from(bytes)).await
    }

    /// The client of `location`'s bucket, made on first use.
    fn client(&self, location: &Location) -> Result<Arc<AmazonS3>> {
        let Location::S3 { bucket, .. } = location else {
            return Err(StoreError::InvalidUri {
                uri: location.to_string(),
                reason: "not an s3:// location".to_string(),
            });
        };
        let mut clients = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(bucket) {
            return Ok(client.clone());
        }
        let client = Arc::new(build_client(&self.inner.s3, bucket, location)?);
        clients.insert(bucket.clone(), client.clone());
        Ok(client)
    }
}

fn build_client(base: &AmazonS3Builder, bucket: &str, location: &Location) -> Result<AmazonS3> {
    check_credentials(base, location)?;
    let endpoint = base
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .or_else(|| base.get_config_value(&AmazonS3ConfigKey::S3Endpoint));
    // MinIO, moto and other in-cluster services are often plain HTTP; object_store refuses that
    // unless told, and an explicit http:// endpoint is as clear a statement as there is.
    let allow_http = endpoint
        .as_deref()
        .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
    base.clone()
        .with_bucket_name(bucket)
        .with_allow_http(allow_http)
        .with_retry(RetryConfig {
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
            ..RetryConfig::default()
        })
        .with_http_connector(transport::Connector {
            allow_http,
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        })
        .build()
        .map_err(|e| StoreError::s3("configure the s3 client for", location, e))
}

/// Refuses to go on without credentials. object_store would otherwise fall back to the EC2
/// instance metadata service, which outside EC2 means a slow timeout against a link-local address
/// and an error that does not say what is missing.
fn check_credentials(base: &AmazonS3Builder, location: &Location) -> Result<()> {
    let has = |key: AmazonS3ConfigKey| {
        base.get_config_value(&key)
            .is_some_and(|v| !v.trim().is_empty())
    };
    let keys = has(AmazonS3ConfigKey::AccessKeyId) && has(AmazonS3ConfigKey::SecretAccessKey);
    // Roles that object_store resolves itself: EKS pod identity / IRSA and ECS task roles.
    let role = has(AmazonS3ConfigKey::WebIdentityTokenFile)
        || has(AmazonS3ConfigKey::ContainerCredentialsRelativeUri)
        || has(AmazonS3ConfigKey::ContainerCredentialsFullUri);
    // Public buckets need no credentials at all.
    let unsigned = base
        .get_config_value(&AmazonS3ConfigKey::SkipSignature)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if keys || role || unsigned {
        Ok(())
    } else {
        Err(StoreError::MissingCredentials {
            uri: location.to_string(),
        })
    }
}

fn object_path(location: &Location, key: &str) -> Result<object_store::path::Path> {
    object_store::path::Path::parse(key).map_err(|e| StoreError::InvalidUri {
        uri: location.to_string(),
        reason: e.to_string(),
    })
}

/// Writes `bytes` to a temporary name beside `path`, flushes it, and renames it into place.
async fn write_atomic(path: &Path, bytes: Bytes) -> Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let temporary = write_temporary(&path, &bytes)?;
        std::fs::rename(&temporary, &path).map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            StoreError::io("write", &path, e)
        })
    })
    .await
    .map_err(|e| StoreError::io("write", "a local file", e.into()))?
}

/// [`Store::put_if_absent`] for a local file: the bytes go to a temporary file beside `path`
/// (flushed), which is then hard-linked to `path`, an operation that fails rather than replace
/// an existing name; the temporary name is removed either way.
async fn create_atomic(path: &Path, bytes: Bytes) -> Result<bool> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if path.exists() {
            return Ok(false);
        }
        let temporary = write_temporary(&path, &bytes)?;
        let linked = match std::fs::hard_link(&temporary, &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            // No hard links here (some network and FUSE file systems): a rename is still
            // atomic, and at worst replaces an entry with an identical one.
            Err(_) => std::fs::rename(&temporary, &path).map(|()| true),
        };
        let _ = std::fs::remove_file(&temporary);
        linked.map_err(|e| StoreError::io("write", &path, e))
    })
    .await
    .map_err(|e| StoreError::io("write", "a local file", e.into()))?
}

/// `bytes` in a new, flushed file beside `path` (creating the folder), named uniquely per
/// process and call so concurrent writers never share one; removed again if writing fails.
fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::io("create the folder", parent, e))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(
        ".{name}.partial-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(StoreError::io("write", path, e));
    }
    Ok(temporary)
}

fn list_local(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            // An empty prefix, as in S3.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("list", &folder, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list", &folder, e))?;
            let kind = entry
                .file_type()
                .map_err(|e| StoreError::io("list", entry.path(), e))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// [`Store`] for synchronous callers: each call runs on a private current-thread runtime.
#[derive(Debug)]
pub struct BlockingStore {
    store: Store,
    runtime: tokio::runtime::Runtime,
}

impl BlockingStore {
    /// Must not be called from inside an async runtime (tokio refuses to nest them).
    pub fn new(store: Store) -> Result<BlockingStore> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StoreError::Runtime)?;
        Ok(BlockingStore { store, runtime })
    }

    pub fn from_env() -> Result<BlockingStore> {
        BlockingStore::new(Store::from_env())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn get(&self, location: &Location) -> Result<Bytes> {
        self.runtime.block_on(self.store.get(location))
    }

    pub fn put(&self, location: &Location, bytes: impl Into<Bytes>) -> Result<()> {
        self.runtime
            .block_on(self.store.put(location, bytes.into()))
    }

    pub fn put_if_absent(&self, location: &Location, bytes: impl Into<Bytes>) -> Result<bool> {
        self.runtime
            .block_on(self.store.put_if_absent(location, bytes.into()))
    }

    pub fn head(&self, location: &Location) -> Result<ObjectInfo> {
        self.runtime.block_on(self.store.head(location))
    }

    pub fn delete(&self, location: &Location) -> Result<()> {
        self.runtime.block_on(self.store.delete(location))
    }

    pub fn list(&self, prefix: &Location) -> Result<Vec<Location>> {
        self.runtime.block_on(self.store.list(prefix))
    }

    pub fn read_matching(&self, prefix: &Location, suffix: &str) -> Result<Vec<Bytes>> {
        self.runtime
            .block_on(self.store.read_matching(prefix, suffix))
    }

    pub fn download_dir(&self, from: &Location, names: &[&str], to: &Path) -> Result<()> {
        self.runtime
            .block_on(self.store.download_dir(from, names, to))
    }

    pub fn upload_dir(&self, from: &Path, names: &[&str], to: &Location) -> Result<()> {
        self.runtime
            .block_on(self.store.upload_dir(from, names, to))
    }

    pub fn upload_file(&self, from: &Path, to: &Location) -> Result<()> {
        self.runtime.block_on(self.store.upload_file(from, to))
    }
}

#[cfg(test)]
mod tests;
