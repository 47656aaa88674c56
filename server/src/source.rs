//! Where a model comes from: model sources as flags and the repository API name them, the local
//! cache that `s3://` sources are downloaded into, and the fingerprint of a model folder by which
//! the watch tells that a new version has landed.
//!
//! An `s3://bucket/prefix` source is downloaded (model.onnx and model.json) into a folder under
//! `--model-cache-dir` and loaded from there like any local folder. The folder carries a small
//! record of where it came from ([`SOURCE_FILE`]), so a plain reload and the watch go back to the
//! bucket rather than to the copy.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use flywheel_store::{Location, ObjectInfo, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Error;
use crate::model::{CARD_FILE, MODEL_FILE};

/// Written into each cache folder: the source URI and the objects' stamps at download time.
pub const SOURCE_FILE: &str = ".flywheel-source.json";

/// The files a model folder needs.
const MODEL_FILES: [&str; 2] = [MODEL_FILE, CARD_FILE];

/// The local folder of a model source: a path, or a `file://` URI (`file:///abs/dir`, or
/// `file://rel/dir` as the operator writes relative ones). An `s3://` source must have been
/// downloaded first ([`prepare`] at start-up, [`locate`] on reload); this refuses it.
pub fn resolve(source: &Path) -> Result<PathBuf, Error> {
    match source.to_str() {
        Some(text) => resolve_str(text),
        // Not UTF-8, so not a URI either.
        None => Ok(source.to_path_buf()),
    }
}

/// [`resolve`] for a source given as text.
pub fn resolve_str(source: &str) -> Result<PathBuf, Error> {
    match parse(source)? {
        Location::Local(path) => Ok(path),
        Location::S3 { .. } => Err(read_error(
            source,
            "s3:// model folders are downloaded before loading: call \
             flywheel_server::source::prepare on the config first",
        )),
    }
}

fn parse(source: &str) -> Result<Location, Error> {
    Location::parse(source).map_err(|e| store_error(source, e))
}

/// Downloads the `s3://` model folders of `config` (`--model-dir`, `--shadow-model-dir`) into
/// `--model-cache-dir` and points the config at the copies. The model keeps the name of its
/// source folder (the last segment of the prefix) unless `--model-name` says otherwise. Local
/// sources are left as they are.
pub async fn prepare(mut config: Config) -> Result<Config, Error> {
    if let Some(text) = config.model_dir.to_str().map(str::to_string)
        && let location @ Location::S3 { .. } = parse(&text)?
    {
        if config.model_name.is_none() {
            config.model_name = location.file_name();
        }
        config.model_dir = fetch(&location, &config.model_cache_dir, &[]).await?;
    }
    if let Some(text) = config
        .shadow_model_dir
        .as_ref()
        .and_then(|dir| dir.to_str())
        .map(str::to_string)
        && let location @ Location::S3 { .. } = parse(&text)?
    {
        let primary = config.model_dir.clone();
        config.shadow_model_dir =
            Some(fetch(&location, &config.model_cache_dir, &[primary.as_path()]).await?);
    }
    Ok(config)
}

/// The local folder to load for a source named at run time (the reload API), downloading an
/// `s3://` one. `keep` is a cache folder in use that must not be pruned.
pub async fn locate(source: &str, cache_dir: &Path, keep: &[&Path]) -> Result<PathBuf, Error> {
    match parse(source)? {
        Location::Local(path) => Ok(path),
        location @ Location::S3 { .. } => fetch(&location, cache_dir, keep).await,
    }
}

/// The folder a plain reload loads for a model now served from `dir`: a fresh download when `dir`
/// is a cache copy, else `dir` itself. `keep` as for [`locate`].
pub async fn refresh(dir: &Path, cache_dir: &Path, keep: &[&Path]) -> Result<PathBuf, Error> {
    match cached_source(dir).await {
        Some(record) => locate(&record.uri, cache_dir, keep).await,
        None => Ok(dir.to_path_buf()),
    }
}

/// The process's artifact store. Its settings come from the process environment (the `AWS_*`
/// variables), so one instance, and one connection pool per bucket, serves every caller.
fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(Store::from_env)
}

/// What [`SOURCE_FILE`] records.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CachedSource {
    uri: String,
    /// File name → stamp, taken just before the download.
    stamps: BTreeMap<String, Stamp>,
}

/// An object's identity as far as change detection goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    e_tag: Option<String>,
    last_modified: Option<String>,
    size: u64,
}

impl From<ObjectInfo> for Stamp {
    fn from(info: ObjectInfo) -> Stamp {
        Stamp {
            e_tag: info.e_tag,
            last_modified: info.last_modified,
            size: info.size,
        }
    }
}

async fn stamps(location: &Location) -> Result<BTreeMap<String, Stamp>, Error> {
    let mut stamps = BTreeMap::new();
    for name in MODEL_FILES {
        let object = location.join(name);
        let info = store()
            .head(&object)
            .await
            .map_err(|e| store_error(&object.to_string(), e))?;
        stamps.insert(name.to_string(), Stamp::from(info));
    }
    Ok(stamps)
}

/// Downloads model.onnx and model.json of `location` into
/// `<cache>/<source key>/<version key>/` and returns that folder. A version already there is
/// reused; every other cached folder is removed, except those in `keep`.
async fn fetch(location: &Location, cache: &Path, keep: &[&Path]) -> Result<PathBuf, Error> {
    let uri = location.to_string();
    // Stamps first: a version replaced during the download then looks new to the watch, rather
    // than an old stamp being recorded for new files.
    let stamps = stamps(location).await?;
    let source_dir = cache.join(cache_key(&uri, &uri));
    let dir = source_dir.join(cache_key("v", &stamps));
    let marker = dir.join(SOURCE_FILE);
    if tokio::fs::metadata(&marker).await.is_err() {
        let partial = source_dir.join(format!(".partial-{}", uuid::Uuid::new_v4().simple()));
        let downloaded = async {
            store()
                .download_dir(location, &MODEL_FILES, &partial)
                .await
                .map_err(|e| store_error(&uri, e))?;
            let record = CachedSource {
                uri: uri.clone(),
                stamps,
            };
            let body =
                serde_json::to_vec_pretty(&record).map_err(|e| read_error(&uri, e.to_string()))?;
            write(&partial.join(SOURCE_FILE), &body).await?;
            let _ = tokio::fs::remove_dir_all(&dir).await;
            tokio::fs::rename(&partial, &dir)
                .await
                .map_err(|source| Error::Read {
                    path: dir.clone(),
                    source,
                })
        }
        .await;
        if downloaded.is_err() {
            let _ = tokio::fs::remove_dir_all(&partial).await;
        }
        downloaded?;
        tracing::info!(source = %uri, dir = %dir.display(), "model downloaded");
    }
    prune(cache, &dir, keep).await;
    Ok(dir)
}

async fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    tokio::fs::write(path, bytes)
        .await
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Removes every cached model folder other than `current` and `keep` (the ones serving): a
/// loaded model needs its folder no longer (ONNX Runtime has read the graph), so the cache holds
/// at most the primary's, the shadow's and a new one. One cache folder per server process.
async fn prune(cache: &Path, current: &Path, keep: &[&Path]) {
    let Ok(mut sources) = tokio::fs::read_dir(cache).await else {
        return;
    };
    while let Ok(Some(source)) = sources.next_entry().await {
        let source = source.path();
        let Ok(mut versions) = tokio::fs::read_dir(&source).await else {
            continue;
        };
        while let Ok(Some(version)) = versions.next_entry().await {
            let path = version.path();
            // A download in progress (another reload) is not ours to remove.
            let partial = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".partial-"));
            if partial || path == current || keep.contains(&path.as_path()) {
                continue;
            }
            if let Err(error) = tokio::fs::remove_dir_all(&path).await {
                tracing::debug!(%error, path = %path.display(), "failed to prune a cached model");
            }
        }
        // Only succeeds once the source has no version left.
        let _ = tokio::fs::remove_dir(&source).await;
    }
}

/// A readable, collision-free folder name: the value's tail plus a hash of all of it.
fn cache_key(label: &str, value: &impl Hash) -> String {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    let readable: String = label
        .rsplit('/')
        .find(|part| !part.is_empty())
        .unwrap_or("model")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    format!("{readable}-{:016x}", hasher.finish())
}

async fn cached_source(dir: &Path) -> Option<CachedSource> {
    let bytes = tokio::fs::read(dir.join(SOURCE_FILE)).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A store failure as the server's load error: "failed to read <uri>: <why>". The reload API
/// answers it with 400, as the fix (the URI, the credentials) is the caller's.
fn store_error(uri: &str, error: StoreError) -> Error {
    if error.is_not_found() {
        return Error::Read {
            path: PathBuf::from(uri),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"),
        };
    }
    read_error(uri, error.to_string())
}

fn read_error(uri: &str, message: impl Into<String>) -> Error {
    Error::Read {
        path: PathBuf::from(uri),
        source: std::io::Error::other(message.into()),
    }
}

/// What the watch compares between polls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fingerprint {
    /// A local folder: the card's content, and model.onnx's size and modification time (hashing
    /// a large graph every few seconds would cost more than it tells).
    Local {
        /// Hash of model.json's bytes: for change detection only, so a fast non-cryptographic
        /// hash is enough.
        card: u64,
        onnx_len: u64,
        onnx_modified: Option<SystemTime>,
    },
    /// A cached object-store folder: the source objects' entity tags, modification times and
    /// sizes.
    Remote(BTreeMap<String, Stamp>),
}

impl Fingerprint {
    /// The fingerprint of the model in `dir` as loaded: for a local folder, its files now; for a
    /// cache copy, the source's stamps recorded at download. Blocking (file I/O).
    pub fn of(dir: &Path) -> std::io::Result<Fingerprint> {
        if let Ok(bytes) = std::fs::read(dir.join(SOURCE_FILE)) {
            let record: CachedSource =
                serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
            return Ok(Fingerprint::Remote(record.stamps));
        }
        let card = std::fs::read(dir.join(CARD_FILE))?;
        let onnx = std::fs::metadata(dir.join(MODEL_FILE))?;
        let mut hasher = DefaultHasher::new();
        card.hash(&mut hasher);
        Ok(Fingerprint::Local {
            card: hasher.finish(),
            onnx_len: onnx.len(),
            onnx_modified: onnx.modified().ok(),
        })
    }

    /// The fingerprint of what `dir`'s source holds now: the local files, or for a cache copy
    /// the objects in the bucket (two HEAD requests, nothing downloaded).
    pub async fn poll(dir: &Path) -> Result<Fingerprint, String> {
        match cached_source(dir).await {
            Some(record) => {
                let location = Location::parse(&record.uri).map_err(|e| e.to_string())?;
                stamps(&location)
                    .await
                    .map(Fingerprint::Remote)
                    .map_err(|e| e.to_string())
            }
            None => {
                let dir = dir.to_path_buf();
                tokio::task::spawn_blocking(move || Fingerprint::of(&dir))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(resolve_str("/m/v1").unwrap(), PathBuf::from("/m/v1"));
        assert_eq!(resolve_str("file:///m/v1").unwrap(), PathBuf::from("/m/v1"));
        assert_eq!(resolve_str("file://m/v1").unwrap(), PathBuf::from("m/v1"));
        assert_eq!(resolve_str("rel/dir").unwrap(), PathBuf::from("rel/dir"));
        assert_eq!(
            resolve_str("/odd/a://b").unwrap(),
            PathBuf::from("/odd/a://b")
        );
        let error = resolve_str("gs://bucket/model").unwrap_err().to_string();
        assert!(
            error.contains("unsupported scheme 'gs://' in gs://bucket/model"),
            "{error}"
        );
        let error = resolve_str("s3://bucket/model").unwrap_err().to_string();
        assert!(error.contains("source::prepare"), "{error}");
    }

    #[test]
    fn cache_keys_are_readable_and_distinct() {
        let a = cache_key("s3://b/models/iris", &"s3://b/models/iris");
        let b = cache_key("s3://c/models/iris", &"s3://c/models/iris");
        assert!(a.starts_with("iris-"), "{a}");
        assert_ne!(a, b);
        assert!(cache_key("s3://b/a b?", &1).starts_with("a_b_-"));
    }

    #[test]
    fn fingerprint_follows_the_card_and_the_graph() {
        let dir = std::env::temp_dir().join(format!(
            "flywheel-fingerprint-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Fingerprint::of(&dir).is_err());
        std::fs::write(dir.join(CARD_FILE), b"{\"version\":\"1\"}").unwrap();
        std::fs::write(dir.join(MODEL_FILE), b"graph").unwrap();
        let first = Fingerprint::of(&dir).unwrap();
        assert_eq!(Fingerprint::of(&dir).unwrap(), first);
        std::fs::write(dir.join(CARD_FILE), b"{\"version\":\"2\"}").unwrap();
        let second = Fingerprint::of(&dir).unwrap();
        assert_ne!(second, first);
        std::fs::write(dir.join(MODEL_FILE), b"graph, longer").unwrap();
        assert_ne!(Fingerprint::of(&dir).unwrap(), second);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
