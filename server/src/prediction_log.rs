//! The prediction log: append-only JSON-lines segment files under `--log-dir`, holding every
//! prediction and every piece of feedback, for the next study to learn from.
//!
//! Handlers hand serialized lines to one writer thread and wait for its answer; the thread
//! writes whatever queued up meanwhile in one go and fsyncs once per batch (group commit), and
//! only then answers. So a response that went out is on disk, and under load one fsync covers
//! many requests.
//!
//! With `--log-archive-uri`, every segment the writer closes (rotated, or the last one at
//! shutdown) is handed to an archiver thread that uploads it to the artifact store under
//! `<archive>/<run>/segment-….jsonl` (`<run>`: start time and a random suffix, so restarts and
//! replicas never overwrite each other), retrying with backoff, and removes the local file only
//! once the upload succeeded. Requests never wait for it. Segments found in `--log-dir` at start
//! (an earlier run's, not yet uploaded) are uploaded too, so give each replica its own folder.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flywheel_store::{BlockingStore, Location, Store};
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

/// Waits between failed uploads of a segment double from the first to the last.
const ARCHIVE_FIRST_BACKOFF: Duration = Duration::from_secs(1);
const ARCHIVE_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long shutdown waits for the last uploads: well inside Kubernetes' default 30 s grace
/// period. What is not uploaded by then stays in `--log-dir` for the next start.
const ARCHIVE_SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// Closed segments remembered while no archiver is attached yet; older ones are still on disk
/// and found again at the next start.
const MAX_UNARCHIVED: usize = 10_000;

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
    /// From now on closed segments go to this archiver.
    Archive(Archiver),
    /// Close the open segment if it holds anything (`--log-segment-seconds`), so records reach
    /// the archive within a bounded time even when traffic is too light to fill a segment.
    Rotate,
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
        // An earlier run's segments: closed, and not archived yet if they are still here.
        let earlier = segments(dir).map_err(log_error)?;
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
            archiver: None,
            unarchived: earlier,
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

    /// Closes the open segment every `interval` when it holds records. The timer thread ends
    /// when the log closes.
    pub fn rotate_every(&self, interval: Duration) -> Result<(), Error> {
        let sender = self.sender.clone();
        std::thread::Builder::new()
            .name("prediction-log-rotation".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    if sender.blocking_send(Message::Rotate).is_err() {
                        return;
                    }
                }
            })
            .map(|_| ())
            .map_err(|source| Error::Spawn {
                what: "the prediction log rotation timer",
                source,
            })
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

    /// Copies every closed segment to the artifact store folder `uri` from now on, beginning
    /// with those closed before (an earlier run's included). Fails at once when `uri` is not a
    /// usable location (a bad URI, no S3 credentials); upload failures later are retried.
    pub async fn archive_to(&self, uri: &str) -> Result<(), Error> {
        let archiver = Archiver::start(uri)?;
        tracing::info!(archive = %archiver.target, "prediction log segments are archived");
        self.sender
            .send(Message::Archive(archiver))
            .await
            .map_err(|_| Error::Log {
                path: self.dir.clone(),
                source: std::io::Error::other("the prediction log is closed"),
            })
    }

    /// Writes what is queued, fsyncs and stops the writer; later appends fail. With an archive,
    /// the last segment is closed and uploaded too (waiting at most
    /// [`ARCHIVE_SHUTDOWN_GRACE`] for the uploads still pending).
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
    /// Where closed segments go, once attached.
    archiver: Option<Archiver>,
    /// Closed segments waiting for an archiver.
    unarchived: Vec<PathBuf>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        let mut batch = Vec::new();
        let mut waiting = Vec::new();
        while let Some(first) = receiver.blocking_recv() {
            let mut close = None;
            let mut rotate = false;
            let mut message = Some(first);
            while let Some(current) = message.take() {
                match current {
                    Message::Append { lines, done } => {
                        batch.push(lines);
                        waiting.push(done);
                    }
                    Message::Archive(archiver) => {
                        for path in self.unarchived.drain(..) {
                            archiver.upload(path);
                        }
                        self.archiver = Some(archiver);
                    }
                    Message::Rotate => rotate = true,
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
            if rotate
                && self.segment.as_ref().is_some_and(|s| s.len > 0)
                && let Some(segment) = self.segment.take()
            {
                // Its records were fsynced when written; the sync only covers metadata.
                if let Err(error) = segment.file.sync_data() {
                    tracing::error!(%error, "failed to sync a rotated prediction log segment");
                }
                self.closed(segment.path);
            }
            if let Some(done) = close {
                receiver.close();
                if let Some(segment) = self.segment.take() {
                    if let Err(error) = segment.file.sync_data() {
                        tracing::error!(%error, "failed to sync the last prediction log segment");
                    }
                    self.closed(segment.path);
                }
                if let Some(archiver) = self.archiver.take() {
                    archiver.finish(ARCHIVE_SHUTDOWN_GRACE);
                }
                let _ = done.send(());
                tracing::info!("prediction log closed");
                return;
            }
        }
    }

    /// Writes `batch`, rotating where a segment would outgrow `--log-segment-bytes`, and fsyncs.
    fn commit(&mut self, batch: &[Vec<u8>]) -> std::io::Result<()> {
        let result = self.write_all(batch);
        if result.is_err()
            && let Some(segment) = self.segment.take()
        {
            // What it holds up to the failed write was acknowledged; archive it like any other.
            self.closed(segment.path);
        }
        result
    }

    /// A segment this writer will not write again: to the archiver, if there is one.
    fn closed(&mut self, path: PathBuf) {
        match &self.archiver {
            Some(archiver) => archiver.upload(path),
            None if self.unarchived.len() < MAX_UNARCHIVED => self.unarchived.push(path),
            None => {}
        }
    }

    fn write_all(&mut self, batch: &[Vec<u8>]) -> std::io::Result<()> {
        for lines in batch {
            let full = self
                .segment
                .as_ref()
                .is_some_and(|s| s.len > 0 && s.len + lines.len() as u64 > self.segment_bytes);
            if full && let Some(old) = self.segment.take() {
                let synced = old.file.sync_data();
                self.closed(old.path);
                synced?;
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

/// Uploads closed segments on its own thread, oldest first, retrying each with backoff until it
/// succeeds; a segment's local file is removed only after its upload.
struct Archiver {
    jobs: std::sync::mpsc::Sender<ArchiveJob>,
    /// `<archive>/<run>`.
    target: Location,
}

enum ArchiveJob {
    Upload(PathBuf),
    /// Upload what is pending until the deadline, then answer and stop.
    Finish(Instant, std::sync::mpsc::Sender<()>),
}

impl Archiver {
    fn start(uri: &str) -> Result<Archiver, Error> {
        let archive_error = |message: String| Error::Log {
            path: PathBuf::from(uri),
            source: std::io::Error::other(message),
        };
        let location = Location::parse(uri).map_err(|e| archive_error(e.to_string()))?;
        let store = Store::from_env();
        // No credentials is a configuration error: refuse to start rather than pile up segments.
        store
            .check(&location)
            .map_err(|e| archive_error(e.to_string()))?;
        let run = format!(
            "{}-{}",
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let target = location.join(&run);
        let (jobs, queue) = std::sync::mpsc::channel();
        let thread_target = target.clone();
        std::thread::Builder::new()
            .name("log-archiver".into())
            .spawn(move || {
                // The runtime is made on this thread: it may not be made or dropped inside the
                // server's async workers.
                match BlockingStore::new(store) {
                    Ok(store) => archive(&store, &thread_target, &queue),
                    Err(error) => {
                        tracing::error!(%error, "prediction log archiver failed to start");
                    }
                }
            })
            .map_err(|source| Error::Spawn {
                what: "the prediction log archiver",
                source,
            })?;
        Ok(Archiver { jobs, target })
    }

    fn upload(&self, path: PathBuf) {
        if self.jobs.send(ArchiveJob::Upload(path)).is_err() {
            tracing::error!("the prediction log archiver stopped; segments stay in --log-dir");
        }
    }

    /// Blocks until what is pending is uploaded, or `grace` has passed.
    fn finish(self, grace: Duration) {
        let (done, finished) = std::sync::mpsc::channel();
        if self
            .jobs
            .send(ArchiveJob::Finish(Instant::now() + grace, done))
            .is_ok()
        {
            let _ = finished.recv();
        }
    }
}

/// The archiver thread: uploads `pending` in order, waiting for new jobs or the next retry.
fn archive(store: &BlockingStore, target: &Location, jobs: &std::sync::mpsc::Receiver<ArchiveJob>) {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    let mut pending: VecDeque<PathBuf> = VecDeque::new();
    let mut finish = None;
    let mut backoff = ARCHIVE_FIRST_BACKOFF;
    let mut retry_at: Option<Instant> = None;
    let mut disconnected = false;
    type Finish = Option<(Instant, std::sync::mpsc::Sender<()>)>;
    fn accept(job: ArchiveJob, pending: &mut VecDeque<PathBuf>, finish: &mut Finish) {
        match job {
            ArchiveJob::Upload(path) => pending.push_back(path),
            ArchiveJob::Finish(deadline, done) => *finish = Some((deadline, done)),
        }
    }
    loop {
        loop {
            match jobs.try_recv() {
                Ok(job) => accept(job, &mut pending, &mut finish),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        let now = Instant::now();
        let deadline = finish.as_ref().map(|(deadline, _)| *deadline);
        if pending.is_empty() && (disconnected || deadline.is_some()) {
            break;
        }
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if let Some(path) = pending.front()
            && retry_at.is_none_or(|at| now >= at)
        {
            match upload_segment(store, target, path) {
                Ok(()) => {
                    pending.pop_front();
                    backoff = ARCHIVE_FIRST_BACKOFF;
                    retry_at = None;
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        segment = %path.display(),
                        retry_in_seconds = backoff.as_secs(),
                        "failed to archive a prediction log segment; it stays in --log-dir"
                    );
                    retry_at = Some(now + backoff);
                    backoff = (backoff * 2).min(ARCHIVE_MAX_BACKOFF);
                }
            }
            continue;
        }
        // Nothing to do before the next retry, the shutdown deadline or a new job.
        let wake = [retry_at, deadline].into_iter().flatten().min();
        if disconnected {
            std::thread::sleep(
                wake.map_or(ARCHIVE_FIRST_BACKOFF, |w| w.saturating_duration_since(now)),
            );
            continue;
        }
        let job = match wake {
            Some(wake) => match jobs.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    disconnected = true;
                    None
                }
            },
            None => jobs.recv().map_or_else(
                |_| {
                    disconnected = true;
                    None
                },
                Some,
            ),
        };
        if let Some(job) = job {
            accept(job, &mut pending, &mut finish);
        }
    }
    if !pending.is_empty() {
        tracing::warn!(
            segments = pending.len(),
            "prediction log segments not archived before shutdown stay in --log-dir; the next \
             start uploads them"
        );
    }
    if let Some((_, done)) = finish {
        let _ = done.send(());
    }
}

/// Uploads one segment and removes the local file. An empty segment (no traffic since it was
/// opened) is only removed.
fn upload_segment(store: &BlockingStore, target: &Location, path: &Path) -> Result<(), String> {
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        // Gone already (uploaded and removed by an earlier attempt that failed afterwards).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("failed to read {}: {e}", path.display())),
    };
    if len > 0 {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("segment {} has no name", path.display()))?;
        let destination = target.join(name);
        store
            .upload_file(path, &destination)
            .map_err(|e| e.to_string())?;
        tracing::info!(segment = %path.display(), archive = %destination, "prediction log segment archived");
    }
    if let Err(error) = std::fs::remove_file(path) {
        tracing::warn!(%error, segment = %path.display(), "failed to remove an archived segment");
    }
    Ok(())
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

    #[tokio::test]
    async fn a_rotation_timer_archives_records_before_the_segment_fills() {
        let dir = temp_dir("timed-log");
        let archive = temp_dir("timed-archive");
        let log = PredictionLog::open(&dir, 1 << 30).unwrap();
        log.archive_to(&format!("file://{}", archive.display()))
            .await
            .unwrap();
        log.rotate_every(Duration::from_millis(20)).unwrap();
        log.append(b"{\"n\":1}\n".to_vec()).await.unwrap();
        let archived = || -> Vec<PathBuf> {
            std::fs::read_dir(&archive)
                .unwrap()
                .flat_map(|run| segments(&run.unwrap().path()).unwrap())
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while archived().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let found = archived();
        assert_eq!(
            found.len(),
            1,
            "the record reached the archive with the log open"
        );
        assert_eq!(std::fs::read_to_string(&found[0]).unwrap(), "{\"n\":1}\n");
        // Idle ticks close nothing: no empty segments pile up.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(archived().len(), 1);
        log.append(b"{\"n\":2}\n".to_vec()).await.unwrap();
        log.close().await;
        assert_eq!(archived().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&archive).unwrap();
    }

    #[tokio::test]
    async fn archives_closed_segments_and_the_last_at_close() {
        let dir = temp_dir("archive-log");
        let archive = temp_dir("archive");
        // An earlier run's segment, never archived.
        let earlier = PredictionLog::open(&dir, 1024).unwrap();
        earlier.append(b"{\"n\":0}\n".to_vec()).await.unwrap();
        earlier.close().await;

        let log = PredictionLog::open(&dir, 20).unwrap();
        let uri = format!("file://{}", archive.display());
        log.archive_to(&uri).await.unwrap();
        for i in 1..=4 {
            log.append(format!("{{\"n\":{i},\"pad\":\"{i:08}\"}}\n").into_bytes())
                .await
                .unwrap();
        }
        log.close().await;

        // Everything is in one run folder of the archive, and nothing is left locally.
        assert!(segments(&dir).unwrap().is_empty(), "{:?}", segments(&dir));
        let runs: Vec<PathBuf> = std::fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(runs.len(), 1, "{runs:?}");
        let archived = segments(&runs[0]).unwrap();
        let text: String = archived
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let mut numbers: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, [0, 1, 2, 3, 4]);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&archive).unwrap();
    }

    #[tokio::test]
    async fn an_unusable_archive_is_refused_at_once() {
        let dir = temp_dir("archive-refused");
        let log = PredictionLog::open(&dir, 1024).unwrap();
        let error = log.archive_to("gs://bucket/logs").await.unwrap_err();
        assert!(error.to_string().contains("unsupported scheme"), "{error}");
        log.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
