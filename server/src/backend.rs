//! Inference off the async runtime: requests enter a bounded queue, a batcher task merges what
//! is waiting into batches, and dedicated OS threads (one ONNX Runtime session each) run them.
//! ONNX Runtime calls block for their whole duration, so they never run on a tokio worker.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::session::Session;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::config::Config;
use crate::error::Error;
use crate::metrics::{Metrics, ModelLabels};
use crate::model::{self, Columns, MODEL_FILE, ModelSpec, Predictions};
use crate::source::Fingerprint;

/// The process-wide ONNX Runtime environment; the shared library can be loaded only once.
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static ENVIRONMENT_INIT: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime from `dylib` (once per process) and returns its environment.
pub fn environment(dylib: &Path) -> Result<Environment, Error> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env.clone());
    }
    let _init = ENVIRONMENT_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env.clone());
    }
    let load_error = |message: String| Error::OrtLoad {
        path: dylib.to_path_buf(),
        message,
    };
    // Catches a missing file here, before ort tries a bare name against the loader's search path.
    if dylib.components().count() > 1 && !dylib.exists() {
        return Err(load_error("no such file".into()));
    }
    let env = ort::init_from(dylib)
        .map_err(|e| load_error(e.to_string()))?
        .with_name("flywheel-server")
        .with_telemetry(false)
        .build()
        .map_err(|e| load_error(e.to_string()))?;
    Ok(ENVIRONMENT.get_or_init(|| env).clone())
}

/// Why a prediction did not come back.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictError {
    /// The queue is full: the client should back off.
    QueueFull,
    /// The backend is shutting down.
    Closed,
    /// ONNX Runtime failed on the batch holding this request.
    Failed(String),
}

struct Job {
    columns: Columns,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Predictions, String>>,
}

struct Batch {
    jobs: Vec<Job>,
    // Returned to the batcher when the batch is done, so it only forms a batch for a free thread.
    _permit: OwnedSemaphorePermit,
}

/// Holds inference back while alive: running batches finish, new requests wait in the queue.
pub struct PauseGuard {
    _permits: OwnedSemaphorePermit,
}

/// Which part a loaded model plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Answers clients.
    Primary,
    /// Receives mirrored requests; its predictions are only logged.
    Shadow,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Shadow => "shadow",
        }
    }
}

/// What to load: a model folder, the name clients address it by, and its role.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub dir: PathBuf,
    pub name: String,
    pub role: Role,
}

/// One loaded model with its inference threads. Dropping the last handle stops the threads once
/// the queue drains.
pub struct Backend {
    spec: Arc<ModelSpec>,
    dir: PathBuf,
    role: Role,
    /// The folder's state just before it was read, for the watch to tell a newer version.
    fingerprint: Option<Fingerprint>,
    queue: mpsc::Sender<Job>,
    /// The inference threads' batches, for handing a request to an idle thread directly.
    work: std::sync::mpsc::Sender<Batch>,
    /// Whether a request may skip the batcher when nothing is queued and a thread is free:
    /// only without `--max-batch-delay-micros`, which asks batches to wait for more requests,
    /// and only while the batch window sees no concurrency (see [`Gather`]).
    direct: bool,
    /// Requests in the batcher's last batch while its window is on (1 otherwise): above 1,
    /// requests arrive together, and the direct path would run the first of them alone.
    last_batch_jobs: Arc<AtomicUsize>,
    permits: Arc<Semaphore>,
    threads: u32,
    /// The primary's queue depth and 429s; `None` for a shadow, whose overflow is counted as
    /// dropped mirrors by its caller instead.
    queue_metrics: Option<(Gauge, Counter)>,
}

impl Backend {
    /// Loads the model of `config` (`--model-dir`, `--model-name`) as the primary and starts
    /// its inference threads. Must be called inside a tokio runtime (the batcher is a task).
    pub fn load(config: &Config, metrics: Metrics) -> Result<Backend, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::Spawn {
            what: "the batcher",
            source: std::io::Error::other(e),
        })?;
        let dir = crate::source::resolve(&config.model_dir)?;
        let name = match &config.model_name {
            Some(name) => name.clone(),
            None => model_name_from_dir(&dir),
        };
        let spec = LoadSpec {
            dir,
            name,
            role: Role::Primary,
        };
        Backend::open(config, &spec, metrics, &runtime)
    }

    /// Loads the model in `load.dir`, checks it against its card, warms every session up with
    /// one inference and starts the inference threads, the batcher on `runtime`. Blocking (ONNX
    /// Runtime reads and optimizes the graph): call it outside the async workers at run time.
    pub fn open(
        config: &Config,
        load: &LoadSpec,
        metrics: Metrics,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Backend, Error> {
        let env = environment(&config.ort_dylib_path)?;
        // Taken before reading, so that a change made while loading shows up as a new version
        // to the watch rather than being missed.
        let fingerprint = Fingerprint::of(&load.dir).ok();
        let card = ModelSpec::read_card(&load.dir)?;
        let onnx_path = load.dir.join(MODEL_FILE);
        // ONNX Runtime's own message for a missing file is vague; name the file instead.
        std::fs::metadata(&onnx_path).map_err(|source| Error::Read {
            path: onnx_path.clone(),
            source,
        })?;
        let threads = match load.role {
            Role::Primary => config.inference_threads,
            Role::Shadow => config.shadow_inference_threads,
        }
        .clamp(1, 1024);
        let mut sessions = (0..threads)
            .map(|_| new_session(&env, &onnx_path, config.intra_op_threads))
            .collect::<Result<Vec<_>, _>>()?;
        let first = sessions
            .first()
            .ok_or_else(|| Error::Output("no session".into()))?;
        let spec = Arc::new(ModelSpec::check(
            load.name.clone(),
            card,
            onnx_path.clone(),
            first.inputs(),
            first.outputs(),
        )?);
        // Every session allocates its buffers on its first run; doing that here keeps the cost
        // off the first requests, and refuses a model that cannot predict before it serves.
        for session in &mut sessions {
            warm_up(&spec, session)?;
        }

        let labels = ModelLabels {
            model_version: spec.card.version.clone(),
        };
        let queue_metrics = match load.role {
            Role::Primary => Some((metrics.queue_depth.clone(), metrics.rejected.clone())),
            Role::Shadow => None,
        };
        let (queue, requests) = mpsc::channel(config.max_queue_size.max(1));
        let (work_tx, work_rx) = std::sync::mpsc::channel::<Batch>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let permits = Arc::new(Semaphore::new(threads));
        let last_batch_jobs = Arc::new(AtomicUsize::new(1));
        let prefix = match load.role {
            Role::Primary => "inference",
            Role::Shadow => "shadow",
        };
        for (i, session) in sessions.into_iter().enumerate() {
            let worker = Worker {
                spec: spec.clone(),
                session,
                batches: work_rx.clone(),
                metrics: WorkerMetrics::new(&metrics, &labels),
            };
            std::thread::Builder::new()
                .name(format!("{prefix}-{i}"))
                .spawn(move || worker.run())
                .map_err(|source| Error::Spawn {
                    what: "an inference thread",
                    source,
                })?;
        }
        runtime.spawn(batcher(
            requests,
            work_tx.clone(),
            permits.clone(),
            BatchPolicy {
                max_rows: config.max_batch_size.max(1),
                delay: config.max_batch_delay(),
                window: config.batch_window(),
            },
            last_batch_jobs.clone(),
            queue_metrics.as_ref().map(|(depth, _)| depth.clone()),
        ));
        Ok(Backend {
            spec,
            dir: load.dir.clone(),
            role: load.role,
            fingerprint,
            queue,
            work: work_tx,
            direct: config.max_batch_delay().is_zero(),
            last_batch_jobs,
            permits,
            threads: u32::try_from(threads).unwrap_or(1),
            queue_metrics,
        })
    }

    pub fn spec(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    /// The folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The folder's fingerprint taken when the model was loaded.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        self.fingerprint.as_ref()
    }

    /// Queues `columns` for inference and waits for the result. Never blocks the runtime: a
    /// full queue is refused at once.
    pub async fn predict(&self, columns: Columns) -> Result<Predictions, PredictError> {
        self.submit(columns)?.wait().await
    }

    /// Queues `columns` without waiting for the result; a full queue is refused at once.
    pub fn submit(&self, columns: Columns) -> Result<Pending, PredictError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            columns,
            enqueued: Instant::now(),
            reply,
        };
        let job = match self.dispatch_idle(job) {
            Ok(()) => return Ok(Pending { answer }),
            Err(job) => job,
        };
        match self.queue.try_send(job) {
            Ok(()) => {
                if let Some((depth, _)) = &self.queue_metrics {
                    depth.inc();
                }
                Ok(Pending { answer })
            }
            Err(TrySendError::Full(_)) => {
                if let Some((_, rejected)) = &self.queue_metrics {
                    rejected.inc();
                }
                Err(PredictError::QueueFull)
            }
            Err(TrySendError::Closed(_)) => Err(PredictError::Closed),
        }
    }

    /// The idle server's fast path: with nothing queued and an inference thread free, the
    /// batcher would form a batch of this one job anyway; handing it to the thread directly
    /// saves the hop through the queue and the batcher task. Gives the job back otherwise (a
    /// busy server batches through the queue as before; a paused one holds every permit).
    ///
    /// Under concurrency (the last batch held several requests) the job goes to the batcher
    /// instead, even when it finds nothing queued: it is then the first of a wave whose other
    /// requests are still being read, and running it alone would take the core from them.
    fn dispatch_idle(&self, job: Job) -> Result<(), Job> {
        if !self.direct
            || self.last_batch_jobs.load(Ordering::Relaxed) > 1
            || self.queue.capacity() < self.queue.max_capacity()
        {
            return Err(job);
        }
        // Fails while the batcher waits for a permit: released permits go to waiters first.
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Err(job);
        };
        let batch = Batch {
            jobs: vec![job],
            _permit: permit,
        };
        // Only fails once the threads are gone; the queue then answers Closed.
        self.work
            .send(batch)
            .map_err(|std::sync::mpsc::SendError(mut batch)| batch.jobs.swap_remove(0))
    }

    /// Waits for running batches to finish, then holds new ones back until the guard drops.
    /// Requests keep queueing meanwhile (and get 429 once the queue is full).
    pub async fn pause(&self) -> Result<PauseGuard, PredictError> {
        let permits = self
            .permits
            .clone()
            .acquire_many_owned(self.threads)
            .await
            .map_err(|_| PredictError::Closed)?;
        Ok(PauseGuard { _permits: permits })
    }
}

/// A queued prediction; dropping it tells the inference thread to skip the rows.
pub struct Pending {
    answer: oneshot::Receiver<Result<Predictions, String>>,
}

impl Pending {
    pub async fn wait(self) -> Result<Predictions, PredictError> {
        match self.answer.await {
            Ok(Ok(predictions)) => Ok(predictions),
            Ok(Err(message)) => Err(PredictError::Failed(message)),
            Err(_) => Err(PredictError::Failed("the inference thread stopped".into())),
        }
    }
}

/// Runs one row of default values (0 for numbers and booleans, "" for categories) through
/// `session`.
fn warm_up(spec: &ModelSpec, session: &mut Session) -> Result<(), Error> {
    let failed = |message: String| Error::WarmUp {
        model: format!("{} version {}", spec.name, spec.card.version),
        message,
    };
    let columns = model::default_row(spec);
    match std::panic::catch_unwind(AssertUnwindSafe(|| model::run(spec, session, columns))) {
        Ok(Ok(predictions)) if predictions.len() == 1 => Ok(()),
        Ok(Ok(predictions)) => Err(failed(format!(
            "expected 1 prediction, got {}",
            predictions.len()
        ))),
        Ok(Err(error)) => Err(failed(error.to_string())),
        Err(_) => Err(failed("inference panicked".into())),
    }
}

/// The model name when none is given: the folder's name, or "model".
pub fn model_name_from_dir(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("model")
        .to_string()
}

fn new_session(env: &Environment, path: &Path, intra_op_threads: usize) -> Result<Session, Error> {
    let builder = Session::builder(env).map_err(Error::ort("create a session builder"))?;
    let mut builder = if intra_op_threads > 0 {
        builder
            .with_intra_threads(intra_op_threads)
            .map_err(|e| Error::Ort {
                action: "set intra-op threads",
                source: e.into(),
            })?
    } else {
        builder
    };
    builder.commit_from_file(path).map_err(|source| Error::Ort {
        action: "load model.onnx",
        source,
    })
}

/// How the batcher forms batches: `--max-batch-size`, `--max-batch-delay-micros` and
/// `--batch-window-micros`.
#[derive(Clone, Copy, Debug)]
struct BatchPolicy {
    max_rows: usize,
    delay: Duration,
    window: Duration,
}

/// What the batcher knows about the batch it is gathering, each time it drained the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gather {
    /// Whether the batch is full: `--max-batch-size` rows, or the next request would not fit.
    full: bool,
    /// Requests in the batch.
    jobs: usize,
    /// Whether the last drain of the queue added requests.
    grew: bool,
    /// Requests in the previous batch: clients answered then are likely about to send again.
    expected: usize,
    /// Time since a thread was free for this batch.
    waited: Duration,
    /// `--batch-window-micros`.
    window: Duration,
}

/// The batcher's next step for a batch it holds a free thread for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Run,
    /// Requests are arriving: let the runtime parse those already in the sockets, then drain
    /// the queue again.
    Parse,
    /// Requests stopped arriving before the last batch's clients were all back: sleep until the
    /// next one is queued (or the window ends).
    Listen,
}

impl Gather {
    /// The adaptive window's rule. On a core shared by HTTP and inference, a batch sent to its
    /// thread takes the core from the requests still being parsed, which then miss it; so while
    /// requests keep arriving the batch waits for them, and once they stop it still waits for as
    /// many requests as the previous batch held (its clients are sending again), within the
    /// window. A lone request with nothing before it (`expected` 1) runs at once: an idle
    /// server's latency does not change.
    fn next(&self) -> Next {
        if self.full || self.waited >= self.window {
            Next::Run
        } else if self.grew {
            Next::Parse
        } else if self.jobs < self.expected {
            Next::Listen
        } else {
            Next::Run
        }
    }
}

async fn batcher(
    mut requests: mpsc::Receiver<Job>,
    work: std::sync::mpsc::Sender<Batch>,
    permits: Arc<Semaphore>,
    policy: BatchPolicy,
    last_batch_jobs: Arc<AtomicUsize>,
    queue_depth: Option<Gauge>,
) {
    let taken = || {
        if let Some(depth) = &queue_depth {
            depth.dec();
        }
    };
    let max_rows = policy.max_rows;
    // The fixed delay, when set, replaces the window: it asks every batch to wait.
    let window = if policy.delay.is_zero() {
        policy.window
    } else {
        Duration::ZERO
    };
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match requests.recv().await {
                Some(job) => {
                    taken();
                    job
                }
                None => return,
            },
        };
        // Waiting for a free thread before gathering the rest lets the queue fill meanwhile, so
        // batches grow with load without delaying a request on an idle server.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let free = Instant::now();
        let deadline = tokio::time::Instant::from_std(first.enqueued + policy.delay);
        let mut rows = first.columns.rows;
        let mut jobs = vec![first];
        // Adds `job` to the batch; a job that would overflow it is carried to the next one.
        let mut add = |job: Job, rows: &mut usize, jobs: &mut Vec<Job>| {
            taken();
            if *rows + job.columns.rows > max_rows {
                carried = Some(job);
                return false;
            }
            *rows += job.columns.rows;
            jobs.push(job);
            true
        };
        if policy.delay.is_zero() {
            let window_end = tokio::time::Instant::from_std(free + window);
            // Requests in the batch when it was last looked at.
            let mut seen = 0;
            loop {
                let mut fits = true;
                while fits && rows < max_rows {
                    let Ok(job) = requests.try_recv() else { break };
                    fits = add(job, &mut rows, &mut jobs);
                }
                let gather = Gather {
                    full: rows >= max_rows || !fits,
                    jobs: jobs.len(),
                    grew: jobs.len() > seen.max(1),
                    expected: last_batch_jobs.load(Ordering::Relaxed),
                    waited: free.elapsed(),
                    window,
                };
                seen = jobs.len();
                match gather.next() {
                    Next::Run => break,
                    // A yield, not a sleep (tokio's timers tick once a millisecond, as long as
                    // the whole window): it runs every task that is ready and polls the sockets,
                    // so the requests that arrived meanwhile are parsed and queued before the
                    // next drain, microseconds later.
                    Next::Parse => tokio::task::yield_now().await,
                    // Nothing to parse: sleep rather than spin. The timer may end the window up
                    // to a millisecond late, which only a batch short of clients pays.
                    Next::Listen => {
                        let next = tokio::time::timeout_at(window_end, requests.recv()).await;
                        let Ok(Some(job)) = next else { break };
                        if !add(job, &mut rows, &mut jobs) {
                            break;
                        }
                    }
                }
            }
            if !window.is_zero() {
                last_batch_jobs.store(jobs.len(), Ordering::Relaxed);
            }
        } else {
            while rows < max_rows {
                let next = tokio::time::timeout_at(deadline, requests.recv())
                    .await
                    .ok()
                    .flatten();
                let Some(job) = next else { break };
                if !add(job, &mut rows, &mut jobs) {
                    break;
                }
            }
        }
        if work
            .send(Batch {
                jobs,
                _permit: permit,
            })
            .is_err()
        {
            return;
        }
    }
}

struct Worker {
    spec: Arc<ModelSpec>,
    session: Session,
    batches: Arc<Mutex<std::sync::mpsc::Receiver<Batch>>>,
    metrics: WorkerMetrics,
}

/// A worker's metric series, looked up once (the label set is fixed per model version) rather
/// than hashed into each family on every batch.
struct WorkerMetrics {
    queue_duration: Histogram,
    inference_duration: Histogram,
    batch_size: Histogram,
    predictions: Counter,
}

impl WorkerMetrics {
    fn new(metrics: &Metrics, labels: &ModelLabels) -> WorkerMetrics {
        WorkerMetrics {
            queue_duration: metrics.queue_duration.get_or_create(labels).clone(),
            inference_duration: metrics.inference_duration.get_or_create(labels).clone(),
            batch_size: metrics.batch_size.get_or_create(labels).clone(),
            predictions: metrics.predictions.get_or_create(labels).clone(),
        }
    }
}

impl Worker {
    fn run(mut self) {
        loop {
            let batch = {
                let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
                match batches.recv() {
                    Ok(batch) => batch,
                    Err(_) => return,
                }
            };
            self.run_batch(batch);
        }
    }

    fn run_batch(&mut self, batch: Batch) {
        let started = Instant::now();
        let Batch {
            mut jobs,
            _permit: permit,
        } = batch;
        // A client that timed out or hung up no longer needs its rows computed.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            return;
        }
        for job in &jobs {
            self.metrics.queue_duration.observe(
                started
                    .saturating_duration_since(job.enqueued)
                    .as_secs_f64(),
            );
        }
        let sizes: Vec<usize> = jobs.iter().map(|job| job.columns.rows).collect();
        let merged = if jobs.len() == 1 {
            jobs.first_mut().map(|job| std::mem::take(&mut job.columns))
        } else {
            Columns::concat(jobs.iter_mut().map(|job| std::mem::take(&mut job.columns)))
        };
        let Some(merged) = merged else { return };
        let rows = merged.rows;

        let spec = &self.spec;
        let session = &mut self.session;
        // A panic inside ONNX Runtime's bindings must not take the thread (and capacity) down.
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| model::run(spec, session, merged)));
        self.metrics
            .inference_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(rows as f64);
        // The thread is free once ONNX Runtime returns. Releasing the permit before answering
        // lets the request that a reply wakes (the next one from the same client, say) find the
        // thread free and take the direct path, instead of the queue, the batcher task and a
        // wait for this permit: an extra hand-off between threads for every such request.
        drop(permit);

        let result = match result {
            Ok(Ok(predictions)) => Ok(predictions),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("inference panicked".to_string()),
        };
        match result {
            Ok(predictions) => {
                self.metrics.predictions.inc_by(rows as u64);
                if jobs.len() == 1 {
                    // The common unloaded case: no copy.
                    if let Some(job) = jobs.pop() {
                        let _ = job.reply.send(Ok(predictions));
                    }
                    return;
                }
                let mut start = 0;
                for (job, size) in jobs.into_iter().zip(sizes) {
                    let _ = job.reply.send(Ok(predictions.slice(start..start + size)));
                    start += size;
                }
            }
            Err(message) => {
                tracing::error!(error = %message, rows, "inference failed");
                for job in jobs {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn gather(jobs: usize, grew: bool, expected: usize) -> Gather {
        Gather {
            full: false,
            jobs,
            grew,
            expected,
            waited: Duration::from_micros(10),
            window: MS,
        }
    }

    #[test]
    fn a_lone_request_on_a_quiet_server_runs_at_once() {
        assert_eq!(gather(1, false, 1).next(), Next::Run);
    }

    #[test]
    fn a_growing_batch_waits_for_the_requests_still_arriving() {
        // More than one request found: concurrency, even with nothing seen before.
        assert_eq!(gather(2, true, 1).next(), Next::Parse);
        // Still growing past the previous batch's size.
        assert_eq!(gather(40, true, 8).next(), Next::Parse);
    }

    #[test]
    fn a_batch_that_stopped_growing_runs_once_the_last_batch_is_matched() {
        assert_eq!(gather(2, false, 1).next(), Next::Run);
        assert_eq!(gather(8, false, 8).next(), Next::Run);
        assert_eq!(gather(9, false, 8).next(), Next::Run);
        // The previous batch's clients are not all back yet.
        assert_eq!(gather(5, false, 8).next(), Next::Listen);
        assert_eq!(gather(1, false, 64).next(), Next::Listen);
    }

    #[test]
    fn a_full_batch_runs_at_once() {
        let full = Gather {
            full: true,
            ..gather(3, true, 64)
        };
        assert_eq!(full.next(), Next::Run);
    }

    #[test]
    fn the_window_bounds_the_wait() {
        for (grew, expected) in [(true, 1), (false, 64)] {
            let at_bound = Gather {
                waited: MS,
                ..gather(3, grew, expected)
            };
            assert_eq!(at_bound.next(), Next::Run);
        }
    }

    #[test]
    fn no_window_runs_what_is_there() {
        let off = Gather {
            window: Duration::ZERO,
            waited: Duration::ZERO,
            ..gather(3, true, 64)
        };
        assert_eq!(off.next(), Next::Run);
    }

    /// The batcher on its own: a queue, a permit, and the batches it sends.
    struct Harness {
        queue: mpsc::Sender<Job>,
        batches: std::sync::mpsc::Receiver<Batch>,
        permits: Arc<Semaphore>,
        last_batch_jobs: Arc<AtomicUsize>,
        replies: Vec<oneshot::Receiver<Result<Predictions, String>>>,
    }

    impl Harness {
        /// Starts a batcher on the current (single-threaded) runtime; `last_batch_jobs` is the
        /// concurrency it has seen before.
        fn start(window: Duration, last_batch_jobs: usize) -> Harness {
            let (queue, requests) = mpsc::channel(64);
            let (work, batches) = std::sync::mpsc::channel();
            let permits = Arc::new(Semaphore::new(1));
            let last_batch_jobs = Arc::new(AtomicUsize::new(last_batch_jobs));
            tokio::spawn(batcher(
                requests,
                work,
                permits.clone(),
                BatchPolicy {
                    max_rows: 64,
                    delay: Duration::ZERO,
                    window,
                },
                last_batch_jobs.clone(),
                None,
            ));
            Harness {
                queue,
                batches,
                permits,
                last_batch_jobs,
                replies: Vec::new(),
            }
        }

        async fn send(&mut self) {
            let (reply, answer) = oneshot::channel();
            self.replies.push(answer);
            let job = Job {
                columns: Columns {
                    rows: 1,
                    data: Vec::new(),
                },
                enqueued: Instant::now(),
                reply,
            };
            assert!(self.queue.send(job).await.is_ok());
        }

        /// Lets the batcher run `rounds` times; true if it sent no batch meanwhile.
        async fn idle(&self, rounds: usize) -> bool {
            for _ in 0..rounds {
                tokio::task::yield_now().await;
            }
            self.batches.try_recv().is_err()
        }

        /// The next batch's size. The guard only stops a broken batcher from hanging the test;
        /// the windows below are far longer, so a batch that waited for its window fails here.
        async fn next_batch(&self) -> usize {
            let wait = async {
                loop {
                    if let Ok(batch) = self.batches.try_recv() {
                        return batch.jobs.len();
                    }
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(60), wait)
                .await
                .expect("a batch within the guard")
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_lone_request_is_not_held_for_the_window() {
        let mut harness = Harness::start(HOUR, 1);
        harness.send().await;
        assert_eq!(harness.next_batch().await, 1);
        assert_eq!(harness.last_batch_jobs.load(Ordering::Relaxed), 1);
        assert_eq!(harness.replies.len(), 1);
    }

    #[tokio::test]
    async fn requests_queued_behind_a_busy_thread_form_one_batch() {
        let mut harness = Harness::start(HOUR, 1);
        let busy = harness.permits.clone().acquire_owned().await.unwrap();
        for _ in 0..5 {
            harness.send().await;
        }
        assert!(harness.idle(10).await, "no batch while the thread is busy");
        drop(busy);
        assert_eq!(harness.next_batch().await, 5);
        // The batch remembers the concurrency, which turns the direct path off.
        assert_eq!(harness.last_batch_jobs.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn a_batch_waits_for_the_clients_of_the_last_one() {
        let mut harness = Harness::start(HOUR, 3);
        harness.send().await;
        assert!(harness.idle(10).await, "one of three: keeps gathering");
        harness.send().await;
        assert!(harness.idle(10).await, "two of three: keeps gathering");
        harness.send().await;
        assert_eq!(harness.next_batch().await, 3);
    }

    #[tokio::test]
    async fn concurrency_that_stops_is_forgotten_after_one_window() {
        // A short window: the lone request after a burst waits it out once, then the batcher
        // is back to running lone requests at once.
        let mut harness = Harness::start(Duration::from_millis(5), 8);
        harness.send().await;
        assert_eq!(harness.next_batch().await, 1);
        assert_eq!(harness.last_batch_jobs.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn without_a_window_the_batcher_keeps_the_direct_path_on() {
        let mut harness = Harness::start(Duration::ZERO, 1);
        let busy = harness.permits.clone().acquire_owned().await.unwrap();
        for _ in 0..4 {
            harness.send().await;
        }
        assert!(harness.idle(10).await);
        drop(busy);
        assert_eq!(harness.next_batch().await, 4);
        assert_eq!(harness.last_batch_jobs.load(Ordering::Relaxed), 1);
    }
}
