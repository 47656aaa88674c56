//! What a trial's Job, pod and log say about the trial: a pure function from observed
//! Kubernetes objects to the Trial status, so every rule is unit-tested without an API server.
//!
//! Everything the status holds is re-derived from objects that survive an operator restart
//! (the pod's log while the pod exists, its termination message, the Job's conditions), and
//! what was already recorded is only ever added to: reports are merged by step, a finished
//! phase is final. A restarted operator therefore rebuilds the same status and loses nothing.

use flywheel_core::api::{Report, TrialPhase, TrialStatus};
use flywheel_core::k8s_openapi::api::batch::v1::Job;
use flywheel_core::k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod, PodCondition};
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use flywheel_core::protocol::{Message, TrialResult};

/// The container that runs the trial workload in the Job's pod.
pub const TRIAL_CONTAINER: &str = "trial";
pub use flywheel_core::api::{SCHEDULED, UNSCHEDULABLE};

/// What was observed of one trial's workload.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed<'a> {
    pub job: Option<&'a Job>,
    /// The newest pod of the Job.
    pub pod: Option<&'a Pod>,
    /// The trial container's log so far (protocol report lines among ordinary output).
    pub log: Option<&'a str>,
}

/// The Trial status the observation implies. `metric` is the study's objective, `artifact_uri`
/// where the trial was told to write, `now` the time of the observation.
pub fn trial_status(
    previous: &TrialStatus,
    observed: Observed<'_>,
    metric: &str,
    artifact_uri: &str,
    now: &Time,
) -> TrialStatus {
    let mut status = previous.clone();
    if let Some(log) = observed.log {
        merge_reports(&mut status.reports, log);
    }
    if previous.phase.is_finished() {
        // The study may have stopped the trial (Pruned, TrialTimeout) while the pod still ran:
        // its decision stands, only late reports are kept.
        return status;
    }

    let pod_status = observed.pod.and_then(|pod| pod.status.as_ref());
    if let Some(pod_status) = pod_status
        && let Some(condition) =
            scheduling_condition(pod_status.conditions.as_deref().unwrap_or_default(), now)
    {
        set_condition(&mut status.conditions, condition);
    }
    let container = pod_status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|c| c.name == TRIAL_CONTAINER));
    let state = container.and_then(|c| c.state.as_ref());

    if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        finish_from_termination(&mut status, terminated, metric, artifact_uri, now);
        return status;
    }
    if let Some(failed) = job_failure(observed.job) {
        let (reason, message) = match never_placed(&status) {
            // The deadline counts from the Job's start, time Pending included: a trial that
            // never got a node did not time out training, the cluster could not place it.
            Some(why) if failed.0 == "TrialTimeout" => (
                UNSCHEDULABLE.to_string(),
                format!("the trial was never scheduled within trialTimeoutSeconds: {why}"),
            ),
            _ => failed,
        };
        status.phase = TrialPhase::Failed;
        status.reason = Some(reason);
        status.message = Some(message);
        status.completion_time = Some(now.clone());
        return status;
    }
    if let Some(running) = state.and_then(|s| s.running.as_ref()) {
        status.phase = TrialPhase::Running;
        if status.start_time.is_none() {
            status.start_time = running
                .started_at
                .clone()
                .or_else(|| pod_status.and_then(|s| s.start_time.clone()))
                .or_else(|| Some(now.clone()));
        }
    }
    status
}

/// Adds the log's report lines to `reports`, keeping one report per step (the latest seen)
/// in step order; reports already recorded survive a log that no longer shows them.
pub fn merge_reports(reports: &mut Vec<Report>, log: &str) {
    let mut changed = false;
    for line in log.lines() {
        let Some(Message::Report(report)) = Message::parse_line(line) else {
            continue;
        };
        match reports.iter_mut().find(|r| r.step == report.step) {
            Some(existing) if *existing == report => {}
            Some(existing) => {
                *existing = report;
                changed = true;
            }
            None => {
                reports.push(report);
                changed = true;
            }
        }
    }
    if changed {
        reports.sort_by_key(|r| r.step);
    }
}

/// The `Scheduled` condition from the pod's `PodScheduled`, carrying the scheduler's reason
/// (e.g. `Unschedulable: 0/3 nodes have nvidia.com/gpu`) so `kubectl describe trial` says why a
/// GPU trial waits.
fn scheduling_condition(pod_conditions: &[PodCondition], now: &Time) -> Option<Condition> {
    let scheduled = pod_conditions.iter().find(|c| c.type_ == "PodScheduled")?;
    let holds = scheduled.status == "True";
    Some(Condition {
        type_: SCHEDULED.into(),
        status: if holds { "True" } else { "False" }.into(),
        reason: scheduled
            .reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .unwrap_or(if holds { "Scheduled" } else { "Pending" })
            .to_string(),
        message: scheduled.message.clone().unwrap_or_default(),
        last_transition_time: scheduled
            .last_transition_time
            .clone()
            .unwrap_or_else(|| now.clone()),
        observed_generation: None,
    })
}

/// Replaces the condition of the same type, keeping its transition time while its status holds.
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

fn finish_from_termination(
    status: &mut TrialStatus,
    terminated: &ContainerStateTerminated,
    metric: &str,
    artifact_uri: &str,
    now: &Time,
) {
    status.completion_time = Some(terminated.finished_at.clone().unwrap_or(now.clone()));
    if status.start_time.is_none() {
        status.start_time = terminated.started_at.clone();
    }
    let message = terminated.message.as_deref().unwrap_or_default();
    match serde_json::from_str::<TrialResult>(message.trim()) {
        Ok(result) => result.apply_to(status, Some(terminated.exit_code), metric, artifact_uri),
        Err(_) => {
            status.phase = TrialPhase::Failed;
            let killed = terminated.reason.as_deref() == Some("OOMKilled");
            status.reason = Some(if killed { "OOMKilled" } else { "Crashed" }.into());
            // With FallbackToLogsOnError the message is the log's tail when the trial wrote
            // no result: the most useful explanation there is.
            let skip = message.chars().count().saturating_sub(1024);
            let tail: String = message.chars().skip(skip).collect();
            status.message = Some(format!(
                "the trial exited with code {} and wrote no result{}",
                terminated.exit_code,
                if tail.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", tail.trim())
                }
            ));
        }
    }
}

/// The scheduler's message for a trial whose pod never started and was last seen unschedulable.
fn never_placed(status: &TrialStatus) -> Option<&str> {
    if status.start_time.is_some() {
        return None;
    }
    status
        .conditions
        .iter()
        .find(|c| c.type_ == SCHEDULED && c.status == "False" && c.reason == UNSCHEDULABLE)
        .map(|c| c.message.as_str())
}

/// A Job that failed without a terminated trial container to explain it: the deadline
/// (`activeDeadlineSeconds` from `trialTimeoutSeconds`) or a pod that never ran.
fn job_failure(job: Option<&Job>) -> Option<(String, String)> {
    let conditions = job?.status.as_ref()?.conditions.as_ref()?;
    let failed = conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    let reason = match failed.reason.as_deref() {
        Some("DeadlineExceeded") => "TrialTimeout".to_string(),
        Some(other) if !other.is_empty() => other.to_string(),
        _ => "JobFailed".to_string(),
    };
    let message = failed
        .message
        .clone()
        .unwrap_or_else(|| "the trial's Job failed".into());
    Some((reason, message))
}

/// Whether the trial's workload ended on its own: its newest pod finished or its trial container
/// terminated. Such a Job is kept for its TTL (`kubectl logs job/<trial>` explains the result)
/// even while the Job controller has not yet marked it finished.
pub fn workload_ended(pod: Option<&Pod>) -> bool {
    let Some(status) = pod.and_then(|p| p.status.as_ref()) else {
        return false;
    };
    let pod_done = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let container_done = status
        .container_statuses
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.name == TRIAL_CONTAINER)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|state| state.terminated.is_some());
    pod_done || container_done
}

/// Whether the Job still has (or may still start) a pod.
pub fn job_is_active(job: &Job) -> bool {
    let Some(status) = &job.status else {
        return true;
    };
    let finished = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    !finished
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use flywheel_core::k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use flywheel_core::k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStatus, PodStatus,
    };
    use flywheel_core::k8s_openapi::jiff::Timestamp;
    use flywheel_core::protocol::{FailureReason, Outcome};

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn pod(state: ContainerState, conditions: Vec<PodCondition>) -> Pod {
        Pod {
            status: Some(PodStatus {
                conditions: Some(conditions),
                container_statuses: Some(vec![ContainerStatus {
                    name: TRIAL_CONTAINER.into(),
                    state: Some(state),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn running(since: i64) -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(at(since)),
            }),
            ..ContainerState::default()
        }
    }

    fn terminated(code: i32, message: &str, reason: Option<&str>) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                message: Some(message.into()),
                reason: reason.map(String::from),
                started_at: Some(at(100)),
                finished_at: Some(at(160)),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }
    }

    fn scheduled(status: &str, reason: Option<&str>, message: Option<&str>) -> PodCondition {
        PodCondition {
            type_: "PodScheduled".into(),
            status: status.into(),
            reason: reason.map(String::from),
            message: message.map(String::from),
            last_transition_time: Some(at(90)),
            ..PodCondition::default()
        }
    }

    const LOG: &str = "loading adult.csv\n\
        {\"flywheel\":\"report\",\"step\":1,\"metrics\":{\"accuracy\":0.8}}\n\
        not json {\"flywheel\"\n\
        {\"flywheel\":\"report\",\"step\":2,\"metrics\":{\"accuracy\":0.85}}\n";

    #[test]
    fn a_running_pod_makes_a_running_trial_with_its_reports() {
        let pod = pod(running(100), vec![scheduled("True", None, None)]);
        let status = trial_status(
            &TrialStatus::default(),
            Observed {
                job: None,
                pod: Some(&pod),
                log: Some(LOG),
            },
            "accuracy",
            "file:///artifacts/ns/s/s-0",
            &at(120),
        );
        assert_eq!(status.phase, TrialPhase::Running);
        assert_eq!(status.start_time, Some(at(100)));
        assert_eq!(
            status.reports.iter().map(|r| r.step).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(status.conditions[0].type_, SCHEDULED);
        assert_eq!(status.conditions[0].status, "True");
    }

    #[test]
    fn reports_are_merged_by_step_and_never_lost() {
        let mut reports = vec![Report {
            step: 0,
            metrics: BTreeMap::from([("accuracy".to_string(), 0.7)]),
        }];
        merge_reports(&mut reports, LOG);
        merge_reports(&mut reports, LOG);
        assert_eq!(
            reports.iter().map(|r| r.step).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        merge_reports(&mut reports, "");
        assert_eq!(reports.len(), 3, "a rotated log keeps recorded reports");
    }

    /// The status of a trial whose pod the scheduler cannot place, observed at 120.
    fn unschedulable(message: &str) -> TrialStatus {
        let pod = pod(
            ContainerState::default(),
            vec![scheduled("False", Some("Unschedulable"), Some(message))],
        );
        trial_status(
            &TrialStatus::default(),
            Observed {
                pod: Some(&pod),
                ..Observed::default()
            },
            "accuracy",
            "u",
            &at(120),
        )
    }

    /// A Job the Job controller failed at its `activeDeadlineSeconds`.
    fn deadline_exceeded() -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("DeadlineExceeded".into()),
                    message: Some("Job was active longer than specified deadline".into()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    #[test]
    fn an_unschedulable_pod_carries_the_schedulers_reason() {
        let message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.";
        let status = unschedulable(message);
        assert_eq!(status.phase, TrialPhase::Pending);
        let condition = &status.conditions[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "Unschedulable")
        );
        assert_eq!(condition.message, message);
        assert_eq!(condition.last_transition_time, at(90));
    }

    #[test]
    fn the_termination_message_is_the_result() {
        let mut result = TrialResult::failed(FailureReason::Internal, "");
        result.outcome = Outcome::Succeeded;
        result.reason = None;
        result.message = None;
        result.metrics.insert("accuracy".into(), 0.87);
        result.model_bytes = Some(2048);
        let pod = pod(
            terminated(0, &result.to_termination_message(), None),
            vec![],
        );
        let status = trial_status(
            &TrialStatus::default(),
            Observed {
                pod: Some(&pod),
                log: Some(LOG),
                ..Observed::default()
            },
            "accuracy",
            "file:///artifacts/ns/s/s-0",
            &at(200),
        );
        assert_eq!(status.phase, TrialPhase::Succeeded);
        assert_eq!(status.objective, Some(0.87));
        assert_eq!(status.model_bytes, Some(2048));
        assert_eq!(
            status.artifact_uri.as_deref(),
            Some("file:///artifacts/ns/s/s-0")
        );
        assert_eq!(status.completion_time, Some(at(160)));
        assert_eq!(status.start_time, Some(at(100)));
        assert_eq!(status.reports.len(), 2);
    }

    #[test]
    fn a_failed_result_and_a_crash_are_failures_with_reasons() {
        let bad = TrialResult::failed(FailureReason::BadInput, "column y not found");
        let pod1 = pod(terminated(2, &bad.to_termination_message(), None), vec![]);
        let status = trial_status(
            &TrialStatus::default(),
            Observed {
                pod: Some(&pod1),
                ..Observed::default()
            },
            "accuracy",
            "u",
            &at(200),
        );
        assert_eq!(status.phase, TrialPhase::Failed);
        assert_eq!(status.reason.as_deref(), Some("BadInput"));
        assert_eq!(status.message.as_deref(), Some("column y not found"));

        let pod2 = pod(terminated(137, "", Some("OOMKilled")), vec![]);
        let status = trial_status(
            &TrialStatus::default(),
            Observed {
                pod: Some(&pod2),
                ..Observed::default()
            },
            "accuracy",
            "u",
            &at(200),
        );
        assert_eq!(status.reason.as_deref(), Some("OOMKilled"));
        assert!(status.message.unwrap().contains("code 137"));
    }

    #[test]
    fn a_deadline_exceeded_job_is_a_trial_timeout() {
        let job = deadline_exceeded();
        assert!(!job_is_active(&job));
        let status = trial_status(
            &TrialStatus::default(),
            Observed {
                job: Some(&job),
                ..Observed::default()
            },
            "accuracy",
            "u",
            &at(300),
        );
        assert_eq!(status.phase, TrialPhase::Failed);
        assert_eq!(status.reason.as_deref(), Some("TrialTimeout"));
        assert_eq!(status.completion_time, Some(at(300)));
    }

    #[test]
    fn a_workload_ended_once_its_container_or_pod_finished() {
        assert!(!workload_ended(None), "no pod yet: it may still start");
        assert!(!workload_ended(Some(&pod(running(100), vec![]))));
        assert!(!workload_ended(Some(&pod(
            ContainerState::default(),
            vec![]
        ))));
        assert!(workload_ended(Some(&pod(terminated(2, "", None), vec![]))));
        let mut failed = pod(ContainerState::default(), vec![]);
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(workload_ended(Some(&failed)));
    }

    #[test]
    fn a_deadline_on_a_never_scheduled_trial_is_unschedulable() {
        let message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.";
        let pending = unschedulable(message);
        // The Job controller deleted the pod at the deadline: only the Job remains.
        let job = deadline_exceeded();
        let status = trial_status(
            &pending,
            Observed {
                job: Some(&job),
                ..Observed::default()
            },
            "accuracy",
            "u",
            &at(720),
        );
        assert_eq!(status.phase, TrialPhase::Failed);
        assert_eq!(status.reason.as_deref(), Some(UNSCHEDULABLE));
        assert!(status.message.as_deref().unwrap().ends_with(message));

        // A trial that was placed and ran out of time is a trial timeout.
        let mut ran = pending.clone();
        ran.start_time = Some(at(130));
        let status = trial_status(
            &ran,
            Observed {
                job: Some(&job),
                ..Observed::default()
            },
            "accuracy",
            "u",
            &at(720),
        );
        assert_eq!(status.reason.as_deref(), Some("TrialTimeout"));
    }

    #[test]
    fn a_stopped_trial_stays_stopped() {
        let previous = TrialStatus {
            phase: TrialPhase::Pruned,
            reason: Some("EarlyStopped".into()),
            ..TrialStatus::default()
        };
        let pod = pod(running(100), vec![]);
        let status = trial_status(
            &previous,
            Observed {
                pod: Some(&pod),
                log: Some(LOG),
                ..Observed::default()
            },
            "accuracy",
            "u",
            &at(200),
        );
        assert_eq!(status.phase, TrialPhase::Pruned);
        assert_eq!(status.reason.as_deref(), Some("EarlyStopped"));
        assert_eq!(status.reports.len(), 2);
    }
}
