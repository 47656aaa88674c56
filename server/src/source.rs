//! Where a model comes from: model sources as flags and the repository API name them, and the
//! fingerprint of a model folder by which the watch tells that a new version has landed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::Error;
use crate::model::{CARD_FILE, MODEL_FILE};

/// The local folder of a model source: a path, or a `file://` URI (`file:///abs/dir`, or
/// `file://rel/dir` as the operator writes relative ones). Other schemes are refused until the
/// server can fetch from them.
pub fn resolve(source: &Path) -> Result<PathBuf, Error> {
    match source.to_str() {
        Some(text) => resolve_str(text),
        // Not UTF-8, so not a URI either.
        None => Ok(source.to_path_buf()),
    }
}

/// [`resolve`] for a source given as text.
pub fn resolve_str(source: &str) -> Result<PathBuf, Error> {
    if let Some(path) = source.strip_prefix("file://") {
        return Ok(PathBuf::from(path));
    }
    // A scheme is letters, digits, '+', '-' or '.' before "://"; a path merely containing
    // "://" further on (unusual, but legal) is still a path.
    let scheme = source.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(scheme)
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            Err(Error::UnsupportedSource {
                uri: source.to_string(),
            })
        }
        _ => Ok(PathBuf::from(source)),
    }
}

/// What the watch compares between polls: the card's content, and model.onnx's size and
/// modification time (hashing a large graph every few seconds would cost more than it tells).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hash of model.json's bytes: for change detection only, so a fast non-cryptographic hash
    /// is enough.
    card: u64,
    onnx_len: u64,
    onnx_modified: Option<SystemTime>,
}

impl Fingerprint {
    /// Reads model.json and stats model.onnx in `dir`. Blocking (file I/O).
    pub fn of(dir: &Path) -> std::io::Result<Fingerprint> {
        let card = std::fs::read(dir.join(CARD_FILE))?;
        let onnx = std::fs::metadata(dir.join(MODEL_FILE))?;
        let mut hasher = DefaultHasher::new();
        card.hash(&mut hasher);
        Ok(Fingerprint {
            card: hasher.finish(),
            onnx_len: onnx.len(),
            onnx_modified: onnx.modified().ok(),
        })
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
        let error = resolve_str("s3://bucket/model").unwrap_err().to_string();
        assert!(
            error.contains("unsupported model source 's3://bucket/model'"),
            "{error}"
        );
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
