//! The study directory: everything `flywheel run` knows lives in files, written atomically, so a
//! killed runner loses nothing and the next run resumes from them.
//!
//! ```text
//! <dir>/study.json             the Study as last run (spec and status)
//! <dir>/runner.pid             the live runner's pid (one runner per directory)
//! <dir>/trials/<name>/trial.json   the Trial object (spec and status)
//! <dir>/trials/<name>/pid          the trial process, while it runs
//! <dir>/trials/<name>/stdout.log   stderr.log
//! <dir>/trials/<name>/artifacts/   model.onnx, model.json, schema.json, result.json
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flywheel_core::api::{Study, StudyStatus, Trial};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

pub struct StudyDir {
    root: PathBuf,
}

impl StudyDir {
    /// Opens (creating) the directory and claims it for this process.
    pub fn open(root: &Path) -> Result<Self, Error> {
        fs::create_dir_all(root.join("trials")).map_err(|source| Error::Write {
            path: root.to_path_buf(),
            source,
        })?;
        let dir = Self {
            root: root.to_path_buf(),
        };
        dir.claim()?;
        Ok(dir)
    }

    /// A directory of another study, read without claiming it (warm start).
    pub fn read_only(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One runner per directory: two would both launch the next trial index.
    fn claim(&self) -> Result<(), Error> {
        let lock = self.root.join("runner.pid");
        if let Ok(text) = fs::read_to_string(&lock)
            && let Ok(pid) = text.trim().parse::<u32>()
            && pid != std::process::id()
            && super::process::is_alive(pid)
            && super::process::command_line(pid).is_some_and(|cmd| cmd.contains("flywheel"))
        {
            return Err(Error::Busy {
                path: self.root.clone(),
                pid,
            });
        }
        write_atomic(&lock, std::process::id().to_string().as_bytes())
    }

    pub fn release(&self) {
        let _ = fs::remove_file(self.root.join("runner.pid"));
    }

    pub fn trial_dir(&self, name: &str) -> PathBuf {
        self.root.join("trials").join(name)
    }

    pub fn artifacts(&self, name: &str) -> PathBuf {
        self.trial_dir(name).join("artifacts")
    }

    pub fn load_study(&self) -> Result<Option<Study>, Error> {
        read_json(&self.root.join("study.json"))
    }

    pub fn save_study(&self, study: &Study) -> Result<(), Error> {
        write_json(&self.root.join("study.json"), study)
    }

    pub fn save_status(&self, study: &mut Study, status: &StudyStatus) -> Result<(), Error> {
        study.status = Some(status.clone());
        self.save_study(study)
    }

    /// Every trial recorded so far, in index order.
    pub fn load_trials(&self) -> Result<Vec<Trial>, Error> {
        let dir = self.root.join("trials");
        let entries = fs::read_dir(&dir).map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        let mut trials = Vec::new();
        for entry in entries.flatten() {
            if let Some(trial) = read_json::<Trial>(&entry.path().join("trial.json"))? {
                trials.push(trial);
            }
        }
        trials.sort_by_key(|trial| trial.spec.index);
        Ok(trials)
    }

    pub fn save_trial(&self, trial: &Trial) -> Result<(), Error> {
        let name = trial.metadata.name.as_deref().unwrap_or_default();
        let dir = self.trial_dir(name);
        fs::create_dir_all(&dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        write_json(&dir.join("trial.json"), trial)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| Error::Corrupt {
                path: path.to_path_buf(),
                message: err.to_string(),
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|err| Error::Serialize {
        what: "study state",
        message: err.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Write-then-rename, with fsyncs, so a reader (or a resumed runner after `kill -9`) sees the
/// old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let error = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = fs::File::create(&tmp).map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&tmp, path).map_err(error)?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}
