//! The operator's Prometheus metrics, served at `/metrics` in the OpenMetrics text format.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use flywheel_core::api::{StudyPhase, StudyStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// study, trial or modeldeployment.
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    /// A short, stable label of the error kind.
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StudyLabels {
    pub namespace: String,
    pub study: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub namespace: String,
    pub deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StudyPhaseLabels {
    pub namespace: String,
    pub study: String,
    pub phase: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the operator records; registered once in [`Metrics::new`].
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    trials: Family<StudyPhaseLabels, Gauge>,
    best_objective: Family<StudyLabels, FloatGauge>,
    stats_poll_failures: Family<DeploymentLabels, Counter>,
    leader: Gauge,
}

fn reconcile_histogram() -> Histogram {
    // 1 ms .. ~16 s: a reconcile is a few API round trips, unless the API server is struggling.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flywheel_operator");
        let metrics = Metrics {
            registry: Registry::default(),
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(reconcile_histogram),
            trials: Family::default(),
            best_objective: Family::default(),
            stats_poll_failures: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller and error kind",
            metrics.errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile, by controller",
            metrics.duration.clone(),
        );
        registry.register(
            "study_trials",
            "Trials of each study by phase",
            metrics.trials.clone(),
        );
        registry.register(
            "study_best_objective",
            "Objective value of each study's best trial",
            metrics.best_objective.clone(),
        );
        registry.register(
            "stats_poll_failures",
            "Server replicas whose stats could not be read, by ModelDeployment (the closed loop is blind to them)",
            metrics.stats_poll_failures.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            metrics.leader.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn reconciled(&self, controller: &str, took: Duration) {
        let labels = ControllerLabels {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn failed(&self, controller: &str, error: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                error: error.into(),
            })
            .inc();
    }

    /// Records a study's trial counts and best objective as last planned.
    pub fn study(&self, namespace: &str, study: &str, status: &StudyStatus) {
        let counts = &status.trials;
        for (phase, count) in [
            ("Pending", counts.pending),
            ("Running", counts.running),
            ("Succeeded", counts.succeeded),
            ("Failed", counts.failed),
            ("Pruned", counts.pruned),
        ] {
            self.trials
                .get_or_create(&StudyPhaseLabels {
                    namespace: namespace.into(),
                    study: study.into(),
                    phase: phase.into(),
                })
                .set(i64::from(count));
        }
        let labels = StudyLabels {
            namespace: namespace.into(),
            study: study.into(),
        };
        match &status.best_trial {
            Some(best) => {
                self.best_objective
                    .get_or_create(&labels)
                    .set(best.objective);
            }
            None if status.phase == StudyPhase::Pending => {}
            None => {
                self.best_objective.remove(&labels);
            }
        }
    }

    /// Drops a deleted study's series, so label cardinality follows the live studies.
    pub fn forget_study(&self, namespace: &str, study: &str) {
        for phase in ["Pending", "Running", "Succeeded", "Failed", "Pruned"] {
            self.trials.remove(&StudyPhaseLabels {
                namespace: namespace.into(),
                study: study.into(),
                phase: phase.into(),
            });
        }
        self.best_objective.remove(&StudyLabels {
            namespace: namespace.into(),
            study: study.into(),
        });
    }

    /// Counts the server replicas of a ModelDeployment whose stats a poll could not read. The
    /// series exists (at 0) from the first poll, so an alert can watch its rate.
    pub fn stats_poll_failures(&self, namespace: &str, deployment: &str, failures: usize) {
        let counter = self.stats_poll_failures.get_or_create(&DeploymentLabels {
            namespace: namespace.into(),
            deployment: deployment.into(),
        });
        counter.inc_by(u64::try_from(failures).unwrap_or(u64::MAX));
    }

    /// Drops a deleted ModelDeployment's series.
    pub fn forget_deployment(&self, namespace: &str, deployment: &str) {
        self.stats_poll_failures.remove(&DeploymentLabels {
            namespace: namespace.into(),
            deployment: deployment.into(),
        });
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use flywheel_core::api::{BestTrial, TrialCounts};
    use flywheel_core::search::space::Family as ModelFamily;

    use super::*;

    #[test]
    fn study_metrics_follow_the_status() {
        let metrics = Metrics::new();
        metrics.reconciled("study", Duration::from_millis(3));
        metrics.failed("trial", "kube");
        let status = StudyStatus {
            phase: StudyPhase::Running,
            trials: TrialCounts {
                running: 2,
                succeeded: 3,
                ..TrialCounts::default()
            },
            best_trial: Some(BestTrial {
                name: "s-1".into(),
                family: ModelFamily::Logistic,
                params: Default::default(),
                objective: 0.875,
                metrics: Default::default(),
                artifact_uri: None,
                holdout_metrics: Default::default(),
                tie_broken_by: None,
            }),
            ..StudyStatus::default()
        };
        metrics.study("ns", "s", &status);
        let text = metrics.encode();
        assert!(
            text.contains(r#"flywheel_operator_reconciles_total{controller="study"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"flywheel_operator_reconcile_errors_total{controller="trial",error="kube"} 1"#
        ));
        assert!(text.contains(
            r#"flywheel_operator_study_trials{namespace="ns",study="s",phase="Succeeded"} 3"#
        ));
        assert!(
            text.contains(
                r#"flywheel_operator_study_best_objective{namespace="ns",study="s"} 0.875"#
            )
        );
        metrics.forget_study("ns", "s");
        assert!(!metrics.encode().contains(r#"study="s""#));
    }
}
