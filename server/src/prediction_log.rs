//! The prediction log: append-only JSON-lines segment files under `--log-dir`, holding every
//! prediction and every piece of feedback, for the next study to learn from.
//!
//! Handlers hand serialized lines to one writer thread and wait for its answer; the thread
//! writes whatever queued up meanwhile in one go and fsyncs once per batch (group commit), and
//! only then answers. So a response that went out is on disk, and under load one fsync covers
//! many requests.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;

/// Segment file names: `segment-<sequence>.jsonl`, zero-padded so that names sort in order.
const PREFIX: &str = "segment-";
const SUFFIX: &str = ".jsonl";

/// Requests queued for the writer before handlers wait for room.
const CHANNEL_CAPACITY: usize = 4096;

/// Most bytes written between two fsyncs; bounds the latency one batch adds to its requests.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// One line of the log.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record<'a> {
    Prediction {
        request_id: &'a str,
        /// RFC 3339, UTC.
        time: &'a str,
        model: &'a str,
        model_version: &'a str,
        /// The row as the model saw it, keyed by raw column name (null: missing).
        inputs: serde_json::Map<String, serde_json::Value>,
        /// The class label or the regression value.
        prediction: serde_json::Value,
        /// Classifiers only: probability per class.
        #[serde(skip_serializing_if = "Option::is_none")]
        probabilities: Option<std::collections::BTreeMap<&'a str, f32>>,
        /// Set (true) on a shadow model's prediction, which carries the primary's request id and
        /// was never returned to the client; absent on the primary's.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        shadow: bool,
    },
    Feedback {
        request_id: &'a str,
        time: &'a str,
        model: &'a str,
        /// The version that made the prediction; null when the prediction is no longer (or was
        /// never) in the server's feedback window, to be joined offline.
        model_version: Option<&'a str>,
        actual: &'a serde_json::Value,
    },
}

/// Appends `record` as one JSON line to `buffer`.
pub fn push_line(buffer: &mut Vec<u8>, record: &Record<'_>) {
    // Serializing these types into memory cannot fail: keys are strings, floats are finite or
    // become null.
    if serde_json::to_writer(&mut *buffer, record).is_ok() {
        buffer.push(b'\n');
    }
}

/// The current time as RFC 3339 (UTC, nanoseconds).
pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

enum Message {
    Append {
        lines: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Close(oneshot::Sender<()>),
}

/// Handle on the writer thread; cheap to share.
#[derive(Debug)]
pub struct PredictionLog {
    sender: mpsc::Sender<Message>,
    dir: PathBuf,
}

impl PredictionLog {
    /// Opens a new segment in `dir` (creating the folder) after any segments already there, and
    /// starts the writer thread. Existing segments are never reopened, so nothing is truncated.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<PredictionLog, Error> {
        let log_error = |source| Error::Log {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(log_error)?;
        let mut next = last_sequence(dir).map_err(log_error)?;
        let segment = Segment::create_next(dir, &mut next).map_err(|source| Error::Log {
            path: segment_path(dir, next),
            source,
        })?;
        tracing::info!(path = %segment.path.display(), "prediction log segment opened");
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1),
            segment: Some(segment),
            next,
        };
        std::thread::Builder::new()
            .name("prediction-log".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| Error::Spawn {
                what: "the prediction log writer",
                source,
            })?;
        Ok(PredictionLog {
            sender,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `lines` (whole JSON lines) and returns once they are fsynced.
    pub async fn append(&self, lines: Vec<u8>) -> Result<(), String> {
        if lines.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.sender
            .send(Message::Append { lines, done })
            .await
            .map_err(|_| "the prediction log is closed".to_string())?;
        answer
            .await
            .map_err(|_| "the prediction log writer stopped".to_string())?
    }

    /// Writes what is queued, fsyncs and stops the writer; later appends fail.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.sender.send(Message::Close(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{sequence:010}{SUFFIX}"))
}

/// The highest segment number in `dir`, 0 when there is none.
fn last_sequence(dir: &Path) -> std::io::Result<u64> {
    let mut last = 0;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let sequence = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(sequence) = sequence {
            last = last.max(sequence);
        }
    }
    Ok(last)
}

/// The segment files in `dir`, oldest first.
pub fn segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

struct Segment {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Segment {
    fn create(dir: &Path, sequence: u64) -> std::io::Result<Segment> {
        let path = segment_path(dir, sequence);
        // create_new: a segment is written by one process once, never truncated or reused.
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        // The new name must survive a crash too, or fsynced records could vanish with it.
        File::open(dir)?.sync_all()?;
        Ok(Segment { file, path, len: 0 })
    }

    /// Creates the segment after `*last`, skipping numbers another process took meanwhile (two
    /// replicas sharing a folder), and leaves `*last` at the one created.
    fn create_next(dir: &Path, last: &mut u64) -> std::io::Result<Segment> {
        let mut attempts = 0;
        loop {
            *last += 1;
            match Segment::create(dir, *last) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 100 => {
                    attempts += 1;
                }
                result => return result,
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    /// None after a failed write: the next batch starts a fresh segment rather than trusting a
    /// file whose state after the error is unknown.
    segment: Option<Segment>,
    /// The number of the newest segment this writer created.
    next: u64,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        let mut batch = Vec::new();
        let mut waiting = Vec::new();
        while let Some(first) = receiver.blocking_recv() {
            let mut close = None;
            let mut message = Some(first);
            while let Some(current) = message.take() {
                match current {
                    Message::Append { lines, done } => {
                        batch.push(lines);
                        waiting.push(done);
                    }
                    Message::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if batch.iter().map(Vec::len).sum::<usize>() >= MAX_BATCH_BYTES {
                    break;
                }
                message = receiver.try_recv().ok();
            }
            let result = self.commit(&batch).map_err(|e| {
                tracing::error!(error = %e, "failed to write the prediction log");
                format!("failed to write the prediction log: {e}")
            });
            for done in waiting.drain(..) {
                let _ = done.send(result.clone());
            }
            batch.clear();
            if let Some(done) = close {
                receiver.close();
                let _ = done.send(());
                tracing::info!("prediction log closed");
                return;
            }
        }
    }

    /// Writes `batch`, rotating where a segment would outgrow `--log-segment-bytes`, and fsyncs.
    fn commit(&mut self, batch: &[Vec<u8>]) -> std::io::Result<()> {
        let result = self.write_all(batch);
        if result.is_err() {
            self.segment = None;
        }
        result
    }

    fn write_all(&mut self, batch: &[Vec<u8>]) -> std::io::Result<()> {
        for lines in batch {
            let full = self
                .segment
                .as_ref()
                .is_some_and(|s| s.len > 0 && s.len + lines.len() as u64 > self.segment_bytes);
            if full && let Some(old) = self.segment.take() {
                old.file.sync_data()?;
            }
            let segment = match &mut self.segment {
                Some(segment) => segment,
                slot @ None => {
                    let segment = Segment::create_next(&self.dir, &mut self.next)?;
                    tracing::info!(path = %segment.path.display(), "prediction log segment opened");
                    slot.insert(segment)
                }
            };
            segment.write(lines)?;
        }
        if let Some(segment) = &self.segment {
            segment.file.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "flywheel-log-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn rotates_by_size_and_never_reuses_a_segment() {
        let dir = temp_dir("rotate");
        let log = PredictionLog::open(&dir, 20).unwrap();
        for i in 0..3 {
            log.append(format!("{{\"n\":{i:08}}}\n").into_bytes())
                .await
                .unwrap();
        }
        log.close().await;
        assert!(log.append(b"{}\n".to_vec()).await.is_err());
        let first = segments(&dir).unwrap();
        assert_eq!(first.len(), 3, "{first:?}");
        let log = PredictionLog::open(&dir, 1024).unwrap();
        log.append(b"{\"n\":3}\n".to_vec()).await.unwrap();
        log.close().await;
        let second = segments(&dir).unwrap();
        assert_eq!(second.len(), 4);
        assert_eq!(&second[..3], &first[..]);
        let text: String = second
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(text.lines().count(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
