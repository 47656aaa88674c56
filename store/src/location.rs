//! Where an object lives, parsed from the URI forms Flywheel accepts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::StoreError;

/// An object (or a folder of objects) in the artifact store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// A local path: a plain path, or a `file://` URI (`file:///abs` or `file://rel` — the
    /// operator writes relative ones that way).
    Local(PathBuf),
    /// `s3://bucket/key`; `key` has no leading or trailing `/` and may be empty (the bucket's
    /// root).
    S3 { bucket: String, key: String },
}

impl Location {
    /// Parses `uri`. A scheme is letters, digits, `+`, `-` or `.` before `://`; text without one
    /// (including a path that merely contains `://` further on) is a local path.
    pub fn parse(uri: &str) -> Result<Location, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = uri
            .split_once("://")
            .filter(|(scheme, _)| is_scheme(scheme))
        else {
            if uri.is_empty() {
                return Err(invalid("it is empty"));
            }
            return Ok(Location::Local(PathBuf::from(uri)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" if rest.is_empty() => Err(invalid("a file:// URI needs a path")),
            "file" => Ok(Location::Local(PathBuf::from(rest))),
            "s3" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid("an s3:// URI needs a bucket: s3://bucket/key"));
                }
                let key = key.trim_matches('/');
                if key
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..")
                    && !key.is_empty()
                {
                    return Err(invalid(
                        "the key has an empty, '.' or '..' segment; object keys are plain names \
                         joined by '/'",
                    ));
                }
                Ok(Location::S3 {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                })
            }
            _ => Err(StoreError::UnsupportedScheme {
                uri: uri.to_string(),
                scheme: scheme.to_string(),
            }),
        }
    }

    /// The object `name` inside this folder.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(name)),
            Location::S3 { bucket, key } => {
                let name = name.trim_matches('/');
                Location::S3 {
                    bucket: bucket.clone(),
                    key: if key.is_empty() {
                        name.to_string()
                    } else {
                        format!("{key}/{name}")
                    },
                }
            }
        }
    }

    /// The local path, for a local location.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            Location::S3 { .. } => None,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Location::Local(_))
    }

    /// The last segment of the key or path (e.g. a model folder's name), if any.
    pub fn file_name(&self) -> Option<String> {
        match self {
            Location::Local(path) => path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned()),
            Location::S3 { key, .. } => key
                .rsplit('/')
                .next()
                .filter(|name| !name.is_empty())
                .map(str::to_string),
        }
    }
}

fn is_scheme(scheme: &str) -> bool {
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl FromStr for Location {
    type Err = StoreError;

    fn from_str(uri: &str) -> Result<Location, StoreError> {
        Location::parse(uri)
    }
}

/// Local locations print as their path, S3 ones as `s3://bucket/key`.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 { bucket, key } if key.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}
