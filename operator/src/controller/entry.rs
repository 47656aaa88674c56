//! `flywheel operator`: the process the Helm chart runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flywheel_core::k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::Reporter;
use tracing::{error, info};

use super::http::{Health, router};
use super::lease::{Elector, LeaseSettings};
use super::{Context, Metrics, OperatorConfig, has_service_monitors, run_controllers};
use crate::Error;

/// Settings of the operator; every flag can come from the environment (the chart sets them).
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "FLYWHEEL_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Watch only this namespace; default every namespace.
    #[arg(long, env = "FLYWHEEL_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image of the built-in trainer (trial Jobs).
    #[arg(long, env = "FLYWHEEL_TRAINER_IMAGE")]
    pub trainer_image: String,
    /// Image of the prediction server (ModelDeployments without their own image).
    #[arg(long, env = "FLYWHEEL_SERVER_IMAGE")]
    pub server_image: String,
    /// Artifact store: `file:///artifacts` with --artifact-claim, or `s3://bucket/prefix`.
    #[arg(
        long,
        env = "FLYWHEEL_ARTIFACT_ROOT",
        default_value = "file:///artifacts"
    )]
    pub artifact_root: String,
    /// PersistentVolumeClaim (in each study's namespace) mounted at /artifacts in trial and
    /// server pods; required by a file:// root, which must then lie under file:///artifacts.
    #[arg(long, env = "FLYWHEEL_ARTIFACT_CLAIM")]
    pub artifact_claim: Option<String>,
    /// Secret (in each study's namespace) with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// optional AWS_REGION, AWS_ENDPOINT_URL for an s3:// store.
    #[arg(long, env = "FLYWHEEL_ARTIFACT_SECRET")]
    pub artifact_secret: Option<String>,
    /// Seconds a finished trial Job (and its pod's logs) is kept.
    #[arg(long, env = "FLYWHEEL_TRIAL_TTL_SECONDS", default_value_t = 86_400)]
    pub trial_ttl_seconds: i32,
    /// Elect a leader among replicas with a Lease; only the leader reconciles.
    #[arg(long, env = "FLYWHEEL_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "FLYWHEEL_LEASE_NAME", default_value = "flywheel-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own, from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's name, for the Lease and Events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "flywheel-operator")]
    pub identity: String,
    /// Seconds between two reads of the feedback stats of the servers of a ModelDeployment with
    /// a retraining policy (feedback reaches the servers, not the API server, so it is polled):
    /// how soon a retraining trigger or the shadow gate sees new labels.
    #[arg(long, env = "FLYWHEEL_STATS_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub stats_interval_seconds: u64,
    /// Log format: text or json.
    #[arg(long, env = "FLYWHEEL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl OperatorArgs {
    pub fn config(&self) -> OperatorConfig {
        OperatorConfig {
            namespace: self.namespace.clone().filter(|ns| !ns.is_empty()),
            trainer_image: self.trainer_image.clone(),
            server_image: self.server_image.clone(),
            artifact_root: self.artifact_root.clone(),
            artifact_claim: self.artifact_claim.clone().filter(|c| !c.is_empty()),
            artifact_secret: self.artifact_secret.clone().filter(|s| !s.is_empty()),
            trial_ttl_seconds: self.trial_ttl_seconds,
            identity: self.identity.clone(),
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the operator until SIGTERM / Ctrl-C, or until it loses the lease.
pub fn run(args: OperatorArgs) -> Result<(), Error> {
    init_logging(&args.log_format);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Error::Operator {
        message: format!("failed to start the async runtime: {e}"),
    })?;
    runtime.block_on(serve(args))
}

async fn serve(args: OperatorArgs) -> Result<(), Error> {
    let config = args.config();
    config.check_artifact_store()?;
    let client = Client::try_default().await.map_err(|e| Error::Operator {
        message: format!(
            "failed to configure the kubernetes client: {e}; run in a pod or set KUBECONFIG"
        ),
    })?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::Operator {
            message: format!("failed to listen on {}: {e}", args.listen),
        })?;
    let app = router(Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "the metrics server stopped");
        }
    });

    let version = client
        .apiserver_version()
        .await
        .map_err(|e| Error::Operator {
            message: format!("failed to reach the kubernetes api server: {e}"),
        })?;
    info!(server = %version.git_version, "connected to the api server");
    ready.store(true, Ordering::Relaxed);
    let service_monitors = has_service_monitors(&client).await;
    info!(service_monitors, "discovered optional apis");

    let elector = args.leader_election.then(|| {
        Elector::new(
            client.clone(),
            LeaseSettings::new(
                args.lease_name.clone(),
                args.lease_namespace.clone(),
                config.identity.clone(),
            ),
        )
    });
    let elector = elector.map(Arc::new);
    if let Some(elector) = &elector {
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown_signal() => return Ok(()),
        }
        metrics.set_leader(true);
    }

    let mut ctx = Context::new(
        client,
        config.job_config(),
        config.serving_config(),
        metrics.clone(),
        Reporter {
            controller: "flywheel-operator".into(),
            instance: Some(config.identity.clone()),
        },
        Arc::new(Timestamp::now),
        service_monitors,
    );
    ctx.stats_interval = Duration::from_secs(args.stats_interval_seconds);
    let ctx = Arc::new(ctx);
    let lost = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let elector = elector.clone();
        let lost = lost.clone();
        async move {
            match elector {
                Some(elector) => tokio::select! {
                    () = elector.hold() => lost.store(true, Ordering::Relaxed),
                    () = shutdown_signal() => {}
                },
                None => shutdown_signal().await,
            }
        }
    };
    info!(namespace = ?config.namespace, "starting the study, trial and modeldeployment controllers");
    run_controllers(ctx, config.namespace.clone(), shutdown).await;
    metrics.set_leader(false);
    if lost.load(Ordering::Relaxed) {
        return Err(Error::Operator {
            message: "lost the leader lease; restarting as a candidate".into(),
        });
    }
    if let Some(elector) = elector {
        elector.release().await;
    }
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
