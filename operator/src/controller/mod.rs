//! The Kubernetes operator: three kube-rs controllers in one process (`flywheel operator`).
//!
//! * [`study`]: Study → Trials (the core state machine decides, this applies) → promotion.
//! * [`trial`]: Trial → Job; the Job's pod log and termination message → Trial status.
//! * [`deployment`]: ModelDeployment → Deployment, Service, ServiceMonitor; rollout → status.
//!
//! Every reconcile reads what it needs from the API server, computes the desired objects with
//! the pure builders in [`crate::k8s`], and writes only what differs, so a steady state makes
//! no writes and a restarted operator converges on the same objects without duplicates (names
//! are deterministic and creates are server-side applies).

pub mod deployment;
pub mod entry;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod study;
pub mod trial;

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flywheel_core::api::{ModelDeployment, Study, Trial};
use flywheel_core::k8s_openapi::api::apps::v1::Deployment;
use flywheel_core::k8s_openapi::api::batch::v1::Job;
use flywheel_core::k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, Pod, SecretKeySelector, Service,
};
use flywheel_core::k8s_openapi::jiff::Timestamp;
use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::Error;
use crate::k8s::job::JobConfig;
use crate::k8s::serving::ServingConfig;
use crate::k8s::{ARTIFACT_MOUNT, labels};
pub use metrics::Metrics;

/// The time source of the reconcilers; tests pin it so status bodies are exact.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything a reconcile needs besides the object.
pub struct Context {
    pub client: Client,
    pub jobs: JobConfig,
    pub serving: ServingConfig,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub clock: Clock,
    /// Whether the cluster serves `monitoring.coreos.com/v1` ServiceMonitors.
    pub service_monitors: bool,
    /// How often the servers of a ModelDeployment with a retraining policy are asked for their
    /// feedback stats ([`deployment::STATS_REQUEUE`] unless the operator is told otherwise).
    pub stats_interval: Duration,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        jobs: JobConfig,
        serving: ServingConfig,
        metrics: Arc<Metrics>,
        reporter: Reporter,
        clock: Clock,
        service_monitors: bool,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            jobs,
            serving,
            metrics,
            clock,
            service_monitors,
            stats_interval: deployment::STATS_REQUEUE,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Publishes an Event on `object`. A lost event is not worth failing a reconcile for, so
    /// errors are only logged.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            warn!(%error, reason, "failed to publish event");
        }
    }

    /// The delay before retrying an object that failed `n` times in a row: 5 s doubling to 5 min.
    fn backoff(&self, key: String) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        backoff_delay(*count)
    }

    fn succeeded(&self, key: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(key);
    }
}

/// 5 s, 10 s, 20 s, … capped at 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_secs(5u64 << exponent).min(Duration::from_secs(300))
}

fn object_key<K>(object: &K) -> String
where
    K: Resource,
    K::DynamicType: Default,
{
    format!(
        "{}/{}/{}",
        K::kind(&K::DynamicType::default()),
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

/// Runs a reconciler with metrics and backoff bookkeeping.
async fn instrumented<K, F, Fut>(
    controller: &'static str,
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: Resource,
    K::DynamicType: Default,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let started = std::time::Instant::now();
    let key = object_key(object.as_ref());
    let result = reconcile(object, ctx.clone()).await;
    ctx.metrics.reconciled(controller, started.elapsed());
    match &result {
        Ok(_) => ctx.succeeded(&key),
        Err(error) => ctx.metrics.failed(controller, error.metric_label()),
    }
    result
}

fn error_policy<K>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource,
    K::DynamicType: Default,
{
    let key = object_key(object.as_ref());
    if error.metric_label() == "conflict" {
        // Someone wrote the object since it was read (routine with a Job controller and the
        // trial controller writing the same objects): the next read has the news, so this is
        // no warning; the conflict metric still counts it.
        let delay = Duration::from_secs(1);
        debug!(object = %key, %error, retry_in = ?delay, "reconcile met a concurrent write; retrying");
        return Action::requeue(delay);
    }
    let delay = ctx.backoff(key.clone());
    warn!(object = %key, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Operator-wide settings, from `flywheel operator`'s flags.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Namespace to watch; `None` watches every namespace.
    pub namespace: Option<String>,
    pub trainer_image: String,
    pub server_image: String,
    pub artifact_root: String,
    pub artifact_claim: Option<String>,
    /// Secret holding the object-store credentials, handed to trial and server pods.
    pub artifact_secret: Option<String>,
    pub trial_ttl_seconds: i32,
    /// Name of this replica (its pod name), for Events and the lease.
    pub identity: String,
}

impl OperatorConfig {
    /// Credentials from the artifact Secret as environment variables; optional keys may be
    /// absent from the Secret.
    pub fn artifact_env(&self) -> Vec<EnvVar> {
        let Some(secret) = &self.artifact_secret else {
            return Vec::new();
        };
        [
            ("AWS_ACCESS_KEY_ID", false),
            ("AWS_SECRET_ACCESS_KEY", false),
            ("AWS_REGION", true),
            ("AWS_ENDPOINT_URL", true),
        ]
        .into_iter()
        .map(|(key, optional)| EnvVar {
            name: key.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: key.into(),
                    optional: optional.then_some(true),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect()
    }

    /// Checks that trial and server pods can reach the artifact root: a `file://` root only
    /// exists in pods through `--artifact-claim`, mounted at `/artifacts`, so it must lie
    /// there; an `s3://` root is reached over the network. Anything else fails start-up with
    /// the flag to fix, instead of every trial failing later.
    pub fn check_artifact_store(&self) -> Result<(), Error> {
        let root = self.artifact_root.trim_end_matches('/');
        let problem = if root.starts_with("s3://") {
            None
        } else if let Some(scheme) = root.split_once("://").map(|(scheme, _)| scheme)
            && scheme != "file"
        {
            Some(format!(
                "--artifact-root (FLYWHEEL_ARTIFACT_ROOT) {root}: {scheme}:// is not supported; use file://{ARTIFACT_MOUNT} with --artifact-claim or s3://bucket/prefix"
            ))
        } else {
            let path = root.strip_prefix("file://").unwrap_or(root);
            let under_mount = path == ARTIFACT_MOUNT
                || path
                    .strip_prefix(ARTIFACT_MOUNT)
                    .is_some_and(|rest| rest.starts_with('/'));
            match &self.artifact_claim {
                None => Some(format!(
                    "--artifact-root (FLYWHEEL_ARTIFACT_ROOT) {root} is a file:// store, which trial and server pods only have through --artifact-claim (FLYWHEEL_ARTIFACT_CLAIM, mounted at {ARTIFACT_MOUNT}); set the claim, or use an s3:// root with --artifact-secret"
                )),
                Some(claim) if !under_mount => Some(format!(
                    "--artifact-root (FLYWHEEL_ARTIFACT_ROOT) {root} is outside {ARTIFACT_MOUNT}, where pods mount the claim {claim}; use file://{ARTIFACT_MOUNT} or a folder under it"
                )),
                Some(_) => None,
            }
        };
        match problem {
            Some(message) => Err(Error::Operator {
                message: format!("failed to check the artifact store: {message}"),
            }),
            None => Ok(()),
        }
    }

    pub fn job_config(&self) -> JobConfig {
        JobConfig {
            trainer_image: self.trainer_image.clone(),
            artifact_root: self.artifact_root.clone(),
            artifact_claim: self.artifact_claim.clone(),
            artifact_env: self.artifact_env(),
            ttl_seconds_after_finished: self.trial_ttl_seconds,
        }
    }

    pub fn serving_config(&self) -> ServingConfig {
        ServingConfig {
            server_image: self.server_image.clone(),
            artifact_root: self.artifact_root.clone(),
            artifact_claim: self.artifact_claim.clone(),
            artifact_env: self.artifact_env(),
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Whether the API server serves ServiceMonitors (the Prometheus operator is installed).
pub async fn has_service_monitors(client: &Client) -> bool {
    match kube::discovery::group(client, crate::k8s::serving::SERVICE_MONITOR_GROUP).await {
        Ok(group) => group
            .versioned_resources(crate::k8s::serving::SERVICE_MONITOR_VERSION)
            .iter()
            .any(|(resource, _)| resource.kind == "ServiceMonitor"),
        Err(_) => false,
    }
}

/// Runs the three controllers until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run_controllers(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    let studies = Controller::new(
        api::<Study>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns(
        api::<Trial>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .graceful_shutdown_on(stopped(&stop_tx))
    .run(
        |study, ctx| instrumented("study", study, ctx, study::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|result| async move { log_result("study", result) });

    let trial_pods = watcher::Config::default()
        .labels(&format!("{}=flywheel-trial", labels::NAME))
        .any_semantic();
    let trials = Controller::new(
        api::<Trial>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns(
        api::<Job>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    // Pod changes (scheduled, started, terminated) are what move a trial along; the Job
    // only changes at its end.
    .watches(api::<Pod>(&client, ns), trial_pods, |pod: Pod| {
        let namespace = pod.namespace();
        pod.labels().get(labels::TRIAL).map(|trial| {
            ObjectRef::<Trial>::new(trial).within(namespace.as_deref().unwrap_or_default())
        })
    })
    .graceful_shutdown_on(stopped(&stop_tx))
    .run(
        |trial, ctx| instrumented("trial", trial, ctx, trial::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|result| async move { log_result("trial", result) });

    let deployments = Controller::new(
        api::<ModelDeployment>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns(
        api::<Deployment>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns(
        api::<Service>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .graceful_shutdown_on(stopped(&stop_tx))
    .run(
        |md, ctx| instrumented("modeldeployment", md, ctx, deployment::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|result| async move { log_result("modeldeployment", result) });

    let signal = async move {
        shutdown.await;
        info!("shutting down: finishing in-flight reconciles");
        let _ = stop_tx.send(());
    };
    tokio::join!(studies, trials, deployments, signal);
}

fn log_result<K, E1: Debug, E2: Debug>(
    controller: &str,
    result: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E1, E2>>,
) where
    K: Resource,
    K::DynamicType: Debug + Clone + Eq + Hash,
{
    match result {
        Ok((object, _)) => tracing::debug!(controller, %object, "reconciled"),
        Err(error) => tracing::debug!(controller, ?error, "controller error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(root: &str, claim: Option<&str>) -> OperatorConfig {
        OperatorConfig {
            namespace: None,
            trainer_image: "t".into(),
            server_image: "s".into(),
            artifact_root: root.into(),
            artifact_claim: claim.map(String::from),
            artifact_secret: None,
            trial_ttl_seconds: 60,
            identity: "op".into(),
        }
    }

    fn problem(root: &str, claim: Option<&str>) -> Option<String> {
        config(root, claim)
            .check_artifact_store()
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn the_artifact_root_must_be_reachable_from_pods() {
        for (root, claim) in [
            ("file:///artifacts", Some("pvc")),
            ("file:///artifacts/", Some("pvc")),
            ("file:///artifacts/team-a", Some("pvc")),
            ("s3://bucket/prefix", None),
        ] {
            assert_eq!(problem(root, claim), None, "{root}");
        }
        let outside = problem("file:///data/flywheel", Some("pvc")).unwrap_or_default();
        assert!(
            outside.contains("--artifact-root") && outside.contains("outside /artifacts"),
            "{outside}"
        );
        let lookalike = problem("file:///artifacts2", Some("pvc")).unwrap_or_default();
        assert!(lookalike.contains("outside /artifacts"), "{lookalike}");
        let no_claim = problem("file:///artifacts", None).unwrap_or_default();
        assert!(no_claim.contains("--artifact-claim"), "{no_claim}");
        let gcs = problem("gs://bucket", None).unwrap_or_default();
        assert!(gcs.contains("gs:// is not supported"), "{gcs}");
    }
}
