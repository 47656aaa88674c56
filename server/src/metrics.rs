//! Prometheus metrics, exposed at `/metrics` in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route template (`/v2/models/{name}/infer`), so label cardinality stays bounded.
    pub route: String,
    pub code: u16,
    pub model_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedbackLabels {
    pub model_version: String,
    /// accepted, duplicate or unknown.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// success or failure.
    pub result: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the server records; cheap to clone (the metrics are shared).
#[derive(Clone)]
pub struct Metrics {
    pub request_duration: HistogramFamily<RequestLabels>,
    pub requests: Family<RequestLabels, Counter>,
    pub queue_duration: HistogramFamily<ModelLabels>,
    pub inference_duration: HistogramFamily<ModelLabels>,
    pub batch_size: HistogramFamily<ModelLabels>,
    pub predictions: Family<ModelLabels, Counter>,
    pub queue_depth: Gauge,
    pub rejected: Counter,
    pub feedback: Family<FeedbackLabels, Counter>,
    pub online_accuracy: Family<ModelLabels, FloatGauge>,
    pub online_rmse: Family<ModelLabels, FloatGauge>,
    pub online_mae: Family<ModelLabels, FloatGauge>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub shadow_dropped: Counter,
    pub shadow_failures: Counter,
}

fn latency_histogram() -> Histogram {
    // 10µs .. ~42s: tabular inference is tens of microseconds, queueing under overload is seconds.
    Histogram::new(exponential_buckets(0.00001, 2.0, 23))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            request_duration: Family::new_with_constructor(latency_histogram),
            requests: Family::default(),
            queue_duration: Family::new_with_constructor(latency_histogram),
            inference_duration: Family::new_with_constructor(latency_histogram),
            batch_size: Family::new_with_constructor(batch_histogram),
            predictions: Family::default(),
            queue_depth: Gauge::default(),
            rejected: Counter::default(),
            feedback: Family::default(),
            online_accuracy: Family::default(),
            online_rmse: Family::default(),
            online_mae: Family::default(),
            reloads: Family::default(),
            shadow_dropped: Counter::default(),
            shadow_failures: Counter::default(),
        };
        registry.register(
            "flywheel_server_request_duration_seconds",
            "HTTP request latency by route, status code and model version",
            metrics.request_duration.clone(),
        );
        registry.register(
            "flywheel_server_requests",
            "HTTP requests by route, status code and model version",
            metrics.requests.clone(),
        );
        registry.register(
            "flywheel_server_queue_duration_seconds",
            "Time a request waited between admission and the start of its inference batch",
            metrics.queue_duration.clone(),
        );
        registry.register(
            "flywheel_server_inference_duration_seconds",
            "ONNX Runtime time per batch, tensor conversion included",
            metrics.inference_duration.clone(),
        );
        registry.register(
            "flywheel_server_batch_size",
            "Rows per ONNX Runtime call",
            metrics.batch_size.clone(),
        );
        registry.register(
            "flywheel_server_predictions",
            "Rows predicted",
            metrics.predictions.clone(),
        );
        registry.register(
            "flywheel_server_queue_depth",
            "Requests waiting for an inference thread",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "flywheel_server_queue_rejections",
            "Requests refused with 429 because the queue was full",
            metrics.rejected.clone(),
        );
        registry.register(
            "flywheel_server_feedback",
            "Feedback records by model version and outcome (accepted, duplicate, unknown)",
            metrics.feedback.clone(),
        );
        registry.register(
            "flywheel_server_online_accuracy",
            "Accuracy over the last --stats-window labelled predictions (classifiers)",
            metrics.online_accuracy.clone(),
        );
        registry.register(
            "flywheel_server_online_rmse",
            "RMSE over the last --stats-window labelled predictions (regression)",
            metrics.online_rmse.clone(),
        );
        registry.register(
            "flywheel_server_online_mae",
            "MAE over the last --stats-window labelled predictions (regression)",
            metrics.online_mae.clone(),
        );
        registry.register(
            "flywheel_server_model_reloads",
            "Model loads through the repository API or the folder watch, by result (success, failure)",
            metrics.reloads.clone(),
        );
        registry.register(
            "flywheel_server_shadow_dropped",
            "Requests not mirrored to the shadow model because its queue was full",
            metrics.shadow_dropped.clone(),
        );
        registry.register(
            "flywheel_server_shadow_failures",
            "Mirrored requests the shadow model failed to predict or log",
            metrics.shadow_failures.clone(),
        );
        metrics
    }

    /// Counts one reload attempt.
    pub fn reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ReloadLabels {
                result: result.to_string(),
            })
            .inc();
    }
}
