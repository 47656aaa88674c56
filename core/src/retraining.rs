//! When production feedback should start a retraining study, and what that study is.
//!
//! The operator (from a ModelDeployment's `spec.retraining`) and `flywheel retrain` (on one
//! machine) both call [`evaluate`] with what they observed of the serving model, and, when a
//! trigger fires, [`child_study`] for the study to run: the parent's spec on the parent's data
//! plus the labelled production rows, warm-started from the parent's best trials, its winner
//! headed for the shadow gate rather than straight into service.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{
    Promotion, PromotionPolicy, RetrainingPolicy, Study, StudyOrigin, StudySpec, WarmStart,
};
use crate::feedback::{ErrorSlice, OnlineMetric};

/// Labelled predictions the metric triggers need when `minSamples` is not set.
pub const DEFAULT_MIN_SAMPLES: u64 = 30;

/// Trigger names, as recorded in `spec.origin.trigger`.
pub mod trigger {
    pub const NEW_LABELS: &str = "NewLabels";
    pub const METRIC_THRESHOLD: &str = "MetricThreshold";
    pub const DEGRADATION: &str = "Degradation";
    pub const MODEL_AGE: &str = "ModelAge";
}

/// What is known about the serving model in production.
#[derive(Clone, Debug, PartialEq)]
pub struct ServingState {
    /// Online accuracy or RMSE of the serving version on its labelled predictions.
    pub online: Option<OnlineMetric>,
    /// Labelled predictions of the serving version (since it was promoted).
    pub new_labels: u64,
    /// The serving model's validation metrics from training (its model card).
    pub training_metrics: BTreeMap<String, f64>,
    /// Seconds since the serving version was promoted.
    pub model_age_seconds: Option<u64>,
}

/// A trigger that fired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// One of [`trigger`].
    pub reason: String,
    /// What was observed, with the numbers.
    pub message: String,
}

/// The first trigger of `policy` that fires, in the order: online metric below the threshold,
/// degradation from training, new labels, model age (the order says which reason is the most
/// telling when several hold).
pub fn evaluate(policy: &RetrainingPolicy, state: &ServingState) -> Option<Trigger> {
    let min_samples = policy.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES);
    if let Some(online) = state.online.filter(|o| o.samples >= min_samples) {
        // Accuracy: higher is better; RMSE: lower is better.
        let lower_is_better = online.name == "rmse";
        let worse_than = |value: f64, reference: f64| {
            if lower_is_better {
                value > reference
            } else {
                value < reference
            }
        };
        if let Some(threshold) = policy.metric_threshold
            && worse_than(online.value, threshold)
        {
            return Some(Trigger {
                reason: trigger::METRIC_THRESHOLD.into(),
                message: format!(
                    "online {} {:.4} on {} labelled predictions is {} the threshold {threshold}",
                    online.name,
                    online.value,
                    online.samples,
                    if lower_is_better { "above" } else { "below" }
                ),
            });
        }
        if let Some(margin) = policy.max_degradation
            && let Some(trained) = state.training_metrics.get(online.name).copied()
        {
            let degradation = if lower_is_better {
                online.value - trained
            } else {
                trained - online.value
            };
            if degradation > margin {
                return Some(Trigger {
                    reason: trigger::DEGRADATION.into(),
                    message: format!(
                        "online {} {:.4} is {degradation:.4} worse than {trained:.4} in training (margin {margin})",
                        online.name, online.value
                    ),
                });
            }
        }
    }
    if let Some(wanted) = policy.min_new_labels
        && state.new_labels >= wanted
    {
        return Some(Trigger {
            reason: trigger::NEW_LABELS.into(),
            message: format!(
                "{} new labelled predictions (policy: {wanted})",
                state.new_labels
            ),
        });
    }
    if let Some(limit) = policy.max_model_age_seconds
        && let Some(age) = state.model_age_seconds
        && age > limit
    {
        return Some(Trigger {
            reason: trigger::MODEL_AGE.into(),
            message: format!("the model is {age} s old (policy: {limit} s)"),
        });
    }
    None
}

/// The retraining generation of a study that retrains `parent`: one past the parent's (an
/// original study is generation 0).
pub fn next_generation(parent: &StudySpec) -> u32 {
    parent.origin.as_ref().map_or(1, |o| o.generation + 1)
}

/// The name of retraining generation `generation` of a study family: `churn` → `churn-g1` →
/// `churn-g2`.
pub fn child_name(parent: &str, generation: u32) -> String {
    let base = match parent.rsplit_once("-g") {
        Some((base, digits))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => parent,
    };
    format!("{base}-g{generation}")
}

/// Everything a child study records about why it exists.
#[derive(Clone, Debug, PartialEq)]
pub struct Retraining {
    pub trigger: Trigger,
    /// Where the parent's data plus the labelled production rows are.
    pub dataset_uri: String,
    pub production_rows: u64,
    pub error_slices: Vec<ErrorSlice>,
}

/// The retraining study of `parent` (named `parent_name`): same task, metric and search space,
/// the new dataset, warm-started from the parent's trials, budget from the policy's template,
/// its winner deployed as the shadow of the parent's ModelDeployment.
pub fn child_study(
    parent_name: &str,
    parent: &StudySpec,
    policy: &RetrainingPolicy,
    retraining: Retraining,
) -> Study {
    child_study_at(
        parent_name,
        parent,
        policy,
        retraining,
        next_generation(parent),
    )
}

/// [`child_study`] as generation `generation` of the family: past the parent's next one when
/// earlier attempts on the same parent were spent (their candidates rejected, or no winner).
pub fn child_study_at(
    parent_name: &str,
    parent: &StudySpec,
    policy: &RetrainingPolicy,
    retraining: Retraining,
    generation: u32,
) -> Study {
    let mut spec = parent.clone();
    spec.dataset.uri = retraining.dataset_uri;
    if let Some(budget) = &policy.budget {
        spec.budget = budget.clone();
    }
    let top_k = parent.warm_start.as_ref().and_then(|w| w.top_k);
    spec.warm_start = Some(WarmStart {
        studies: vec![parent_name.to_string()],
        top_k,
        configurations: Vec::new(),
    });
    spec.promotion = parent.promotion.as_ref().map(|p| Promotion {
        deployment: p.deployment.clone(),
        policy: PromotionPolicy::Shadow,
    });
    let mut ancestors = vec![parent_name.to_string()];
    ancestors.extend(
        parent
            .origin
            .iter()
            .flat_map(|o| o.ancestors.iter().cloned()),
    );
    spec.origin = Some(StudyOrigin {
        parent_study: parent_name.to_string(),
        generation,
        ancestors,
        trigger: retraining.trigger.reason,
        message: retraining.trigger.message,
        production_rows: retraining.production_rows,
        error_slices: retraining.error_slices,
    });
    Study::new(&child_name(parent_name, generation), spec)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn state(name: &'static str, value: f64, samples: u64) -> ServingState {
        ServingState {
            online: Some(OnlineMetric {
                name,
                value,
                samples,
            }),
            new_labels: samples,
            training_metrics: BTreeMap::from([
                ("accuracy".to_string(), 0.95),
                ("rmse".to_string(), 2.0),
            ]),
            model_age_seconds: Some(100),
        }
    }

    #[test]
    fn each_trigger_fires_on_its_own_evidence() {
        let threshold = RetrainingPolicy {
            metric_threshold: Some(0.9),
            ..RetrainingPolicy::default()
        };
        let fired = evaluate(&threshold, &state("accuracy", 0.8, 50)).unwrap();
        assert_eq!(fired.reason, trigger::METRIC_THRESHOLD);
        assert!(fired.message.contains("0.8000"), "{}", fired.message);
        assert_eq!(
            evaluate(&threshold, &state("accuracy", 0.8, 10)),
            None,
            "too few labels to judge"
        );
        assert_eq!(evaluate(&threshold, &state("accuracy", 0.93, 50)), None);
        // For an error metric the threshold is a ceiling.
        let ceiling = RetrainingPolicy {
            metric_threshold: Some(2.5),
            ..RetrainingPolicy::default()
        };
        assert!(evaluate(&ceiling, &state("rmse", 3.0, 50)).is_some());
        assert!(evaluate(&ceiling, &state("rmse", 2.0, 50)).is_none());

        let degradation = RetrainingPolicy {
            max_degradation: Some(0.05),
            ..RetrainingPolicy::default()
        };
        assert_eq!(
            evaluate(&degradation, &state("accuracy", 0.85, 50))
                .unwrap()
                .reason,
            trigger::DEGRADATION
        );
        assert_eq!(evaluate(&degradation, &state("accuracy", 0.92, 50)), None);

        let labels = RetrainingPolicy {
            min_new_labels: Some(40),
            ..RetrainingPolicy::default()
        };
        assert_eq!(
            evaluate(&labels, &state("accuracy", 0.99, 40))
                .unwrap()
                .reason,
            trigger::NEW_LABELS
        );
        assert_eq!(evaluate(&labels, &state("accuracy", 0.99, 39)), None);

        let age = RetrainingPolicy {
            max_model_age_seconds: Some(60),
            ..RetrainingPolicy::default()
        };
        assert_eq!(
            evaluate(&age, &state("accuracy", 0.99, 1)).unwrap().reason,
            trigger::MODEL_AGE
        );
        assert_eq!(
            evaluate(&RetrainingPolicy::default(), &state("accuracy", 0.1, 1000)),
            None
        );
    }

    #[test]
    fn children_continue_the_parent_towards_the_shadow_gate() {
        assert_eq!(child_name("churn", 1), "churn-g1");
        assert_eq!(child_name("churn-g1", 2), "churn-g2");
        assert_eq!(child_name("model-gpu", 1), "model-gpu-g1");

        let parent: StudySpec = serde_json::from_value(serde_json::json!({
            "dataset": {"uri": "data/train.csv", "target": "y"},
            "objective": {"metric": "accuracy"},
            "budget": {"maxTrials": 20},
            "promotion": {"deployment": "churn"},
        }))
        .unwrap();
        let policy = RetrainingPolicy {
            budget: Some(serde_json::from_value(serde_json::json!({"maxTrials": 6})).unwrap()),
            ..RetrainingPolicy::default()
        };
        let retraining = |message: &str| Retraining {
            trigger: Trigger {
                reason: trigger::NEW_LABELS.into(),
                message: message.into(),
            },
            dataset_uri: "data/train-g1.csv".into(),
            production_rows: 120,
            error_slices: Vec::new(),
        };
        let child = child_study("churn", &parent, &policy, retraining("120 labels"));
        assert_eq!(child.metadata.name.as_deref(), Some("churn-g1"));
        assert_eq!(child.spec.dataset.uri, "data/train-g1.csv");
        assert_eq!(child.spec.budget.max_trials, 6);
        assert_eq!(child.spec.warm_start.as_ref().unwrap().studies, ["churn"]);
        let promotion = child.spec.promotion.as_ref().unwrap();
        assert_eq!(
            (promotion.deployment.as_str(), promotion.policy),
            ("churn", PromotionPolicy::Shadow)
        );
        let origin = child.spec.origin.as_ref().unwrap();
        assert_eq!(
            (
                origin.parent_study.as_str(),
                origin.generation,
                origin.production_rows
            ),
            ("churn", 1, 120)
        );

        let grandchild = child_study(
            "churn-g1",
            &child.spec,
            &RetrainingPolicy::default(),
            retraining("again"),
        );
        assert_eq!(grandchild.metadata.name.as_deref(), Some("churn-g2"));
        let origin = grandchild.spec.origin.unwrap();
        assert_eq!(origin.generation, 2);
        assert_eq!(origin.ancestors, ["churn-g1", "churn"]);
        assert_eq!(
            grandchild.spec.budget.max_trials, 6,
            "without a template the parent's budget"
        );
    }
}
