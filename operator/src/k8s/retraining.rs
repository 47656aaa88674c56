//! The retraining Study the operator starts when a ModelDeployment's retraining policy fires:
//! core's child study (parent's spec, warm start, budget template, origin), reading the
//! deployment's archived prediction log as extra rows, its winner headed for this deployment's
//! shadow gate.

use std::collections::BTreeMap;

use flywheel_core::api::{
    FeedbackSource, ModelDeployment, Promotion, PromotionPolicy, RetrainingPolicy, Study,
    StudyPhase,
};
use flywheel_core::feedback::ProductionSummary;
use flywheel_core::retraining::{self, Retraining, Trigger};
use kube::ResourceExt;

use super::labels;
use super::serving::{LOG_SEGMENT_SECONDS, ServingConfig, log_archive_uri};

/// Label on a retraining study naming the study it retrains.
pub const RETRAINED_FROM: &str = "flywheel.dev/retrained-from";
/// Label on a retraining study naming the ModelDeployment whose feedback started it.
pub const DEPLOYMENT: &str = "flywheel.dev/deployment";

/// How far behind now the production rows are cut: a record is in the archive once its
/// segment rotates (every [`LOG_SEGMENT_SECONDS`]) and uploads, so every trial of the study,
/// whenever it starts, reads the same rows.
pub const ARCHIVE_DELAY_SECONDS: u64 = 2 * LOG_SEGMENT_SECONDS;

/// The name of the study that retrains `parent` (the next generation).
pub fn retraining_study_name(parent: &Study) -> String {
    retraining_study_name_at(parent, retraining::next_generation(&parent.spec))
}

/// The name of generation `generation` of `parent`'s family.
pub fn retraining_study_name_at(parent: &Study, generation: u32) -> String {
    retraining::child_name(&parent.name_any(), generation)
}

/// Whether an existing retraining study of `md`'s serving model is done with, so the next
/// trigger should start the following generation instead of waiting on it: it failed (no
/// candidate), or it succeeded and its candidate, already written to the shadow (`Promoted`),
/// is no longer there: the gate rejected it. `md` must be freshly read: a stale copy from
/// before the shadow write would make a candidate awaiting its gate look rejected.
pub fn retraining_spent(child: &Study, md: &ModelDeployment) -> bool {
    let Some(status) = &child.status else {
        return false;
    };
    match status.phase {
        StudyPhase::Failed => true,
        StudyPhase::Succeeded => {
            let shadowed = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Promoted" && c.status == "True");
            let name = child.name_any();
            let still_shadow = md
                .spec
                .shadow
                .as_ref()
                .is_some_and(|s| s.study.as_deref() == Some(name.as_str()));
            shadowed && !still_shadow
        }
        StudyPhase::Pending | StudyPhase::Running => false,
    }
}

/// The retraining study of `parent`, the study that produced `md`'s serving model, started by
/// `trigger` as generation `generation`; `production` is what the servers' archive held as of
/// the cut.
pub fn retraining_study(
    md: &ModelDeployment,
    parent: &Study,
    policy: &RetrainingPolicy,
    trigger: Trigger,
    production: &ProductionSummary,
    config: &ServingConfig,
    generation: u32,
) -> Study {
    let parent_name = parent.name_any();
    let mut child = retraining::child_study_at(
        &parent_name,
        &parent.spec,
        policy,
        Retraining {
            trigger,
            dataset_uri: parent.spec.dataset.uri.clone(),
            production_rows: production.labelled_rows,
            error_slices: production.error_slices.clone(),
        },
        generation,
    );
    // A parent that itself learnt from this archive read it up to an earlier cut: the later
    // cut covers those rows too.
    let source = FeedbackSource {
        uri: log_archive_uri(md, config),
        model: md.name_any(),
        until: production.until.clone(),
    };
    child
        .spec
        .dataset
        .feedback
        .retain(|s| s.uri != source.uri || s.model != source.model);
    child.spec.dataset.feedback.push(source);
    // The candidate is judged where the feedback came from, whatever the parent promoted to.
    child.spec.promotion = Some(Promotion {
        deployment: md.name_any(),
        policy: PromotionPolicy::Shadow,
    });
    child.metadata.namespace = md.namespace();
    child.metadata.labels = Some(BTreeMap::from([
        (RETRAINED_FROM.to_string(), parent_name),
        (DEPLOYMENT.to_string(), md.name_any()),
        (labels::MANAGED_BY.to_string(), "flywheel".to_string()),
    ]));
    child
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use flywheel_core::feedback::ErrorSlice;
    use flywheel_core::retraining::trigger;

    use super::*;

    fn parent(retrained: bool) -> Study {
        let spec = if retrained {
            "\n  origin: {parentStudy: churn, generation: 1, ancestors: [churn], trigger: NewLabels, message: m}\n  \
             dataset: {uri: s3://b/data/churn.csv, target: left, feedback: [{uri: s3://b/root/ml/logs/churn, model: churn, until: '2026-11-01T00:00:00Z'}, {uri: s3://b/other, model: x}]}"
        } else {
            "\n  dataset: {uri: s3://b/data/churn.csv, target: left}"
        };
        let name = if retrained { "churn-g1" } else { "churn" };
        serde_saphyr::from_str(&format!(
            "apiVersion: flywheel.dev/v1alpha1\nkind: Study\nmetadata: {{name: {name}, namespace: ml}}\nspec:{spec}\n  \
             objective: {{metric: accuracy}}\n  budget: {{maxTrials: 20}}\n  promotion: {{deployment: elsewhere}}\n"
        ))
        .unwrap()
    }

    fn md() -> ModelDeployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "churn", "namespace": "ml"},
            "spec": {"model": {"uri": "s3://b/root/ml/churn/churn-3", "version": "churn-3", "study": "churn"}}
        }))
        .unwrap()
    }

    fn config() -> ServingConfig {
        ServingConfig {
            server_image: "server".into(),
            artifact_root: "s3://b/root".into(),
            artifact_claim: None,
            artifact_env: vec![],
        }
    }

    fn production() -> ProductionSummary {
        ProductionSummary {
            model: "churn".into(),
            until: Some("2026-11-30T10:00:00Z".into()),
            labelled_rows: 420,
            serving_version: "churn-3".into(),
            serving_rows: 400,
            online: BTreeMap::from([("accuracy".into(), 0.71)]),
            error_slices: vec![ErrorSlice {
                column: "plan".into(),
                value: "pro".into(),
                samples: 80,
                error: 0.5,
                overall_error: 0.29,
            }],
        }
    }

    fn fired() -> Trigger {
        Trigger {
            reason: trigger::METRIC_THRESHOLD.into(),
            message: "online accuracy 0.7100 is below the threshold 0.8".into(),
        }
    }

    #[test]
    fn the_study_reads_the_archive_as_of_the_cut_and_heads_for_this_shadow_gate() {
        let policy: RetrainingPolicy =
            serde_json::from_value(serde_json::json!({"budget": {"maxTrials": 6}})).unwrap();
        let parent = parent(false);
        assert_eq!(retraining_study_name(&parent), "churn-g1");
        let child = retraining_study(
            &md(),
            &parent,
            &policy,
            fired(),
            &production(),
            &config(),
            retraining::next_generation(&parent.spec),
        );
        assert_eq!(child.name_any(), "churn-g1");
        assert_eq!(child.namespace().as_deref(), Some("ml"));
        assert_eq!(child.labels()[RETRAINED_FROM], "churn");
        assert_eq!(child.labels()[DEPLOYMENT], "churn");
        assert_eq!(child.spec.dataset.uri, "s3://b/data/churn.csv");
        assert_eq!(
            child.spec.dataset.feedback,
            vec![FeedbackSource {
                uri: "s3://b/root/ml/logs/churn".into(),
                model: "churn".into(),
                until: Some("2026-11-30T10:00:00Z".into()),
            }]
        );
        let promotion = child.spec.promotion.as_ref().unwrap();
        assert_eq!(
            (promotion.deployment.as_str(), promotion.policy),
            ("churn", PromotionPolicy::Shadow)
        );
        assert_eq!(child.spec.budget.max_trials, 6);
        let origin = child.spec.origin.as_ref().unwrap();
        assert_eq!((origin.generation, origin.production_rows), (1, 420));
        assert_eq!(origin.trigger, trigger::METRIC_THRESHOLD);
        assert_eq!(origin.error_slices, production().error_slices);
        assert_eq!(
            child.spec.warm_start.as_ref().unwrap().studies,
            vec!["churn"]
        );
    }

    #[test]
    fn a_later_generation_moves_the_cut_of_the_same_archive_and_keeps_other_sources() {
        let parent = parent(true);
        assert_eq!(retraining_study_name(&parent), "churn-g2");
        let child = retraining_study(
            &md(),
            &parent,
            &RetrainingPolicy::default(),
            fired(),
            &production(),
            &config(),
            retraining::next_generation(&parent.spec),
        );
        let sources: Vec<(&str, Option<&str>)> = child
            .spec
            .dataset
            .feedback
            .iter()
            .map(|s| (s.uri.as_str(), s.until.as_deref()))
            .collect();
        assert_eq!(
            sources,
            vec![
                ("s3://b/other", None),
                ("s3://b/root/ml/logs/churn", Some("2026-11-30T10:00:00Z"))
            ]
        );
        let origin = child.spec.origin.as_ref().unwrap();
        assert_eq!(origin.generation, 2);
        assert_eq!(origin.ancestors, vec!["churn-g1", "churn"]);
    }

    fn child(phase: &str, promoted: bool) -> Study {
        let conditions = if promoted {
            serde_json::json!([{"type": "Promoted", "status": "True", "reason": "Shadow", "message": "",
                                "lastTransitionTime": "2026-11-30T10:00:00Z"}])
        } else {
            serde_json::json!([])
        };
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flywheel.dev/v1alpha1", "kind": "Study",
            "metadata": {"name": "churn-g1", "namespace": "ml"},
            "spec": serde_json::to_value(&parent(false).spec).unwrap(),
            "status": {"phase": phase, "trials": {"pending": 0, "running": 0, "succeeded": 0, "failed": 0, "pruned": 0},
                       "conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn a_retraining_study_is_spent_once_failed_or_its_candidate_left_the_shadow() {
        let serving = md();
        assert!(!retraining_spent(&child("Running", false), &serving));
        assert!(retraining_spent(&child("Failed", false), &serving));
        // Succeeded but its candidate not yet written to the shadow: it is on its way.
        assert!(!retraining_spent(&child("Succeeded", false), &serving));
        // Written and gone: the gate rejected it.
        assert!(retraining_spent(&child("Succeeded", true), &serving));
        // Written and still there: awaiting the gate.
        let mut shadowed = md();
        shadowed.spec.shadow = Some(
            serde_json::from_value(serde_json::json!(
                {"uri": "s3://b/root/ml/churn-g1/churn-g1-2", "version": "churn-g1-2", "study": "churn-g1"}
            ))
            .unwrap(),
        );
        assert!(!retraining_spent(&child("Succeeded", true), &shadowed));
        assert_eq!(retraining_study_name_at(&parent(false), 3), "churn-g3");
    }
}
