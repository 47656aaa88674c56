//! Command-line flags and their environment variables.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Serves one Flywheel model (model.onnx + model.json) over KServe V1 and Open Inference
/// Protocol V2.
#[derive(Clone, Debug, Parser)]
#[command(name = "flywheel-server", version, about)]
pub struct Config {
    /// Folder holding model.onnx and model.json, as the trainer writes it: a path, a file:// URI
    /// or an s3://bucket/prefix URI (downloaded into --model-cache-dir; credentials from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_REGION and AWS_ENDPOINT_URL).
    #[arg(long, env = "FLYWHEEL_MODEL_DIR")]
    pub model_dir: PathBuf,

    /// Where models from s3:// sources are downloaded to and loaded from. Versions no longer
    /// served are removed from it on reload.
    #[arg(
        long,
        env = "FLYWHEEL_MODEL_CACHE_DIR",
        default_value = "/tmp/flywheel-model-cache"
    )]
    pub model_cache_dir: PathBuf,

    /// Name the model is served under; defaults to the model folder's name.
    #[arg(long, env = "FLYWHEEL_MODEL_NAME")]
    pub model_name: Option<String>,

    /// Address to listen on.
    #[arg(long, env = "FLYWHEEL_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,

    /// Most rows run through ONNX Runtime in one call; requests queued together are merged up
    /// to this size (a single larger request still runs whole).
    #[arg(long, env = "FLYWHEEL_MAX_BATCH_SIZE", default_value_t = 64)]
    pub max_batch_size: usize,

    /// How long a batch waits for more requests after the first one arrives, every time, even
    /// on an idle server. 0 (the default) leaves the waiting to --batch-window-micros.
    #[arg(long, env = "FLYWHEEL_MAX_BATCH_DELAY_MICROS", default_value_t = 0)]
    pub max_batch_delay_micros: u64,

    /// The adaptive batch window, used when --max-batch-delay-micros is 0: once requests are
    /// seen arriving together, a batch keeps gathering while more keep arriving, or until it
    /// holds as many requests as the previous batch, for at most this long after a thread is
    /// free. A lone request on a quiet server still runs at once. 0 turns the window off:
    /// batches then take only what queued up while the inference threads were busy.
    #[arg(long, env = "FLYWHEEL_BATCH_WINDOW_MICROS", default_value_t = 1000)]
    pub batch_window_micros: u64,

    /// Requests waiting for inference before new ones are refused with 429.
    #[arg(long, env = "FLYWHEEL_MAX_QUEUE_SIZE", default_value_t = 1024)]
    pub max_queue_size: usize,

    /// Most instances (rows) accepted in one request.
    #[arg(long, env = "FLYWHEEL_MAX_INSTANCES", default_value_t = 4096)]
    pub max_instances: usize,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "FLYWHEEL_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Time a prediction may take, queueing included, before the client gets 504.
    #[arg(long, env = "FLYWHEEL_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// OS threads running ONNX Runtime, each with its own session; batches run in parallel
    /// across them.
    #[arg(long, env = "FLYWHEEL_INFERENCE_THREADS", default_value_t = 1)]
    pub inference_threads: usize,

    /// ONNX Runtime intra-op threads per session (0: ONNX Runtime decides). Tabular models are
    /// small, so 1 avoids thread hand-offs that cost more than they save.
    #[arg(long, env = "FLYWHEEL_INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// Bearer token required on the predict, infer, feedback and model-load routes; unset leaves
    /// them open.
    #[arg(long, env = "FLYWHEEL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Folder of the prediction log (JSON-lines segments of predictions and feedback); unset
    /// turns the log off. Every logged record is fsynced before its response goes out.
    #[arg(long, env = "FLYWHEEL_LOG_DIR")]
    pub log_dir: Option<PathBuf>,

    /// Size at which the prediction log starts a new segment file, in bytes.
    #[arg(long, env = "FLYWHEEL_LOG_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub log_segment_bytes: u64,

    /// Also start a new segment this often (seconds) when the open one holds records, so that
    /// with --log-archive-uri every record is archived within about this time; 0: by size only.
    /// The operator sets it for a ModelDeployment with a retraining policy.
    #[arg(long, env = "FLYWHEEL_LOG_SEGMENT_SECONDS", default_value_t = 0)]
    pub log_segment_seconds: u64,

    /// Folder in the artifact store that closed prediction-log segments are copied to (an
    /// s3://bucket/prefix URI, a file:// URI or a path), under a sub-folder per server run. Each
    /// segment is uploaded in the background once rotated (or at shutdown), retried until it
    /// succeeds, and removed locally only then. Needs --log-dir.
    #[arg(long, env = "FLYWHEEL_LOG_ARCHIVE_URI", requires = "log_dir")]
    pub log_archive_uri: Option<String>,

    /// Recent predictions kept in memory for joining feedback; the oldest are evicted, and
    /// feedback for them is reported as unknown (it is still logged). 0 keeps none.
    #[arg(long, env = "FLYWHEEL_FEEDBACK_WINDOW", default_value_t = 100_000)]
    pub feedback_window: usize,

    /// Labelled predictions per model version that the online metrics cover.
    #[arg(long, env = "FLYWHEEL_STATS_WINDOW", default_value_t = 1000)]
    pub stats_window: usize,

    /// Seconds between checks of the model folder for a new version (model.json's content,
    /// model.onnx's size and modification time); a change that stays put for one interval is
    /// hot-reloaded. 0 turns watching off.
    #[arg(long, env = "FLYWHEEL_WATCH_INTERVAL_SECONDS", default_value_t = 0)]
    pub watch_interval_seconds: u64,

    /// Folder of a shadow model (a path or a file:// URI): it receives a copy of every
    /// prediction request off the hot path, and its predictions go to the prediction log only,
    /// never to clients. Unset: no shadow.
    #[arg(long, env = "FLYWHEEL_SHADOW_MODEL_DIR")]
    pub shadow_model_dir: Option<PathBuf>,

    /// Inference threads of the shadow model. Mirrored requests that find the shadow's queue
    /// full are dropped (and counted), so a small number bounds the CPU the shadow takes.
    #[arg(long, env = "FLYWHEEL_SHADOW_INFERENCE_THREADS", default_value_t = 1)]
    pub shadow_inference_threads: usize,

    /// Shut down gracefully once the process with this pid is gone. `flywheel run` passes its own
    /// pid, so a server it started never outlives it, even after `kill -9`.
    #[arg(long, env = "FLYWHEEL_PARENT_PID")]
    pub parent_pid: Option<u32>,

    /// The ONNX Runtime shared library (scripts/fetch-onnxruntime.sh puts it in
    /// .tools/onnxruntime/).
    #[arg(long, env = "ORT_DYLIB_PATH", default_value = "libonnxruntime.so")]
    pub ort_dylib_path: PathBuf,
}

impl Config {
    /// A config for `model_dir` with every other flag at its default, for tests and embedding.
    pub fn for_model_dir(model_dir: impl Into<PathBuf>) -> Config {
        Config {
            model_dir: model_dir.into(),
            model_cache_dir: PathBuf::from("/tmp/flywheel-model-cache"),
            model_name: None,
            listen: "127.0.0.1:0".to_string(),
            max_batch_size: 64,
            max_batch_delay_micros: 0,
            batch_window_micros: 1000,
            max_queue_size: 1024,
            max_instances: 4096,
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout_ms: 10_000,
            inference_threads: 1,
            intra_op_threads: 1,
            auth_token: None,
            log_dir: None,
            log_segment_bytes: 64 * 1024 * 1024,
            log_segment_seconds: 0,
            log_archive_uri: None,
            feedback_window: 100_000,
            stats_window: 1000,
            watch_interval_seconds: 0,
            shadow_model_dir: None,
            shadow_inference_threads: 1,
            parent_pid: None,
            ort_dylib_path: std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("libonnxruntime.so")),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_micros(self.max_batch_delay_micros)
    }

    pub fn batch_window(&self) -> Duration {
        Duration::from_micros(self.batch_window_micros)
    }

    /// How often the model folder is checked for a new version; `None` when watching is off.
    pub fn watch_interval(&self) -> Option<Duration> {
        (self.watch_interval_seconds > 0).then(|| Duration::from_secs(self.watch_interval_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_for_model_dir() {
        let parsed = Config::try_parse_from([
            "flywheel-server",
            "--model-dir",
            "m",
            "--listen",
            "127.0.0.1:0",
            "--ort-dylib-path",
            "x.so",
        ])
        .unwrap();
        let mut built = Config::for_model_dir("m");
        built.ort_dylib_path = "x.so".into();
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
    }
}
