//! The study state machine: one pure function from what is observed to what should happen next.
//!
//! The operator calls [`plan`] on every reconcile and `flywheel run` on every tick; both execute
//! the returned [`Plan`] (create these trials, stop those, write this status). Nothing here
//! remembers anything between calls: every decision is recomputed from the study spec, the
//! Trial objects that exist, the previous status (only for what must not move: timestamps and
//! the recorded ending) and `now`. That is what makes it restart-safe: a controller that
//! crashed halfway through applying a plan gets the same plan, minus what was applied, on its
//! next call.
//!
//! # Rules
//!
//! * **Names.** Trial `i` of study `s` is named `s-i`. The next index is one past the largest
//!   index observed on any Trial object, whatever its phase, so indices are never reused and a
//!   create that was applied but not yet seen by a cache fails with `AlreadyExists` instead of
//!   duplicating work.
//! * **Budget.** At most `budget.maxTrials` Trial objects exist in total, and no new trial is
//!   created while `parallelism` (default 1) or more are pending or running. Lowering either
//!   never stops anything: it only holds back creation.
//! * **Order of configurations.** First `warmStart.configurations` in order, then the best
//!   `warmStart.topK` (default 3) completed configurations of each earlier study in
//!   `warmStart.studies` order, then the sampler. Which seeded configurations are still due is
//!   decided by matching the seeded list against existing trials of the same origin, family and
//!   parameters, so it survives restarts and picks up configurations added later.
//! * **Near-duplicates.** A sampler's suggestion within [`search::RESOLUTION`] of one of this
//!   study's trials (any phase) is not created: the sampler is asked again with other seeds,
//!   then random draws; when all of them repeat known configurations the space counts as
//!   exhausted (`GridExhausted`). A grid's points and seeded configurations are run as listed.
//! * **Sampler.** Sees the warm-start observations followed by this study's trials in index
//!   order (pending and running ones as [`ObservationState::Pending`]), plus the trials created
//!   earlier in the same plan; that is exactly the history it will see for the same index on the
//!   next call, so re-planning after a partial apply suggests the same configuration. The seed
//!   is `algorithm.seed`, or else [`name_seed`] of the study name.
//! * **Completion.** Each ending is judged on the current observations only, so raising
//!   `maxTrials`, `maxFailedTrials` or `timeoutSeconds` on a finished study resumes it:
//!   1. invalid spec (`validate::validate_spec`, and the name): Failed, `InvalidSpec`; nothing
//!      is created or stopped, so a quick fix of the spec loses no work;
//!   2. the best qualifying trial reaches `objective.goal`: Succeeded, `GoalReached`;
//!   3. `maxFailedTrials` trials failed, counting infrastructure failures always and
//!      configuration failures ([`is_configuration_failure`]: `BadInput`, `ParityMismatch`)
//!      only while no trial has succeeded: `TooManyFailures`. A configuration that cannot work
//!      fails its trial and the sampler steers away from it (TPE puts it in the bad set), but
//!      it does not end a study that has shown it can produce models; a dataset every
//!      configuration rejects still ends the study after `maxFailedTrials` trials;
//!   4. nothing is active and `maxTrials` trials finished: `BudgetExhausted`;
//!   5. nothing is active, nothing is left to seed and the sampler has no suggestion:
//!      `GridExhausted`;
//!   6. `timeoutSeconds` passed since `status.startTime`: `Timeout`.
//!
//!   A study none of whose trials ever started, with a trial that failed or waits because the
//!   scheduler cannot place its pod, fails `Unschedulable` (ranked after 1-2, before 3) with
//!   the scheduler's message, and any other failing ending of such a study carries that reason
//!   too: the cause is the cluster's capacity, not the budget or the models.
//! * **Scheduling.** While the study runs, pending trials whose `Scheduled` condition is
//!   `False`/`Unschedulable` make the condition `TrialsSchedulable=False` (reason
//!   `Unschedulable`, the trials and the scheduler's message); once it exists it turns `True`
//!   when no pending trial waits for a node. It is absent for a study whose trials always
//!   scheduled.
//!   Endings 3 to 6 succeed when a trial qualifies as winner and fail otherwise (a failed
//!   study's message then groups every failure by reason, with the trials and a message per
//!   reason, so "nothing to serve" always says why); 2, 3 and 6
//!   stop every pending or running trial (phase Pruned). When several hold, the first wins,
//!   except that the ending already recorded in `previous` keeps winning while it holds: a
//!   study stopped by its timeout has often spent its budget too once the stops land, and its
//!   status should not change when they do.
//! * **Stopping trials** of a running study: a running trial past `trialTimeoutSeconds` since
//!   its `startTime` fails with `TrialTimeout`; otherwise a running trial with reports that the
//!   early-stopping rule judges unpromising is Pruned with `EarlyStopped`.
//! * **Winner.** Among the Succeeded trials with a finite objective (`status.objective`, else
//!   `status.metrics[<metric>]`) that meet every constraint (a trial without the measurement a
//!   constraint needs does not qualify), see [`select_winner`]: the best objective, unless
//!   others tie with it within the metric's noise, in which case the cheapest of those to
//!   serve wins (lower p99 latency, then smaller ONNX file) and `tieBrokenBy` says so.
//! * **Status.** Counts and progress describe the observed trials; conditions `Running`,
//!   `Succeeded` and `Failed` share one reason and message and keep their `lastTransitionTime`
//!   while their status holds; `startTime` and `completionTime` are written once. Times are
//!   truncated to whole seconds, the precision the API server stores, so a status read back
//!   compares equal to the one written and an unchanged study causes no write.

use std::cmp::Ordering;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{
    self, AlgorithmName, BestTrial, Constraints, Direction, EarlyStopping, EarlyStoppingRule,
    Metric, Report, StudyPhase, StudySpec, StudyStatus, Trial, TrialCounts, TrialOrigin,
    TrialPhase, TrialSpec, TrialStatus,
};
use crate::protocol::FailureReason;
use crate::search::space::{Family, ParamValue, Params};
use crate::search::{
    self, Observation, ObservationState, Sampler, Space, SuggestContext, Suggestion,
};
use crate::validate::{self, FieldError};

/// Condition types of a Study.
pub mod condition_type {
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    /// Whether the pending trials' pods can be placed on nodes.
    pub const TRIALS_SCHEDULABLE: &str = "TrialsSchedulable";

    /// The conditions that describe the study's phase (one of them holds).
    pub const PHASES: [&str; 3] = [RUNNING, SUCCEEDED, FAILED];
}

/// Machine-readable reasons: of the study conditions, and of the trials the plan stops.
pub mod reason {
    /// Nothing created yet.
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const BUDGET_EXHAUSTED: &str = "BudgetExhausted";
    pub const GOAL_REACHED: &str = "GoalReached";
    pub const GRID_EXHAUSTED: &str = "GridExhausted";
    pub const TIMEOUT: &str = "Timeout";
    pub const TOO_MANY_FAILURES: &str = "TooManyFailures";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// No trial ever started: the scheduler cannot place the trials' pods.
    pub const UNSCHEDULABLE: &str = crate::api::UNSCHEDULABLE;
    /// `TrialsSchedulable=True`: no pending trial waits for a node.
    pub const SCHEDULED: &str = "Scheduled";

    /// A trial ran past `trialTimeoutSeconds`.
    pub const TRIAL_TIMEOUT: &str = "TrialTimeout";
    /// The early-stopping rule judged a trial unpromising.
    pub const EARLY_STOPPED: &str = "EarlyStopped";
    /// The study ran past `timeoutSeconds` while the trial was active.
    pub const STUDY_TIMEOUT: &str = "StudyTimeout";
    /// The study failed while the trial was active.
    pub const STUDY_FAILED: &str = "StudyFailed";
}

/// The most trials one plan creates. A study with parallelism in the thousands fills up over a
/// few calls instead of one huge one, which bounds the work (and memory) of a single reconcile
/// whatever the spec says.
pub const MAX_CREATES_PER_PLAN: u32 = 256;

/// Which study is planned: its name (trial names derive from it) and `metadata.generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StudyIdentity<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
}

/// A Trial object as observed, whatever its phase. The index is `spec.index`.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedTrial {
    pub name: String,
    pub spec: TrialSpec,
    /// A Trial without a status yet is pending: use `TrialStatus::default()`.
    pub status: TrialStatus,
}

impl ObservedTrial {
    /// The trial as the planner sees it; `None` for an object without a name, which the API
    /// server never returns.
    pub fn from_trial(trial: &Trial) -> Option<Self> {
        Some(Self {
            name: trial.metadata.name.clone()?,
            spec: trial.spec.clone(),
            status: trial.status.clone().unwrap_or_default(),
        })
    }

    pub fn phase(&self) -> TrialPhase {
        self.status.phase
    }

    fn is_active(&self) -> bool {
        !self.phase().is_finished()
    }
}

/// What earlier studies (those in `spec.warmStart.studies`) teach this one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WarmHistory {
    pub studies: Vec<ParentStudy>,
}

/// The trials of one earlier study, as sampler observations in index order. Values are compared
/// with this study's metric direction, so a parent should have optimised the same metric.
#[derive(Clone, Debug, PartialEq)]
pub struct ParentStudy {
    pub name: String,
    pub observations: Vec<Observation>,
}

impl ParentStudy {
    /// An earlier study's trials as observations of `metric`, this study's objective. Values
    /// come from each trial's `metrics`, not its `objective`, so a parent that optimised
    /// another metric still informs this study wherever it measured this one.
    pub fn from_trials(name: impl Into<String>, trials: &[ObservedTrial], metric: Metric) -> Self {
        let mut trials: Vec<&ObservedTrial> = trials.iter().collect();
        trials.sort_by_key(|t| t.spec.index);
        let measured = |status: &TrialStatus, metric: &str| {
            status
                .metrics
                .get(metric)
                .copied()
                .filter(|v| v.is_finite())
        };
        Self {
            name: name.into(),
            observations: trials
                .into_iter()
                .map(|t| observation(t, metric, measured))
                .collect(),
        }
    }
}

/// What to do now. Applying it in any order, partially or twice is safe: the next plan is
/// computed from what actually happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Trials to create, in index order.
    pub create: Vec<NewTrial>,
    /// Active trials to stop, in index order.
    pub stop: Vec<StopTrial>,
    /// The study status to write; equal to `previous` when nothing changed.
    pub status: StudyStatus,
    /// The trial to promote: set once the study has succeeded.
    pub winner: Option<BestTrial>,
    /// Whether the study has reached a terminal phase (it resumes if its budget is raised).
    pub finished: bool,
}

/// A trial to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTrial {
    /// `<study>-<index>`.
    pub name: String,
    pub spec: TrialSpec,
}

/// An active trial to stop: end its workload and set its phase, reason and message.
#[derive(Clone, Debug, PartialEq)]
pub struct StopTrial {
    pub name: String,
    /// Pruned, or Failed for a trial timeout.
    pub phase: TrialPhase,
    pub reason: String,
    pub message: String,
}

/// Judges whether a running trial should stop early; `Some` carries the explanation.
///
/// `trial` holds the trial's reports, `others` those of every other trial of the study that has
/// any, and `metric` names the objective's key in the reports.
pub trait Pruner {
    fn should_stop(
        &self,
        settings: &EarlyStopping,
        direction: Direction,
        metric: &str,
        trial: &[Report],
        others: &[&[Report]],
    ) -> Option<String>;
}

impl<F> Pruner for F
where
    F: Fn(&EarlyStopping, Direction, &str, &[Report], &[&[Report]]) -> Option<String>,
{
    fn should_stop(
        &self,
        settings: &EarlyStopping,
        direction: Direction,
        metric: &str,
        trial: &[Report],
        others: &[&[Report]],
    ) -> Option<String> {
        self(settings, direction, metric, trial, others)
    }
}

/// The decisions [`plan_with`] delegates: which configuration comes next and whether a running
/// trial is worth continuing. [`plan`] uses the study's own; tests substitute their own.
#[derive(Clone, Copy)]
pub struct Strategies<'a> {
    pub sampler: &'a dyn Sampler,
    pub pruner: &'a dyn Pruner,
}

/// The plan for a study, with the sampler and early-stopping rule its spec names.
///
/// `trials` must hold every Trial object of the study (any order, any phase); `previous` is the
/// status currently stored, `None` for a new study or a lost status.
pub fn plan(
    spec: &StudySpec,
    id: StudyIdentity<'_>,
    previous: Option<&StudyStatus>,
    trials: &[ObservedTrial],
    warm: &WarmHistory,
    now: &Time,
) -> Plan {
    let sampler = search::sampler_for(&spec.algorithm);
    let strategies = Strategies {
        sampler: sampler.as_ref(),
        pruner: &search::early_stopping::should_stop,
    };
    plan_with(spec, id, previous, trials, warm, now, strategies)
}

/// [`plan`] with the sampler and the early-stopping rule given.
pub fn plan_with(
    spec: &StudySpec,
    id: StudyIdentity<'_>,
    previous: Option<&StudyStatus>,
    trials: &[ObservedTrial],
    warm: &WarmHistory,
    now: &Time,
    strategies: Strategies<'_>,
) -> Plan {
    let now = whole_seconds(now);
    let mut trials: Vec<&ObservedTrial> = trials.iter().collect();
    trials.sort_by(|a, b| {
        a.spec
            .index
            .cmp(&b.spec.index)
            .then_with(|| a.name.cmp(&b.name))
    });
    let study = StudyView {
        spec,
        id,
        trials: &trials,
        best: select_winner(spec, &trials),
        counts: count(&trials),
        max_trials: spec.budget.max_trials,
    };
    let start_time = start_time(previous, &trials, &now);
    let verdict = study.verdict(previous, start_time.as_ref(), &now, warm, strategies);

    let (phase, reason, message) = match &verdict.end {
        Some(end) => (end.phase, end.reason, end.message.clone()),
        None if trials.is_empty() && verdict.create.is_empty() => (
            StudyPhase::Pending,
            reason::PENDING,
            "no trial created yet".to_string(),
        ),
        None => (
            StudyPhase::Running,
            reason::RUNNING,
            study.progress_message(),
        ),
    };
    let finished = matches!(phase, StudyPhase::Succeeded | StudyPhase::Failed);
    let start_time = start_time.or_else(|| (!verdict.create.is_empty()).then(|| now.clone()));
    let completion_time = finished.then(|| {
        previous
            .filter(|p| matches!(p.phase, StudyPhase::Succeeded | StudyPhase::Failed))
            .and_then(|p| p.completion_time.clone())
            .unwrap_or_else(|| now.clone())
    });

    let mut conditions = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    for (type_, holds) in [
        (condition_type::RUNNING, phase == StudyPhase::Running),
        (condition_type::SUCCEEDED, phase == StudyPhase::Succeeded),
        (condition_type::FAILED, phase == StudyPhase::Failed),
    ] {
        api::set_condition(
            &mut conditions,
            api::condition(type_, holds, reason, message.clone(), id.generation, &now),
        );
    }

    if !finished {
        let waiting = study.unschedulable_pending();
        let existing = conditions
            .iter()
            .any(|c| c.type_ == condition_type::TRIALS_SCHEDULABLE);
        if !waiting.is_empty() {
            let names: Vec<&str> = waiting.iter().map(|(name, _)| *name).collect();
            let message = format!("{} cannot be scheduled: {}", names.join(", "), waiting[0].1);
            api::set_condition(
                &mut conditions,
                api::condition(
                    condition_type::TRIALS_SCHEDULABLE,
                    false,
                    reason::UNSCHEDULABLE,
                    message,
                    id.generation,
                    &now,
                ),
            );
        } else if existing {
            api::set_condition(
                &mut conditions,
                api::condition(
                    condition_type::TRIALS_SCHEDULABLE,
                    true,
                    reason::SCHEDULED,
                    "no pending trial waits for a node",
                    id.generation,
                    &now,
                ),
            );
        }
    }

    let status = StudyStatus {
        phase,
        conditions,
        trials: study.counts.clone(),
        progress: Some(format!("{}/{}", study.counts.finished(), study.max_trials)),
        best_trial: study.best.clone(),
        observed_generation: id.generation,
        start_time,
        completion_time,
        // Built by the runner after the search ends; kept while the study stays finished.
        ensemble: finished
            .then(|| previous.and_then(|p| p.ensemble.clone()))
            .flatten(),
    };
    Plan {
        create: verdict.create,
        stop: verdict.stop,
        winner: (phase == StudyPhase::Succeeded)
            .then(|| status.best_trial.clone())
            .flatten(),
        status,
        finished,
    }
}

/// Whether `next` differs from what is stored, i.e. whether a status write is needed.
pub fn status_changed(previous: Option<&StudyStatus>, next: &StudyStatus) -> bool {
    previous != Some(next)
}

/// The name of trial `index` of `study`.
pub fn trial_name(study: &str, index: u32) -> String {
    format!("{study}-{index}")
}

/// The sampler seed of a study without `algorithm.seed`: 64-bit FNV-1a of its name. Spelled out
/// rather than taken from `std::hash`, whose output may change between Rust releases, because a
/// restarted controller built by a newer compiler must keep suggesting the same configurations.
pub fn name_seed(name: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    name.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The seed the sampler runs with.
pub fn study_seed(spec: &StudySpec, name: &str) -> u64 {
    spec.algorithm.seed.unwrap_or_else(|| name_seed(name))
}

/// The objective value of a trial, if it has a finite one.
pub fn objective_of(status: &TrialStatus, metric: &str) -> Option<f64> {
    status
        .objective
        .or_else(|| status.metrics.get(metric).copied())
        .filter(|value| value.is_finite())
}

/// Whether a trial's measurements satisfy every constraint; a missing measurement fails a
/// constraint that is set, since an unmeasured model cannot be shown to meet it.
pub fn meets_constraints(constraints: &Constraints, status: &TrialStatus) -> bool {
    let latency_ok = constraints.max_predict_latency_micros.is_none_or(|max| {
        status.latency.is_some_and(|latency| {
            latency.p99_micros.is_finite() && latency.p99_micros <= max as f64
        })
    });
    let size_ok = constraints
        .max_model_bytes
        .is_none_or(|max| status.model_bytes.is_some_and(|bytes| bytes <= max));
    latency_ok && size_ok
}

/// Whether a trial failed because of its own configuration or the dataset, which a rerun would
/// fail again: the trainer's `BadInput` (parameters or data it cannot use) and `ParityMismatch`
/// (its exported model does not reproduce it). Everything else (`Internal`, a crash, a timeout,
/// an evicted pod) is the infrastructure's.
pub fn is_configuration_failure(status: &TrialStatus) -> bool {
    status.phase == TrialPhase::Failed
        && matches!(
            status.reason.as_deref(),
            Some(r) if r == FailureReason::BadInput.as_str()
                || r == FailureReason::ParityMismatch.as_str()
        )
}

/// The failed trials grouped by reason, largest group first: `2 ParityMismatch (s-1, s-4:
/// <the first one's message>); 1 Internal (s-2: …)`. Up to three names per group.
pub fn failure_summary(trials: &[&ObservedTrial]) -> String {
    const NAMES: usize = 3;
    let mut groups: Vec<(&str, Vec<&ObservedTrial>)> = Vec::new();
    for trial in trials.iter().filter(|t| t.phase() == TrialPhase::Failed) {
        let reason = trial.status.reason.as_deref().unwrap_or("Failed");
        match groups.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, members)) => members.push(trial),
            None => groups.push((reason, vec![trial])),
        }
    }
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    groups
        .iter()
        .map(|(reason, members)| {
            let mut names: Vec<&str> = members
                .iter()
                .take(NAMES)
                .map(|t| t.name.as_str())
                .collect();
            let more = members.len().saturating_sub(NAMES);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let message = members
                .iter()
                .find_map(|t| t.status.message.as_deref())
                .map_or_else(String::new, |m| format!(": {m}"));
            names.dedup();
            format!(
                "{} {reason} ({}{more}{message})",
                members.len(),
                names.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The study's settled facts, shared by the decisions below.
struct StudyView<'s> {
    spec: &'s StudySpec,
    id: StudyIdentity<'s>,
    /// In index order.
    trials: &'s [&'s ObservedTrial],
    /// The winner so far.
    best: Option<BestTrial>,
    counts: TrialCounts,
    max_trials: u32,
}

/// How the study ends, when it does.
struct End {
    phase: StudyPhase,
    reason: &'static str,
    message: String,
    /// The reason active trials are stopped with; `None` leaves them running.
    stop_reason: Option<&'static str>,
}

struct Verdict {
    end: Option<End>,
    create: Vec<NewTrial>,
    stop: Vec<StopTrial>,
}

impl StudyView<'_> {
    /// Pending trials the scheduler cannot place, with its message.
    fn unschedulable_pending(&self) -> Vec<(&str, &str)> {
        self.trials
            .iter()
            .filter(|t| t.phase() == TrialPhase::Pending)
            .filter_map(|t| {
                t.status
                    .conditions
                    .iter()
                    .find(|c| {
                        c.type_ == api::SCHEDULED
                            && c.status == "False"
                            && c.reason == api::UNSCHEDULABLE
                    })
                    .map(|c| (t.name.as_str(), c.message.as_str()))
            })
            .collect()
    }

    /// Why the study cannot run, when no trial ever started and the scheduler is the reason:
    /// trials failed `Unschedulable` or waiting for a node, with the scheduler's message.
    /// The first element says whether a trial already failed for it.
    fn unschedulable_cause(&self) -> Option<(bool, String)> {
        let ever_started = self.trials.iter().any(|t| {
            t.status.start_time.is_some()
                || matches!(t.phase(), TrialPhase::Running | TrialPhase::Succeeded)
        });
        if ever_started {
            return None;
        }
        let failed: Vec<&ObservedTrial> = self
            .trials
            .iter()
            .copied()
            .filter(|t| {
                t.phase() == TrialPhase::Failed
                    && t.status.reason.as_deref() == Some(api::UNSCHEDULABLE)
            })
            .collect();
        if let Some(first) = failed.first() {
            let names: Vec<&str> = failed.iter().map(|t| t.name.as_str()).collect();
            return Some((
                true,
                format!(
                    "no trial could be scheduled ({}): {}",
                    names.join(", "),
                    first.status.message.as_deref().unwrap_or("no node fits")
                ),
            ));
        }
        let waiting = self.unschedulable_pending();
        let (_, message) = waiting.first()?;
        let names: Vec<&str> = waiting.iter().map(|(name, _)| *name).collect();
        Some((
            false,
            format!(
                "no trial could be scheduled ({} waiting): {message}",
                names.join(", ")
            ),
        ))
    }

    /// Every ending that holds now, in order of precedence, each with the reason to stop active
    /// trials with (`None`: leave them, or there are none). Empty while the study goes on.
    fn endings(&self, timed_out: Option<u64>, exhausted: bool) -> Vec<End> {
        let mut endings = self.endings_regardless_of_scheduling(timed_out, exhausted);
        let Some((failed, cause)) = self.unschedulable_cause() else {
            return endings;
        };
        // Any failing ending of a study that never ran a trial is the scheduler's doing.
        for end in &mut endings {
            if end.phase == StudyPhase::Failed {
                end.reason = reason::UNSCHEDULABLE;
                end.message = format!("{cause}; {}", end.message);
            }
        }
        if failed {
            let position = usize::from(
                endings
                    .first()
                    .is_some_and(|e| e.reason == reason::GOAL_REACHED),
            );
            endings.insert(
                position,
                End {
                    phase: StudyPhase::Failed,
                    reason: reason::UNSCHEDULABLE,
                    message: cause,
                    stop_reason: Some(reason::STUDY_FAILED),
                },
            );
        }
        endings
    }

    fn endings_regardless_of_scheduling(
        &self,
        timed_out: Option<u64>,
        exhausted: bool,
    ) -> Vec<End> {
        let mut endings = Vec::new();
        let metric = self.spec.objective.metric;
        if let (Some(goal), Some(best)) = (self.spec.objective.goal, &self.best)
            && metric.direction().reaches(best.objective, goal)
        {
            let message = format!(
                "trial {} reached the goal: {} {} (goal {goal})",
                best.name,
                metric.as_str(),
                best.objective
            );
            endings.push(End {
                phase: StudyPhase::Succeeded,
                reason: reason::GOAL_REACHED,
                message,
                stop_reason: Some(reason::GOAL_REACHED),
            });
        }
        let max_failed = self.spec.budget.max_failed_trials();
        let counted = self.counted_failures();
        if counted >= max_failed {
            let (phase, message) = self.judged(format!(
                "{counted} trials failed (maxFailedTrials is {max_failed})"
            ));
            endings.push(End {
                phase,
                reason: reason::TOO_MANY_FAILURES,
                message,
                stop_reason: Some(reason::STUDY_FAILED),
            });
        }
        let active = self.counts.pending + self.counts.running;
        let finished = self.counts.finished();
        if active == 0 && finished >= self.max_trials {
            let (phase, message) = self.judged(format!("{finished} trials finished"));
            endings.push(End {
                phase,
                reason: reason::BUDGET_EXHAUSTED,
                message,
                stop_reason: None,
            });
        }
        if active == 0 && exhausted {
            let (phase, message) = self.judged(format!(
                "every configuration of the space was tried ({finished} trials finished)"
            ));
            endings.push(End {
                phase,
                reason: reason::GRID_EXHAUSTED,
                message,
                stop_reason: None,
            });
        }
        if let Some(timeout) = timed_out {
            let (phase, message) =
                self.judged(format!("the study ran past its timeout of {timeout}s"));
            endings.push(End {
                phase,
                reason: reason::TIMEOUT,
                message,
                stop_reason: Some(reason::STUDY_TIMEOUT),
            });
        }
        endings
    }

    fn verdict(
        &self,
        previous: Option<&StudyStatus>,
        start_time: Option<&Time>,
        now: &Time,
        warm: &WarmHistory,
        strategies: Strategies<'_>,
    ) -> Verdict {
        let space = match checked_space(self.spec, self.id.name) {
            Ok(space) => space,
            Err(errors) => {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                // Running trials are left alone: the spec may be fixed in a moment, and a
                // study that never ran anything has nothing to stop.
                return self.ended(End {
                    phase: StudyPhase::Failed,
                    reason: reason::INVALID_SPEC,
                    message: format!("the spec is invalid: {}", list.join("; ")),
                    stop_reason: None,
                });
            }
        };
        let timed_out = match (self.spec.budget.timeout_seconds, start_time) {
            (Some(timeout), Some(start)) if expired(start, timeout, now) => Some(timeout),
            _ => None,
        };
        let (create, exhausted) = self.creations(&space, warm, strategies.sampler);
        let exhausted = exhausted && create.is_empty();
        let mut endings = self.endings(timed_out, exhausted);
        if !endings.is_empty() {
            // Several endings can hold at once (a study that timed out has, once its trials are
            // stopped, often spent its budget too). The one recorded keeps winning while it
            // holds, so a finished study's status does not flip as the clock moves on.
            let recorded = previous.and_then(finish_reason);
            let chosen = endings
                .iter()
                .position(|end| Some(end.reason) == recorded)
                .unwrap_or(0);
            return self.ended(endings.swap_remove(chosen));
        }
        Verdict {
            end: None,
            create,
            stop: self.trial_stops(now, strategies.pruner),
        }
    }

    /// Ends the study, stopping every active trial if the ending says so.
    fn ended(&self, end: End) -> Verdict {
        let stop = end.stop_reason.map_or_else(Vec::new, |stop_reason| {
            self.trials
                .iter()
                .filter(|t| t.is_active())
                .map(|t| StopTrial {
                    name: t.name.clone(),
                    phase: TrialPhase::Pruned,
                    reason: stop_reason.to_string(),
                    message: end.message.clone(),
                })
                .collect()
        });
        Verdict {
            end: Some(end),
            create: Vec::new(),
            stop,
        }
    }

    /// The failures `maxFailedTrials` is compared with: infrastructure failures, plus
    /// configuration failures while nothing has succeeded.
    fn counted_failures(&self) -> u32 {
        let nothing_succeeded = self.counts.succeeded == 0;
        let counted = self
            .trials
            .iter()
            .filter(|t| t.phase() == TrialPhase::Failed)
            .filter(|t| nothing_succeeded || !is_configuration_failure(&t.status))
            .count();
        u32::try_from(counted).unwrap_or(u32::MAX)
    }

    /// A study that ends succeeds exactly when a trial qualifies as winner; otherwise the
    /// message says why nothing does.
    fn judged(&self, what: String) -> (StudyPhase, String) {
        match &self.best {
            Some(best) => {
                let tie = best
                    .tie_broken_by
                    .as_deref()
                    .map_or_else(String::new, |by| format!(" (tie broken by {by})"));
                (
                    StudyPhase::Succeeded,
                    format!(
                        "{what}; best: trial {} with {} {}{tie}",
                        best.name,
                        self.spec.objective.metric.as_str(),
                        best.objective
                    ),
                )
            }
            None if self.counts.succeeded > 0 => (
                StudyPhase::Failed,
                format!("{what}; no succeeded trial meets the constraints, nothing to serve"),
            ),
            None if self.counts.failed > 0 => (
                StudyPhase::Failed,
                format!(
                    "{what}; no trial succeeded, nothing to serve: {}",
                    failure_summary(self.trials)
                ),
            ),
            None => (
                StudyPhase::Failed,
                format!("{what}; no trial succeeded, nothing to serve"),
            ),
        }
    }

    fn progress_message(&self) -> String {
        format!(
            "{}/{} trials finished, {} running, {} pending",
            self.counts.finished(),
            self.max_trials,
            self.counts.running,
            self.counts.pending
        )
    }

    /// Running trials to stop for their own sake: past their timeout, or pruned.
    fn trial_stops(&self, now: &Time, pruner: &dyn Pruner) -> Vec<StopTrial> {
        let metric = self.spec.objective.metric;
        let settings = &self.spec.early_stopping;
        let mut stops = Vec::new();
        for (position, trial) in self.trials.iter().enumerate() {
            if trial.phase() != TrialPhase::Running {
                continue;
            }
            if let (Some(timeout), Some(start)) = (
                self.spec.budget.trial_timeout_seconds,
                trial.status.start_time.as_ref(),
            ) && expired(start, timeout, now)
            {
                stops.push(StopTrial {
                    name: trial.name.clone(),
                    phase: TrialPhase::Failed,
                    reason: reason::TRIAL_TIMEOUT.to_string(),
                    message: format!("the trial ran past its timeout of {timeout}s"),
                });
                continue;
            }
            if settings.rule == EarlyStoppingRule::None || trial.status.reports.is_empty() {
                continue;
            }
            let others: Vec<&[Report]> = self
                .trials
                .iter()
                .enumerate()
                .filter(|(other, t)| *other != position && !t.status.reports.is_empty())
                .map(|(_, t)| t.status.reports.as_slice())
                .collect();
            if let Some(why) = pruner.should_stop(
                settings,
                metric.direction(),
                metric.as_str(),
                &trial.status.reports,
                &others,
            ) {
                stops.push(StopTrial {
                    name: trial.name.clone(),
                    phase: TrialPhase::Pruned,
                    reason: reason::EARLY_STOPPED.to_string(),
                    message: why,
                });
            }
        }
        stops
    }

    /// The trials to create now, and whether the sampler ran out of configurations.
    fn creations(
        &self,
        space: &Space,
        warm: &WarmHistory,
        sampler: &dyn Sampler,
    ) -> (Vec<NewTrial>, bool) {
        let active = self.counts.pending + self.counts.running;
        // 0, which the schema forbids, would stall the study for good; it counts as 1.
        let parallelism = self.spec.budget.parallelism.unwrap_or(1).max(1);
        let total = u32::try_from(self.trials.len()).unwrap_or(u32::MAX);
        let room = parallelism
            .saturating_sub(active)
            .min(self.max_trials.saturating_sub(total))
            .min(MAX_CREATES_PER_PLAN);
        let mut create = Vec::new();
        if room == 0 {
            return (create, false);
        }

        let direction = self.spec.objective.metric.direction();
        let parents = self.parents(warm);
        let mut seeded = self.seeded_due(space, &parents, direction).into_iter();
        let mut history: Vec<Observation> = parents
            .iter()
            .flat_map(|parent| parent.observations.iter().cloned())
            .collect();
        let inherited = history.len();
        let metric = self.spec.objective.metric;
        history.extend(
            self.trials
                .iter()
                .map(|t| observation(t, metric, objective_of)),
        );
        let seed = study_seed(self.spec, self.id.name);
        let mut next = self.next_index();

        for _ in 0..room {
            let Some(index) = next else { break };
            let (suggestion, origin) = match seeded.next() {
                Some(due) => due,
                None => {
                    let ctx = SuggestContext {
                        space,
                        history: &history,
                        direction,
                        seed,
                        index,
                    };
                    // A grid enumerates exactly the points the user listed; other samplers
                    // must not spend a trial on a configuration already tried to within their
                    // resolution (search::RESOLUTION), which on small data only re-measures
                    // noise.
                    let suggested = if self.spec.algorithm.name == AlgorithmName::Grid {
                        sampler.suggest(&ctx)
                    } else {
                        search::suggest_distinct(sampler, &ctx, &history[inherited..])
                    };
                    match suggested {
                        Some(suggestion) => (suggestion, TrialOrigin::Sampler),
                        None => return (create, true),
                    }
                }
            };
            // Exactly what this trial will look like to the next plan, which keeps the
            // sampler's history, and so its suggestion for the next index, the same.
            history.push(Observation {
                family: suggestion.family,
                params: suggestion.params.clone(),
                state: ObservationState::Pending,
                value: None,
            });
            create.push(NewTrial {
                name: trial_name(self.id.name, index),
                spec: TrialSpec {
                    study: self.id.name.to_string(),
                    index,
                    family: suggestion.family,
                    params: suggestion.params,
                    budget: None,
                    origin: Some(origin),
                },
            });
            next = index.checked_add(1);
        }
        (create, false)
    }

    /// One past the largest index in use. Names are read too: an object named `<study>-7`
    /// occupies that name whatever its spec says.
    fn next_index(&self) -> Option<u32> {
        let prefix = format!("{}-", self.id.name);
        let largest = self
            .trials
            .iter()
            .flat_map(|t| {
                let from_name = t
                    .name
                    .strip_prefix(&prefix)
                    .and_then(|suffix| suffix.parse::<u32>().ok());
                [Some(t.spec.index), from_name]
            })
            .flatten()
            .max();
        match largest {
            None => Some(0),
            Some(largest) => largest.checked_add(1),
        }
    }

    /// The earlier studies the spec names, in its order; data for others is ignored.
    fn parents<'w>(&self, warm: &'w WarmHistory) -> Vec<&'w ParentStudy> {
        let Some(warm_start) = &self.spec.warm_start else {
            return Vec::new();
        };
        warm_start
            .studies
            .iter()
            .filter_map(|name| warm.studies.iter().find(|parent| &parent.name == name))
            .collect()
    }

    /// Seeded configurations not yet turned into trials, in the order they are due.
    fn seeded_due(
        &self,
        space: &Space,
        parents: &[&ParentStudy],
        direction: Direction,
    ) -> Vec<(Suggestion, TrialOrigin)> {
        let Some(warm_start) = &self.spec.warm_start else {
            return Vec::new();
        };
        let mut seeded: Vec<(Suggestion, TrialOrigin)> = warm_start
            .configurations
            .iter()
            .map(|c| {
                let suggestion = Suggestion {
                    family: c.family,
                    params: c.params.clone(),
                };
                (suggestion, TrialOrigin::Configuration)
            })
            .collect();
        let top_k = warm_start.top_k.unwrap_or(3) as usize;
        let searched = |family: Family| space.families.iter().any(|f| f.family == family);
        for parent in parents {
            let mut ranked: Vec<(usize, &Observation, f64)> = parent
                .observations
                .iter()
                .enumerate()
                .filter(|(_, o)| o.state == ObservationState::Complete && searched(o.family))
                .filter(|(_, o)| params_are_comparable(&o.params))
                .filter_map(|(i, o)| o.value.filter(|v| v.is_finite()).map(|v| (i, o, v)))
                .collect();
            ranked.sort_by(|a, b| rank(direction, a.2, b.2).then(a.0.cmp(&b.0)));
            let mut taken = 0;
            for (_, observation, _) in ranked {
                if taken == top_k {
                    break;
                }
                let duplicate = seeded.iter().any(|(s, _)| {
                    s.family == observation.family && same_params(&s.params, &observation.params)
                });
                if !duplicate {
                    let suggestion = Suggestion {
                        family: observation.family,
                        params: observation.params.clone(),
                    };
                    seeded.push((suggestion, TrialOrigin::WarmStart));
                    taken += 1;
                }
            }
        }

        // Each existing trial accounts for one seeded entry of its origin and configuration,
        // so a configuration listed twice runs twice.
        let mut unmatched: Vec<&ObservedTrial> = self
            .trials
            .iter()
            .copied()
            .filter(|t| {
                matches!(
                    t.spec.origin,
                    Some(TrialOrigin::Configuration | TrialOrigin::WarmStart)
                )
            })
            .collect();
        seeded.retain(|(suggestion, origin)| {
            let found = unmatched.iter().position(|t| {
                t.spec.origin == Some(*origin)
                    && t.spec.family == suggestion.family
                    && same_params(&t.spec.params, &suggestion.params)
            });
            match found {
                Some(position) => {
                    unmatched.swap_remove(position);
                    false
                }
                None => true,
            }
        });
        seeded
    }
}

/// A trial as a sampler sees it, its value read by `value_of`.
fn observation(
    trial: &ObservedTrial,
    metric: Metric,
    value_of: fn(&TrialStatus, &str) -> Option<f64>,
) -> Observation {
    let metric = metric.as_str();
    let (state, value) = match trial.phase() {
        TrialPhase::Pending | TrialPhase::Running => (ObservationState::Pending, None),
        TrialPhase::Succeeded => match value_of(&trial.status, metric) {
            Some(value) => (ObservationState::Complete, Some(value)),
            // A success without a usable value teaches the sampler nothing good.
            None => (ObservationState::Failed, None),
        },
        TrialPhase::Failed => (ObservationState::Failed, None),
        TrialPhase::Pruned => {
            let last = trial
                .status
                .reports
                .iter()
                .max_by_key(|r| r.step)
                .and_then(|r| r.metrics.get(metric).copied())
                .filter(|v| v.is_finite());
            (ObservationState::Pruned, last)
        }
    };
    Observation {
        family: trial.spec.family,
        params: trial.spec.params.clone(),
        state,
        value,
    }
}

/// The reason a finished study recorded, if it finished.
fn finish_reason(status: &StudyStatus) -> Option<&str> {
    let type_ = match status.phase {
        StudyPhase::Succeeded => condition_type::SUCCEEDED,
        StudyPhase::Failed => condition_type::FAILED,
        StudyPhase::Pending | StudyPhase::Running => return None,
    };
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.as_str())
}

/// The resolved space, or every problem that keeps the study from running.
fn checked_space(spec: &StudySpec, name: &str) -> Result<Space, Vec<FieldError>> {
    let mut errors = validate::study_name_errors(name, spec.budget.max_trials);
    errors.extend(validate::validate_spec(spec));
    if errors.is_empty() {
        Space::from_spec(spec)
    } else {
        Err(errors)
    }
}

/// Objective differences below this count as ties when a trial reports no spread over folds:
/// the precision leaderboards print, below which a single validation split cannot tell models
/// apart either.
pub const TIE_EPSILON: f64 = 1e-4;

/// Single-row p99 latencies within this fraction of each other count as equal when breaking a
/// tie: p99s of one model measured twice differ by about that much.
pub const LATENCY_TIE_FRACTION: f64 = 0.1;

/// The noise of a trial's objective: the standard error of its mean over folds
/// (`<metric>_std / sqrt(<metric>_n)`, the population spread of the fold scores over the square
/// root of their number) when the trial reports them, else [`TIE_EPSILON`]; never below it.
pub fn objective_noise(status: &TrialStatus, metric: &str) -> f64 {
    let std = status.metrics.get(&format!("{metric}_std")).copied();
    let n = status.metrics.get(&format!("{metric}_n")).copied();
    match (std, n) {
        (Some(std), Some(n)) if std.is_finite() && n >= 2.0 => (std / n.sqrt()).max(TIE_EPSILON),
        _ => TIE_EPSILON,
    }
}

/// The winner among `trials`: the Succeeded trial with the best finite objective that meets
/// every constraint — unless other qualifying trials tie with it, i.e. lie within the best
/// trial's [`objective_noise`] of its objective. Then the cheapest of the tied trials to serve
/// wins: the lowest p99 latency (within [`LATENCY_TIE_FRACTION`] counts as equal; unmeasured
/// is worst), then the smallest ONNX file, then the better objective, then the lower index;
/// `tie_broken_by` is `latency` or `size` when that chose another trial than the objective
/// alone would have. The local runner and the operator both promote this trial.
pub fn select_winner(spec: &StudySpec, trials: &[&ObservedTrial]) -> Option<BestTrial> {
    let metric = spec.objective.metric;
    let direction = metric.direction();
    let mut qualifying: Vec<(&ObservedTrial, f64)> = trials
        .iter()
        .filter(|t| {
            t.phase() == TrialPhase::Succeeded && meets_constraints(&spec.constraints, &t.status)
        })
        .filter_map(|t| objective_of(&t.status, metric.as_str()).map(|v| (*t, v)))
        .collect();
    qualifying.sort_by(|a, b| rank(direction, a.1, b.1).then(a.0.spec.index.cmp(&b.0.spec.index)));
    let (top, top_value) = *qualifying.first()?;
    let noise = objective_noise(&top.status, metric.as_str());
    let tied: Vec<&(&ObservedTrial, f64)> = qualifying
        .iter()
        .filter(|(_, value)| (value - top_value).abs() <= noise)
        .collect();
    let p99 = |t: &ObservedTrial| {
        t.status
            .latency
            .map(|l| l.p99_micros)
            .filter(|p| p.is_finite())
            .unwrap_or(f64::INFINITY)
    };
    let bytes = |t: &ObservedTrial| t.status.model_bytes.unwrap_or(u64::MAX);
    let fastest = tied
        .iter()
        .map(|(t, _)| p99(t))
        .fold(f64::INFINITY, f64::min);
    let fast: Vec<&&(&ObservedTrial, f64)> = tied
        .iter()
        .filter(|(t, _)| p99(t) <= fastest * (1.0 + LATENCY_TIE_FRACTION) || fastest.is_infinite())
        .collect();
    // `fast` keeps the objective order, so the first of the smallest is the better objective.
    let (chosen, objective) = fast
        .iter()
        .min_by_key(|(t, _)| bytes(t))
        .map_or((top, top_value), |(t, v)| (*t, *v));
    let tie_broken_by = if chosen.name == top.name {
        None
    } else if fast.iter().any(|(t, _)| t.name == top.name) {
        Some("size".to_string())
    } else {
        Some("latency".to_string())
    };
    Some(BestTrial {
        name: chosen.name.clone(),
        family: chosen.spec.family,
        params: chosen.spec.params.clone(),
        objective,
        metrics: chosen.status.metrics.clone(),
        artifact_uri: chosen.status.artifact_uri.clone(),
        holdout_metrics: chosen.status.holdout_metrics.clone(),
        tie_broken_by,
    })
}

/// Orders finite values best first.
fn rank(direction: Direction, a: f64, b: f64) -> Ordering {
    match direction {
        Direction::Maximize => b.total_cmp(&a),
        Direction::Minimize => a.total_cmp(&b),
    }
}

fn count(trials: &[&ObservedTrial]) -> TrialCounts {
    let mut counts = TrialCounts::default();
    for trial in trials {
        let slot = match trial.phase() {
            TrialPhase::Pending => &mut counts.pending,
            TrialPhase::Running => &mut counts.running,
            TrialPhase::Succeeded => &mut counts.succeeded,
            TrialPhase::Failed => &mut counts.failed,
            TrialPhase::Pruned => &mut counts.pruned,
        };
        *slot = slot.saturating_add(1);
    }
    counts
}

/// When the study started: as recorded; after a lost status, when its first trial started; for
/// a study with trials that have not started, now.
fn start_time(
    previous: Option<&StudyStatus>,
    trials: &[&ObservedTrial],
    now: &Time,
) -> Option<Time> {
    if let Some(start) = previous.and_then(|p| p.start_time.clone()) {
        return Some(start);
    }
    if trials.is_empty() {
        return None;
    }
    let earliest = trials
        .iter()
        .filter_map(|t| t.status.start_time.as_ref())
        .min()
        .map(whole_seconds);
    Some(earliest.unwrap_or_else(|| now.clone()))
}

/// Whether more than `seconds` passed between `start` and `now`.
fn expired(start: &Time, seconds: u64, now: &Time) -> bool {
    let elapsed_ms = i128::from(now.0.as_millisecond()) - i128::from(start.0.as_millisecond());
    elapsed_ms > i128::from(seconds) * 1000
}

fn whole_seconds(time: &Time) -> Time {
    Timestamp::from_second(time.0.as_second()).map_or_else(|_| time.clone(), Time)
}

/// Whether two configurations set the same values. Numbers compare by value because `3` and
/// `3.0` are the same setting to a trainer, and YAML writers produce either.
fn same_params(a: &Params, b: &Params) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (va.as_f64(), vb.as_f64()) {
                    (Some(x), Some(y)) => x == y,
                    _ => va == vb,
                }
        })
}

/// Whether every value equals itself: a NaN parameter would never match the trial made from
/// it, and its configuration would be re-run until the budget ran out.
fn params_are_comparable(params: &Params) -> bool {
    params
        .values()
        .all(|value| !matches!(value, ParamValue::Float(f) if f.is_nan()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_seed_is_fnv1a() {
        assert_eq!(name_seed(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(name_seed("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(name_seed("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn whole_seconds_truncates() {
        let t = Time(Timestamp::from_millisecond(1_500).unwrap_or(Timestamp::UNIX_EPOCH));
        assert_eq!(whole_seconds(&t).0.as_millisecond(), 1_000);
    }

    #[test]
    fn expiry_is_strict() {
        let at = |s| Time(Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH));
        assert!(!expired(&at(100), 10, &at(110)));
        assert!(expired(&at(100), 10, &at(111)));
        assert!(!expired(&at(100), u64::MAX, &at(i64::from(i32::MAX))));
    }
}
