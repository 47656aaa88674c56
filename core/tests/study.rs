//! The study state machine: scenario tests for each rule, and a property test that drives random
//! studies to completion through an in-memory "cluster", checking every invariant at every step,
//! applying plans partially, and throwing the stored status away at random (a controller
//! restart).

// Helpers outside `#[test]` functions are test code too; clippy cannot tell.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use flywheel_core::api::{
    Algorithm, AlgorithmName, AshaSettings, BestTrial, Budget, Configuration, Constraints,
    DataFormat, DatasetSpec, Direction, EarlyStopping, EarlyStoppingRule, FamilySpace, IntDomain,
    Latency, MedianSettings, Metric, Objective, ParamDomain, Report, StudyPhase, StudySpec,
    StudyStatus, TrialOrigin, TrialPhase, TrialSpec, TrialStatus, WarmStart,
};
use flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use flywheel_core::k8s_openapi::jiff::Timestamp;
use flywheel_core::search::space::{Family, ParamValue, Params, Task};
use flywheel_core::search::{
    self, Observation, ObservationState, Sampler, SuggestContext, Suggestion, early_stopping,
    random::RandomSampler,
};
use flywheel_core::study::{
    self, ObservedTrial, ParentStudy, Plan, Pruner, Strategies, StudyIdentity, WarmHistory,
    condition_type, reason,
};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NAME: &str = "iris";

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

fn id() -> StudyIdentity<'static> {
    StudyIdentity {
        name: NAME,
        generation: Some(1),
    }
}

fn spec() -> StudySpec {
    StudySpec {
        dataset: DatasetSpec {
            uri: "file:///data/iris.csv".into(),
            target: "species".into(),
            task: Task::Multiclass,
            format: DataFormat::Auto,
            feedback: Vec::new(),
        },
        objective: Objective {
            metric: Metric::Accuracy,
            goal: None,
        },
        search_space: vec![FamilySpace {
            family: Family::DecisionTree,
            params: BTreeMap::new(),
            fixed: BTreeMap::new(),
        }],
        algorithm: Algorithm {
            name: AlgorithmName::Random,
            seed: Some(7),
            tpe: None,
        },
        early_stopping: EarlyStopping::default(),
        budget: Budget {
            max_trials: 5,
            parallelism: None,
            max_failed_trials: None,
            timeout_seconds: None,
            trial_timeout_seconds: None,
        },
        constraints: Constraints::default(),
        trial: Default::default(),
        promotion: None,
        warm_start: None,
        origin: None,
        evaluation: None,
        ensemble: None,
    }
}

fn int_domain(low: i64, high: i64) -> ParamDomain {
    ParamDomain {
        float: None,
        int: Some(IntDomain {
            low,
            high,
            log: false,
        }),
        categorical: None,
    }
}

fn depth(d: i64) -> Params {
    Params::from([("max_depth".to_string(), ParamValue::Int(d))])
}

/// A finite "grid": `max_depth` 1..=size of a decision tree, the first one not yet in the
/// history. Records the last seed and index it was asked with.
struct Finite {
    size: i64,
    seed: Cell<Option<u64>>,
    index: Cell<Option<u32>>,
}

impl Finite {
    fn new(size: i64) -> Self {
        Self {
            size,
            seed: Cell::new(None),
            index: Cell::new(None),
        }
    }
}

impl Sampler for Finite {
    fn suggest(&self, ctx: &SuggestContext<'_>) -> Option<Suggestion> {
        self.seed.set(Some(ctx.seed));
        self.index.set(Some(ctx.index));
        (1..=self.size)
            .map(depth)
            .find(|params| {
                !ctx.history
                    .iter()
                    .any(|o| o.family == Family::DecisionTree && &o.params == params)
            })
            .map(|params| Suggestion {
                family: Family::DecisionTree,
                params,
            })
    }
}

/// Prunes a trial whose last report is below 0.2.
fn low_pruner(
    _: &EarlyStopping,
    _: Direction,
    metric: &str,
    trial: &[Report],
    _: &[&[Report]],
) -> Option<String> {
    let value = *trial.last()?.metrics.get(metric)?;
    (value < 0.2).then(|| format!("{metric} {value} is below 0.2"))
}

fn never(
    _: &EarlyStopping,
    _: Direction,
    _: &str,
    _: &[Report],
    _: &[&[Report]],
) -> Option<String> {
    None
}

fn run(
    spec: &StudySpec,
    previous: Option<&StudyStatus>,
    trials: &[ObservedTrial],
    warm: &WarmHistory,
    now: i64,
    sampler: &dyn Sampler,
) -> Plan {
    let strategies = Strategies {
        sampler,
        pruner: &low_pruner,
    };
    run_with(spec, previous, trials, warm, now, strategies)
}

fn run_with(
    spec: &StudySpec,
    previous: Option<&StudyStatus>,
    trials: &[ObservedTrial],
    warm: &WarmHistory,
    now: i64,
    strategies: Strategies<'_>,
) -> Plan {
    study::plan_with(spec, id(), previous, trials, warm, &at(now), strategies)
}

fn simple(
    spec: &StudySpec,
    previous: Option<&StudyStatus>,
    trials: &[ObservedTrial],
    now: i64,
) -> Plan {
    run(
        spec,
        previous,
        trials,
        &WarmHistory::default(),
        now,
        &Finite::new(1000),
    )
}

fn trial(index: u32, phase: TrialPhase) -> ObservedTrial {
    ObservedTrial {
        name: format!("{NAME}-{index}"),
        spec: TrialSpec {
            study: NAME.into(),
            index,
            family: Family::DecisionTree,
            params: depth(i64::from(index) + 1),
            budget: None,
            origin: Some(TrialOrigin::Sampler),
        },
        status: TrialStatus {
            phase,
            ..Default::default()
        },
    }
}

fn succeeded(index: u32, objective: f64) -> ObservedTrial {
    let mut t = trial(index, TrialPhase::Succeeded);
    t.status.objective = Some(objective);
    t.status.metrics.insert("accuracy".into(), objective);
    t
}

fn running(index: u32, since: i64) -> ObservedTrial {
    let mut t = trial(index, TrialPhase::Running);
    t.status.start_time = Some(at(since));
    t
}

fn apply(trials: &mut Vec<ObservedTrial>, plan: &Plan) {
    for new in &plan.create {
        trials.push(ObservedTrial {
            name: new.name.clone(),
            spec: new.spec.clone(),
            status: TrialStatus::default(),
        });
    }
    for stop in &plan.stop {
        let t = trials.iter_mut().find(|t| t.name == stop.name).unwrap();
        t.status.phase = stop.phase;
        t.status.reason = Some(stop.reason.clone());
        t.status.message = Some(stop.message.clone());
    }
}

fn condition<'a>(
    status: &'a StudyStatus,
    type_: &str,
) -> &'a flywheel_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

fn true_reason(status: &StudyStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.status == "True")
        .map(|c| c.reason.as_str())
}

#[test]
fn first_plan_fills_parallelism_with_deterministic_names() {
    let mut spec = spec();
    spec.budget.parallelism = Some(3);
    let plan = simple(&spec, None, &[], 100);
    let names: Vec<&str> = plan.create.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["iris-0", "iris-1", "iris-2"]);
    for (i, new) in plan.create.iter().enumerate() {
        assert_eq!(new.spec.index, i as u32);
        assert_eq!(new.spec.study, NAME);
        assert_eq!(new.spec.origin, Some(TrialOrigin::Sampler));
    }
    assert_eq!(plan.status.phase, StudyPhase::Running);
    assert_eq!(plan.status.start_time, Some(at(100)));
    assert_eq!(plan.status.progress.as_deref(), Some("0/5"));
    assert_eq!(plan.status.observed_generation, Some(1));
    assert!(!plan.finished);
}

#[test]
fn parallelism_defaults_to_one() {
    let plan = simple(&spec(), None, &[], 100);
    assert_eq!(plan.create.len(), 1);
    let plan = simple(&spec(), None, &[running(0, 100)], 101);
    assert!(plan.create.is_empty());
}

#[test]
fn indices_continue_after_the_largest_ever_used() {
    let mut spec = spec();
    spec.budget.max_trials = 10;
    let mut odd = trial(1, TrialPhase::Pruned);
    // An object whose name claims a larger index than its spec: the name is taken all the same.
    odd.name = format!("{NAME}-7");
    let trials = [trial(0, TrialPhase::Failed), odd, succeeded(5, 0.5)];
    let plan = simple(&spec, None, &trials, 100);
    assert_eq!(plan.create.len(), 1);
    assert_eq!(plan.create[0].name, "iris-8");
    assert_eq!(plan.create[0].spec.index, 8);
}

#[test]
fn invalid_spec_fails_with_every_field_error_and_creates_nothing() {
    let mut spec = spec();
    spec.dataset.target = " ".into();
    spec.search_space[0]
        .fixed
        .insert("no_such_param".into(), ParamValue::Int(1));
    let plan = simple(&spec, None, &[], 100);
    assert!(plan.create.is_empty() && plan.stop.is_empty());
    assert!(plan.finished);
    assert_eq!(plan.winner, None);
    assert_eq!(plan.status.phase, StudyPhase::Failed);
    let failed = condition(&plan.status, condition_type::FAILED);
    assert_eq!(failed.status, "True");
    assert_eq!(failed.reason, reason::INVALID_SPEC);
    assert!(
        failed.message.contains("spec.dataset.target"),
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("no_such_param"),
        "{}",
        failed.message
    );

    // Running trials are left alone while the spec is broken; fixing it resumes the study.
    let trials = [running(0, 90)];
    let plan = simple(&spec, Some(&plan.status), &trials, 101);
    assert!(plan.stop.is_empty());
    let fixed = self::spec();
    let plan = simple(&fixed, Some(&plan.status), &trials, 102);
    assert_eq!(plan.status.phase, StudyPhase::Running);
    assert_eq!(plan.status.completion_time, None);
}

#[test]
fn invalid_study_name_is_an_invalid_spec() {
    let strategies = Strategies {
        sampler: &Finite::new(9),
        pruner: &never,
    };
    let name = "Not_A_Label";
    let id = StudyIdentity {
        name,
        generation: None,
    };
    let plan = study::plan_with(
        &spec(),
        id,
        None,
        &[],
        &WarmHistory::default(),
        &at(0),
        strategies,
    );
    assert_eq!(true_reason(&plan.status), Some(reason::INVALID_SPEC));
    assert!(plan.create.is_empty());
}

#[test]
fn configurations_then_warm_top_k_then_sampler() {
    let mut spec = spec();
    spec.budget.max_trials = 20;
    spec.budget.parallelism = Some(20);
    spec.search_space.push(FamilySpace {
        family: Family::RandomForest,
        params: BTreeMap::new(),
        fixed: BTreeMap::new(),
    });
    spec.warm_start = Some(WarmStart {
        studies: vec!["b".into(), "a".into()],
        top_k: Some(2),
        configurations: vec![
            Configuration {
                family: Family::DecisionTree,
                params: depth(40),
            },
            Configuration {
                family: Family::DecisionTree,
                params: depth(41),
            },
        ],
    });
    let obs = |family, params, state, value| Observation {
        family,
        params,
        state,
        value,
    };
    let warm = WarmHistory {
        studies: vec![
            ParentStudy {
                name: "a".into(),
                observations: vec![
                    obs(
                        Family::DecisionTree,
                        depth(50),
                        ObservationState::Complete,
                        Some(0.7),
                    ),
                    obs(
                        Family::DecisionTree,
                        depth(51),
                        ObservationState::Complete,
                        Some(0.9),
                    ),
                    obs(
                        Family::DecisionTree,
                        depth(52),
                        ObservationState::Complete,
                        Some(0.8),
                    ),
                ],
            },
            ParentStudy {
                name: "b".into(),
                observations: vec![
                    // Same as a configuration: not repeated.
                    obs(
                        Family::DecisionTree,
                        depth(41),
                        ObservationState::Complete,
                        Some(0.99),
                    ),
                    // Not searched by this study.
                    obs(
                        Family::Mlp,
                        Params::new(),
                        ObservationState::Complete,
                        Some(0.98),
                    ),
                    obs(
                        Family::DecisionTree,
                        depth(60),
                        ObservationState::Failed,
                        None,
                    ),
                    obs(
                        Family::DecisionTree,
                        depth(61),
                        ObservationState::Complete,
                        Some(f64::NAN),
                    ),
                    obs(
                        Family::RandomForest,
                        Params::new(),
                        ObservationState::Complete,
                        Some(0.5),
                    ),
                    obs(
                        Family::DecisionTree,
                        depth(62),
                        ObservationState::Complete,
                        Some(0.4),
                    ),
                ],
            },
            ParentStudy {
                name: "not-listed".into(),
                observations: vec![obs(
                    Family::DecisionTree,
                    depth(63),
                    ObservationState::Complete,
                    Some(1.0),
                )],
            },
        ],
    };
    let sampler = Finite::new(3);
    let plan = run(&spec, None, &[], &warm, 100, &sampler);
    let got: Vec<(Family, Params, TrialOrigin)> = plan
        .create
        .iter()
        .map(|c| (c.spec.family, c.spec.params.clone(), c.spec.origin.unwrap()))
        .collect();
    let want = vec![
        (Family::DecisionTree, depth(40), TrialOrigin::Configuration),
        (Family::DecisionTree, depth(41), TrialOrigin::Configuration),
        // b first (spec order), best two that are new.
        (Family::RandomForest, Params::new(), TrialOrigin::WarmStart),
        (Family::DecisionTree, depth(62), TrialOrigin::WarmStart),
        (Family::DecisionTree, depth(51), TrialOrigin::WarmStart),
        (Family::DecisionTree, depth(52), TrialOrigin::WarmStart),
        (Family::DecisionTree, depth(1), TrialOrigin::Sampler),
        (Family::DecisionTree, depth(2), TrialOrigin::Sampler),
        (Family::DecisionTree, depth(3), TrialOrigin::Sampler),
    ];
    assert_eq!(got, want);
    // The sampler saw the warm observations, and then was exhausted with trials still to run.
    assert!(!plan.finished);

    // Seeded configurations already run are not run again, whatever happened to them.
    let mut trials = Vec::new();
    apply(&mut trials, &plan);
    trials[0].status.phase = TrialPhase::Failed;
    trials[3].status.phase = TrialPhase::Succeeded;
    let again = run(
        &spec,
        Some(&plan.status),
        &trials,
        &warm,
        101,
        &Finite::new(3),
    );
    assert!(again.create.is_empty());
}

#[test]
fn seed_is_the_algorithm_seed_or_a_stable_hash_of_the_name() {
    let sampler = Finite::new(5);
    let _ = run(&spec(), None, &[], &WarmHistory::default(), 0, &sampler);
    assert_eq!(sampler.seed.get(), Some(7));
    assert_eq!(sampler.index.get(), Some(0));
    let mut unseeded = spec();
    unseeded.algorithm.seed = None;
    let _ = run(&unseeded, None, &[], &WarmHistory::default(), 0, &sampler);
    assert_eq!(sampler.seed.get(), Some(study::name_seed(NAME)));
    assert_eq!(study::study_seed(&unseeded, NAME), study::name_seed(NAME));
    // Pinned: changing it would change every unseeded study's suggestions after an upgrade.
    assert_eq!(study::name_seed(NAME), 0x5dfa_98c5_b5c3_3066);
}

#[test]
fn goal_reached_succeeds_early_and_stops_active_trials() {
    let mut spec = spec();
    spec.budget.max_trials = 10;
    spec.budget.parallelism = Some(3);
    spec.objective.goal = Some(0.9);
    let trials = [
        succeeded(0, 0.95),
        running(1, 10),
        trial(2, TrialPhase::Pending),
    ];
    let plan = simple(&spec, None, &trials, 100);
    assert!(plan.finished);
    assert!(plan.create.is_empty());
    assert_eq!(plan.status.phase, StudyPhase::Succeeded);
    assert_eq!(true_reason(&plan.status), Some(reason::GOAL_REACHED));
    let stopped: Vec<(&str, TrialPhase, &str)> = plan
        .stop
        .iter()
        .map(|s| (s.name.as_str(), s.phase, s.reason.as_str()))
        .collect();
    assert_eq!(
        stopped,
        [
            ("iris-1", TrialPhase::Pruned, reason::GOAL_REACHED),
            ("iris-2", TrialPhase::Pruned, reason::GOAL_REACHED)
        ]
    );
    assert_eq!(
        plan.winner.as_ref().map(|w| w.name.as_str()),
        Some("iris-0")
    );
    assert_eq!(plan.status.completion_time, Some(at(100)));

    // A minimised metric reaches its goal from above.
    spec.objective.metric = Metric::LogLoss;
    spec.dataset.task = Task::Binary;
    spec.objective.goal = Some(0.3);
    let mut t = trial(0, TrialPhase::Succeeded);
    t.status.metrics.insert("log_loss".into(), 0.31);
    let plan = simple(&spec, None, &[t.clone()], 100);
    assert!(!plan.finished);
    t.status.metrics.insert("log_loss".into(), 0.3);
    let plan = simple(&spec, None, &[t], 100);
    assert_eq!(true_reason(&plan.status), Some(reason::GOAL_REACHED));
}

#[test]
fn study_timeout_stops_trials_and_succeeds_only_with_a_winner() {
    let mut spec = spec();
    spec.budget.timeout_seconds = Some(60);
    spec.budget.parallelism = Some(2);
    let first = simple(&spec, None, &[], 1_000);
    assert_eq!(first.status.start_time, Some(at(1_000)));
    let trials = [running(0, 1_000), running(1, 1_000)];
    let plan = simple(&spec, Some(&first.status), &trials, 1_060);
    assert!(!plan.finished, "the limit itself is not past it");
    let plan = simple(&spec, Some(&plan.status), &trials, 1_061);
    assert!(plan.finished);
    assert_eq!(plan.status.phase, StudyPhase::Failed);
    assert_eq!(true_reason(&plan.status), Some(reason::TIMEOUT));
    assert_eq!(plan.stop.len(), 2);
    assert!(
        plan.stop
            .iter()
            .all(|s| s.reason == reason::STUDY_TIMEOUT && s.phase == TrialPhase::Pruned)
    );

    let trials = [succeeded(0, 0.5), running(1, 1_000)];
    let plan = simple(&spec, Some(&first.status), &trials, 1_061);
    assert_eq!(plan.status.phase, StudyPhase::Succeeded);
    assert_eq!(
        plan.winner.as_ref().map(|w| w.name.as_str()),
        Some("iris-0")
    );
    assert_eq!(plan.stop.len(), 1);

    // Without a stored status the clock starts at the first trial's start.
    let plan = simple(&spec, None, &[running(0, 1_000)], 1_061);
    assert_eq!(plan.status.start_time, Some(at(1_000)));
    assert!(plan.finished);
}

#[test]
fn a_recorded_ending_sticks_while_it_holds() {
    // Timed out with the last trials running: once they are stopped the budget is spent too,
    // but the study stays timed out.
    let mut spec = spec();
    spec.budget.max_trials = 2;
    spec.budget.parallelism = Some(2);
    spec.budget.timeout_seconds = Some(10);
    let first = simple(&spec, None, &[], 0);
    let mut trials = vec![succeeded(0, 0.5), running(1, 0)];
    let timed_out = simple(&spec, Some(&first.status), &trials, 11);
    assert_eq!(true_reason(&timed_out.status), Some(reason::TIMEOUT));
    apply(&mut trials, &timed_out);
    let after = simple(&spec, Some(&timed_out.status), &trials, 12);
    assert!(after.stop.is_empty());
    assert_eq!(after.status.conditions, timed_out.status.conditions);
    assert_eq!(
        after.status.completion_time,
        timed_out.status.completion_time
    );
    // Looked at afresh, the budget comes first.
    let fresh = simple(&spec, None, &trials, 12);
    assert_eq!(true_reason(&fresh.status), Some(reason::BUDGET_EXHAUSTED));
    // And a study that finished its budget in time does not time out afterwards.
    let late = simple(&spec, Some(&fresh.status), &trials, 1_000);
    assert_eq!(late.status, fresh.status);
}

#[test]
fn trial_timeout_fails_the_trial() {
    let mut spec = spec();
    spec.budget.trial_timeout_seconds = Some(30);
    spec.budget.parallelism = Some(2);
    let trials = [running(0, 100), running(1, 120)];
    let plan = simple(&spec, None, &trials, 131);
    assert_eq!(plan.stop.len(), 1);
    assert_eq!(plan.stop[0].name, "iris-0");
    assert_eq!(plan.stop[0].phase, TrialPhase::Failed);
    assert_eq!(plan.stop[0].reason, reason::TRIAL_TIMEOUT);
    assert!(
        plan.create.is_empty(),
        "the slot frees once the stop is observed"
    );
    assert!(!plan.finished);
}

fn failed(index: u32, reason: &str, message: &str, completed: i64) -> ObservedTrial {
    let mut t = trial(index, TrialPhase::Failed);
    t.status.reason = Some(reason.into());
    t.status.message = Some(message.into());
    t.status.completion_time = Some(at(completed));
    t
}

#[test]
fn too_many_failures_fails_grouping_the_failures_by_reason() {
    let mut spec = spec();
    spec.budget.max_trials = 10;
    spec.budget.max_failed_trials = Some(3);
    let a = failed(
        0,
        "ParityMismatch",
        "validation row 9: 0.61 in the trainer",
        50,
    );
    let b = failed(1, "BadInput", "column species not found", 40);
    let c = failed(
        2,
        "ParityMismatch",
        "validation row 3: 0.2 in the trainer",
        45,
    );
    let plan = simple(&spec, None, &[a.clone(), b.clone(), running(3, 10)], 100);
    assert!(!plan.finished);
    let plan = simple(
        &spec,
        None,
        &[a.clone(), b.clone(), c.clone(), running(3, 10)],
        100,
    );
    assert!(plan.finished);
    assert_eq!(plan.status.phase, StudyPhase::Failed);
    assert_eq!(plan.winner, None);
    let failed = condition(&plan.status, condition_type::FAILED);
    assert_eq!(failed.reason, reason::TOO_MANY_FAILURES);
    assert_eq!(
        failed.message,
        "3 trials failed (maxFailedTrials is 3); no trial succeeded, nothing to serve: \
         2 ParityMismatch (iris-0, iris-2: validation row 9: 0.61 in the trainer); \
         1 BadInput (iris-1: column species not found)"
    );
    assert_eq!(plan.stop.len(), 1);
    assert_eq!(plan.stop[0].reason, reason::STUDY_FAILED);

    // Raising the limit resumes the study.
    spec.budget.max_failed_trials = Some(4);
    let resumed = simple(&spec, Some(&plan.status), &[a, b, c], 101);
    assert_eq!(resumed.status.phase, StudyPhase::Running);
    assert_eq!(resumed.create.len(), 1);
}

#[test]
fn configuration_failures_do_not_end_a_study_that_has_a_model() {
    let mut spec = spec();
    spec.budget.max_trials = 20;
    spec.budget.max_failed_trials = Some(3);
    spec.budget.parallelism = Some(2);
    // Five good trials, then the configurations the export cannot reproduce (issue 17).
    let mut trials: Vec<ObservedTrial> = (0..5)
        .map(|i| succeeded(i, 0.9 + f64::from(i) / 100.0))
        .collect();
    for i in 5..9 {
        trials.push(failed(i, "ParityMismatch", "prediction differs", 50));
    }
    trials.push(failed(9, "BadInput", "max_leaves 2 with max_depth 9", 50));
    let plan = simple(&spec, None, &trials, 100);
    assert!(!plan.finished, "{:?}", plan.status.conditions);
    assert_eq!(plan.status.phase, StudyPhase::Running);
    assert_eq!(plan.create.len(), 2, "the search goes on");

    // Infrastructure failures still stop it, and it promotes its best trial.
    for i in 10..13 {
        trials.push(failed(i, "Internal", "node lost", 60));
    }
    let plan = simple(&spec, None, &trials, 100);
    assert!(plan.finished);
    assert_eq!(plan.status.phase, StudyPhase::Succeeded);
    assert_eq!(true_reason(&plan.status), Some(reason::TOO_MANY_FAILURES));
    let winner = plan.winner.unwrap();
    assert_eq!(winner.name, "iris-4");
    let done = condition(&plan.status, condition_type::SUCCEEDED);
    assert!(
        done.message
            .starts_with("3 trials failed (maxFailedTrials is 3); best: trial iris-4"),
        "{}",
        done.message
    );

    // A failure without a known reason is the infrastructure's.
    let mut trials: Vec<ObservedTrial> = vec![succeeded(0, 0.9)];
    for i in 1..4 {
        trials.push(trial(i, TrialPhase::Failed));
    }
    let plan = simple(&spec, None, &trials, 100);
    assert_eq!(true_reason(&plan.status), Some(reason::TOO_MANY_FAILURES));
    assert_eq!(plan.status.phase, StudyPhase::Succeeded);
}

#[test]
fn a_study_that_ends_with_nothing_succeeded_says_why_each_failed() {
    let mut spec = spec();
    spec.budget.max_trials = 3;
    spec.budget.max_failed_trials = Some(10);
    let trials = [
        failed(0, "ParityMismatch", "row 1 differs", 10),
        trial(1, TrialPhase::Pruned),
        failed(
            2,
            "TrialTimeout",
            "the trial ran past its timeout of 5s",
            10,
        ),
    ];
    let plan = simple(&spec, None, &trials, 100);
    assert_eq!(plan.status.phase, StudyPhase::Failed);
    let failed = condition(&plan.status, condition_type::FAILED);
    assert_eq!(failed.reason, reason::BUDGET_EXHAUSTED);
    assert_eq!(
        failed.message,
        "3 trials finished; no trial succeeded, nothing to serve: \
         1 ParityMismatch (iris-0: row 1 differs); \
         1 TrialTimeout (iris-2: the trial ran past its timeout of 5s)"
    );

    // Trials that succeeded but miss a constraint are named as such.
    spec.constraints.max_model_bytes = Some(1);
    let plan = simple(
        &spec,
        None,
        &[
            succeeded(0, 0.9),
            trial(1, TrialPhase::Pruned),
            trial(2, TrialPhase::Pruned),
        ],
        100,
    );
    let failed = condition(&plan.status, condition_type::FAILED);
    assert_eq!(
        failed.message,
        "3 trials finished; no succeeded trial meets the constraints, nothing to serve"
    );
}

fn measured(mut t: ObservedTrial, p99: f64, bytes: u64) -> ObservedTrial {
    t.status.latency = Some(Latency {
        p50_micros: p99 / 2.0,
        p99_micros: p99,
    });
    t.status.model_bytes = Some(bytes);
    t
}

fn with_folds(mut t: ObservedTrial, std: f64, n: f64) -> ObservedTrial {
    t.status.metrics.insert("accuracy_std".into(), std);
    t.status.metrics.insert("accuracy_n".into(), n);
    t
}

#[test]
fn ties_within_the_noise_go_to_the_cheaper_model() {
    let spec = spec();
    let winner = |trials: &[ObservedTrial]| {
        let refs: Vec<&ObservedTrial> = trials.iter().collect();
        study::select_winner(&spec, &refs).unwrap()
    };

    // No spread reported: a tie is equality to TIE_EPSILON. Lower latency wins.
    let best = winner(&[
        measured(succeeded(0, 1.0), 120.0, 900),
        measured(succeeded(1, 1.0), 30.0, 5_000),
        measured(succeeded(2, 0.99999), 10.0, 100),
        measured(succeeded(3, 0.98), 5.0, 100),
    ]);
    assert_eq!(best.name, "iris-2");
    assert_eq!(best.tie_broken_by.as_deref(), Some("latency"));
    assert_eq!(best.objective, 0.99999);

    // Latencies within 10 % are equal: the smaller file wins.
    let best = winner(&[
        measured(succeeded(0, 1.0), 100.0, 9_000),
        measured(succeeded(1, 1.0), 105.0, 3_000),
    ]);
    assert_eq!(best.name, "iris-1");
    assert_eq!(best.tie_broken_by.as_deref(), Some("size"));

    // A clear winner stays the winner, however slow.
    let best = winner(&[
        measured(succeeded(0, 0.97), 900.0, 9_000),
        measured(succeeded(1, 0.95), 10.0, 100),
    ]);
    assert_eq!(best.name, "iris-0");
    assert_eq!(best.tie_broken_by, None);

    // With fold scores, the noise is the best trial's standard error: 0.02 / sqrt(4) = 0.01.
    let trials = [
        measured(with_folds(succeeded(0, 0.97), 0.02, 4.0), 200.0, 900),
        measured(with_folds(succeeded(1, 0.961), 0.03, 4.0), 20.0, 900),
        measured(with_folds(succeeded(2, 0.959), 0.0, 4.0), 2.0, 900),
    ];
    let best = winner(&trials);
    assert_eq!(best.name, "iris-1");
    assert_eq!(best.tie_broken_by.as_deref(), Some("latency"));

    // The cheapest tied trial is the one the study promotes and the message names.
    let mut spec = spec.clone();
    spec.budget.max_trials = 3;
    let plan = simple(&spec, None, &trials, 100);
    assert_eq!(
        plan.winner.as_ref().map(|w| w.name.as_str()),
        Some("iris-1")
    );
    let done = condition(&plan.status, condition_type::SUCCEEDED);
    assert!(
        done.message.ends_with("(tie broken by latency)"),
        "{}",
        done.message
    );

    // An unmeasured latency is the slowest.
    let best = winner(&[succeeded(0, 1.0), measured(succeeded(1, 1.0), 500.0, 100)]);
    assert_eq!(best.name, "iris-1");
}

#[test]
fn early_stopping_prunes_with_the_rules_message() {
    let mut spec = spec();
    spec.budget.parallelism = Some(3);
    let report = |v: f64| Report {
        step: 1,
        metrics: BTreeMap::from([("accuracy".to_string(), v)]),
    };
    let mut weak = running(0, 10);
    weak.status.reports = vec![report(0.1)];
    let mut strong = running(1, 10);
    strong.status.reports = vec![report(0.8)];
    let trials = [weak, strong, running(2, 10)];

    // No rule, no pruning.
    let plan = simple(&spec, None, &trials, 100);
    assert!(plan.stop.is_empty());

    spec.early_stopping.rule = EarlyStoppingRule::Median;
    let seen: Cell<usize> = Cell::new(0);
    let pruner = |s: &EarlyStopping,
                  d: Direction,
                  m: &str,
                  t: &[Report],
                  o: &[&[Report]]|
     -> Option<String> {
        assert_eq!(s.rule, EarlyStoppingRule::Median);
        assert_eq!(d, Direction::Maximize);
        assert_eq!(m, "accuracy");
        // The other trial with reports, never itself or one without reports.
        assert_eq!(o.len(), 1);
        seen.set(seen.get() + 1);
        low_pruner(s, d, m, t, o)
    };
    let strategies = Strategies {
        sampler: &Finite::new(9),
        pruner: &pruner,
    };
    let plan = study::plan_with(
        &spec,
        id(),
        None,
        &trials,
        &WarmHistory::default(),
        &at(100),
        strategies,
    );
    assert_eq!(seen.get(), 2);
    assert_eq!(plan.stop.len(), 1);
    assert_eq!(plan.stop[0].name, "iris-0");
    assert_eq!(plan.stop[0].phase, TrialPhase::Pruned);
    assert_eq!(plan.stop[0].reason, reason::EARLY_STOPPED);
    assert_eq!(plan.stop[0].message, "accuracy 0.1 is below 0.2");
}

#[test]
fn winner_honours_constraints_ties_and_finite_objectives() {
    let mut spec = spec();
    spec.budget.max_trials = 6;
    spec.constraints = Constraints {
        max_predict_latency_micros: Some(100),
        max_model_bytes: Some(1_000),
    };
    let measured = |mut t: ObservedTrial, p99: f64, bytes: u64| {
        t.status.latency = Some(Latency {
            p50_micros: p99 / 2.0,
            p99_micros: p99,
        });
        t.status.model_bytes = Some(bytes);
        t
    };
    let mut unmeasured = succeeded(0, 0.99);
    unmeasured.status.model_bytes = Some(10);
    let mut nan = measured(succeeded(5, 0.5), 1.0, 1);
    nan.status.objective = Some(f64::NAN);
    let trials = [
        unmeasured,
        measured(succeeded(1, 0.98), 101.0, 10),
        measured(succeeded(2, 0.98), 10.0, 1_001),
        measured(succeeded(4, 0.9), 100.0, 1_000),
        measured(succeeded(3, 0.9), 50.0, 50),
        nan,
    ];
    let plan = simple(&spec, None, &trials, 100);
    assert_eq!(plan.status.phase, StudyPhase::Succeeded);
    assert_eq!(true_reason(&plan.status), Some(reason::BUDGET_EXHAUSTED));
    let winner = plan.winner.unwrap();
    assert_eq!(winner.name, "iris-3", "tie at 0.9 goes to the lower index");
    assert_eq!(winner.objective, 0.9);
    assert_eq!(plan.status.best_trial, Some(winner));

    // Objective falls back to the metric when not copied out.
    let mut t = succeeded(0, 0.7);
    t.status.objective = None;
    let plan = simple(&self::spec(), None, &[t], 100);
    assert_eq!(plan.status.best_trial.map(|b| b.objective), Some(0.7));

    // Nothing qualifies: the budget is spent and the study failed.
    let mut spec = self::spec();
    spec.budget.max_trials = 1;
    let plan = simple(&spec, None, &[trial(0, TrialPhase::Pruned)], 100);
    assert_eq!(plan.status.phase, StudyPhase::Failed);
    assert_eq!(true_reason(&plan.status), Some(reason::BUDGET_EXHAUSTED));
    assert_eq!(plan.winner, None);
}

#[test]
fn raising_max_trials_resumes_a_finished_study() {
    let mut spec = spec();
    spec.budget.max_trials = 2;
    let trials = [succeeded(0, 0.5), succeeded(1, 0.6)];
    let done = simple(&spec, None, &trials, 100);
    assert!(done.finished);
    assert_eq!(done.status.phase, StudyPhase::Succeeded);
    assert!(done.create.is_empty());
    spec.budget.max_trials = 4;
    let resumed = simple(&spec, Some(&done.status), &trials, 200);
    assert!(!resumed.finished);
    assert_eq!(resumed.status.phase, StudyPhase::Running);
    assert_eq!(resumed.winner, None);
    assert_eq!(resumed.status.completion_time, None);
    assert_eq!(resumed.status.start_time, done.status.start_time);
    assert_eq!(resumed.create.len(), 1);
    assert_eq!(resumed.create[0].name, "iris-2");
    let running_condition = condition(&resumed.status, condition_type::RUNNING);
    assert_eq!(running_condition.status, "True");
    assert_eq!(running_condition.last_transition_time, at(200));
}

#[test]
fn lowering_limits_stops_nothing_and_holds_back_creation() {
    let mut spec = spec();
    spec.budget.max_trials = 10;
    spec.budget.parallelism = Some(4);
    let trials = [
        running(0, 1),
        running(1, 1),
        running(2, 1),
        succeeded(3, 0.5),
    ];
    let plan = simple(&spec, None, &trials, 100);
    assert_eq!(plan.create.len(), 1);
    spec.budget.parallelism = Some(1);
    let plan = simple(&spec, None, &trials, 100);
    assert!(plan.create.is_empty() && plan.stop.is_empty());
    spec.budget.parallelism = Some(4);
    spec.budget.max_trials = 2;
    let plan = simple(&spec, None, &trials, 100);
    assert!(plan.create.is_empty() && plan.stop.is_empty());
    assert!(!plan.finished, "running trials finish first");
    assert_eq!(plan.status.progress.as_deref(), Some("1/2"));
    let all_done = [
        succeeded(0, 0.1),
        succeeded(1, 0.2),
        succeeded(2, 0.3),
        succeeded(3, 0.5),
    ];
    let plan = simple(&spec, None, &all_done, 100);
    assert!(plan.finished && plan.stop.is_empty());
    assert_eq!(plan.winner.map(|w| w.name), Some("iris-3".to_string()));
}

#[test]
fn grid_exhaustion_waits_for_running_trials_then_finishes() {
    let mut spec = spec();
    spec.budget.max_trials = 10;
    spec.budget.parallelism = Some(5);
    let sampler = Finite::new(2);
    let plan = run(&spec, None, &[], &WarmHistory::default(), 0, &sampler);
    assert_eq!(plan.create.len(), 2);
    let mut trials = Vec::new();
    apply(&mut trials, &plan);
    let plan = run(
        &spec,
        Some(&plan.status),
        &trials,
        &WarmHistory::default(),
        1,
        &sampler,
    );
    assert!(plan.create.is_empty());
    assert!(!plan.finished);
    trials[0].status.phase = TrialPhase::Succeeded;
    trials[0].status.objective = Some(0.5);
    trials[1].status.phase = TrialPhase::Failed;
    let plan = run(
        &spec,
        Some(&plan.status),
        &trials,
        &WarmHistory::default(),
        2,
        &sampler,
    );
    assert!(plan.finished);
    assert_eq!(plan.status.phase, StudyPhase::Succeeded);
    assert_eq!(true_reason(&plan.status), Some(reason::GRID_EXHAUSTED));
    assert_eq!(plan.winner.map(|w| w.name), Some("iris-0".to_string()));
}

#[test]
fn steady_state_writes_nothing_and_keeps_transition_times() {
    let mut spec = spec();
    spec.budget.parallelism = Some(2);
    let first = simple(&spec, None, &[], 100);
    let trials = [running(0, 100), running(1, 100)];
    let second = simple(&spec, Some(&first.status), &trials, 105);
    assert!(second.create.is_empty() && second.stop.is_empty());
    // Through the API server and back: times lose sub-second precision, nothing else changes.
    let stored: StudyStatus =
        serde_json::from_str(&serde_json::to_string(&second.status).unwrap()).unwrap();
    assert_eq!(stored, second.status);
    let third = study::plan_with(
        &spec,
        id(),
        Some(&stored),
        &trials,
        &WarmHistory::default(),
        &Time(Timestamp::from_millisecond(200_700).unwrap()),
        Strategies {
            sampler: &Finite::new(1000),
            pruner: &never,
        },
    );
    assert!(third.create.is_empty() && third.stop.is_empty());
    assert!(!study::status_changed(Some(&stored), &third.status));
    assert_eq!(
        condition(&third.status, condition_type::RUNNING).last_transition_time,
        at(100)
    );
    assert!(study::status_changed(None, &third.status));
}

#[test]
fn same_inputs_same_plan() {
    let mut spec = spec();
    spec.budget.parallelism = Some(3);
    spec.algorithm.seed = None;
    let trials = [succeeded(0, 0.4), running(1, 3)];
    let sampler = RandomSampler;
    let a = run(&spec, None, &trials, &WarmHistory::default(), 10, &sampler);
    let b = run(&spec, None, &trials, &WarmHistory::default(), 10, &sampler);
    assert_eq!(a, b);
    assert_eq!(a.create.len(), 2);
    // The public entry point with the spec's own sampler behaves the same way.
    let c = study::plan(&spec, id(), None, &trials, &WarmHistory::default(), &at(10));
    let d = study::plan(&spec, id(), None, &trials, &WarmHistory::default(), &at(10));
    assert_eq!(c, d);
    assert_eq!(c.create.len(), 2);
}

#[test]
fn observed_trial_from_a_trial_object() {
    let mut object = flywheel_core::api::Trial::new("iris-3", trial(3, TrialPhase::Pending).spec);
    assert_eq!(
        ObservedTrial::from_trial(&object).map(|t| (t.name, t.status.phase)),
        Some(("iris-3".to_string(), TrialPhase::Pending))
    );
    object.metadata.name = None;
    assert_eq!(ObservedTrial::from_trial(&object), None);
}

// ---------------------------------------------------------------------------------------------
// Simulation
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Scenario {
    spec: StudySpec,
    warm: WarmHistory,
    /// Drives the cluster: which trials start, report, finish or fail, and what gets applied.
    world: u64,
    engine: Engine,
}

/// Who decides what to try and what to prune.
#[derive(Clone, Copy, Debug)]
enum Engine {
    /// [`Finite`] with this many points, pruning with [`low_pruner`].
    Finite(i64),
    /// Random search, pruning with [`low_pruner`].
    Random,
    /// The spec's own sampler and early-stopping rule, as `study::plan` uses them.
    Real,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let budget = (
        0u32..16,
        prop::option::of(0u32..4),
        prop::option::of(1u32..4),
        prop::option::of(30u64..300),
        prop::option::of(5u64..60),
    );
    let objective = (
        prop::bool::ANY,
        prop::option::weighted(0.3, 0.8f64..1.0),
        prop::option::of(20u64..120),
        prop::option::of(200u64..2_000),
    );
    let warm = (
        prop::collection::vec(1i64..=64, 0..3),
        prop::option::of(0u32..4),
        prop::collection::vec(
            prop::collection::vec((1i64..=64, 0u8..4, 0.0f64..1.0), 0..5),
            0..3,
        ),
    );
    (
        budget,
        objective,
        warm,
        prop::option::of(any::<u64>()),
        prop::bool::ANY,
        any::<u64>(),
        prop_oneof![
            (1i64..6).prop_map(Engine::Finite),
            Just(Engine::Random),
            Just(Engine::Real),
        ],
        (0u8..3, 0u8..3, 1u32..4),
    )
        .prop_map(
            |(
                (max_trials, parallelism, max_failed, timeout, trial_timeout),
                (minimise, goal, latency, bytes),
                (configurations, top_k, parents),
                seed,
                early,
                world,
                engine,
                (algorithm, rule, knob),
            )| {
                let mut spec = spec();
                spec.budget = Budget {
                    max_trials,
                    parallelism,
                    max_failed_trials: max_failed,
                    timeout_seconds: timeout,
                    trial_timeout_seconds: trial_timeout,
                };
                if minimise {
                    spec.objective.metric = Metric::Rmse;
                    spec.dataset.task = Task::Regression;
                }
                spec.objective.goal = goal;
                spec.algorithm.seed = seed;
                spec.constraints = Constraints {
                    max_predict_latency_micros: latency,
                    max_model_bytes: bytes,
                };
                if early {
                    spec.early_stopping.rule = EarlyStoppingRule::Median;
                }
                if let Engine::Real = engine {
                    spec.algorithm.name = [
                        AlgorithmName::Random,
                        AlgorithmName::Grid,
                        AlgorithmName::Tpe,
                    ][usize::from(algorithm)];
                    if spec.algorithm.name == AlgorithmName::Grid {
                        // Six points: the study can exhaust them.
                        spec.search_space[0].params = BTreeMap::from([
                            ("max_depth".to_string(), int_domain(1, 3)),
                            ("min_samples_leaf".to_string(), int_domain(1, 2)),
                        ]);
                    }
                    spec.early_stopping = match rule {
                        0 => EarlyStopping::default(),
                        1 => EarlyStopping {
                            rule: EarlyStoppingRule::Median,
                            median: Some(MedianSettings {
                                min_trials: Some(knob),
                                warmup_steps: Some(1),
                            }),
                            asha: None,
                        },
                        _ => EarlyStopping {
                            rule: EarlyStoppingRule::Asha,
                            median: None,
                            asha: Some(AshaSettings {
                                min_resource: Some(1),
                                reduction_factor: Some(knob + 1),
                            }),
                        },
                    };
                }
                let names: Vec<String> =
                    (0..parents.len()).map(|i| format!("parent-{i}")).collect();
                if !configurations.is_empty() || !parents.is_empty() || top_k.is_some() {
                    spec.warm_start = Some(WarmStart {
                        studies: names.clone(),
                        top_k,
                        configurations: configurations
                            .into_iter()
                            .map(|d| Configuration {
                                family: Family::DecisionTree,
                                params: depth(d),
                            })
                            .collect(),
                    });
                }
                let warm = WarmHistory {
                    studies: parents
                        .into_iter()
                        .zip(names)
                        .map(|(observations, name)| ParentStudy {
                            name,
                            observations: observations
                                .into_iter()
                                .map(|(d, state, value)| Observation {
                                    family: Family::DecisionTree,
                                    params: depth(d),
                                    state: match state {
                                        0 => ObservationState::Failed,
                                        1 => ObservationState::Pruned,
                                        _ => ObservationState::Complete,
                                    },
                                    value: Some(value),
                                })
                                .collect(),
                        })
                        .collect(),
                };
                Scenario {
                    spec,
                    warm,
                    world,
                    engine,
                }
            },
        )
}

/// The winner, computed the obvious way.
fn oracle(spec: &StudySpec, trials: &[ObservedTrial]) -> Option<(String, f64)> {
    let metric = spec.objective.metric;
    let mut candidates: Vec<(u32, &str, f64)> = trials
        .iter()
        .filter(|t| t.status.phase == TrialPhase::Succeeded)
        .filter(|t| {
            spec.constraints
                .max_predict_latency_micros
                .is_none_or(|max| t.status.latency.is_some_and(|l| l.p99_micros <= max as f64))
                && spec
                    .constraints
                    .max_model_bytes
                    .is_none_or(|max| t.status.model_bytes.is_some_and(|b| b <= max))
        })
        .filter_map(|t| {
            let value = t
                .status
                .objective
                .or_else(|| t.status.metrics.get(metric.as_str()).copied())?;
            value
                .is_finite()
                .then_some((t.spec.index, t.name.as_str(), value))
        })
        .collect();
    candidates.sort_by(|a, b| {
        let by_value = match metric.direction() {
            Direction::Maximize => b.2.total_cmp(&a.2),
            Direction::Minimize => a.2.total_cmp(&b.2),
        };
        by_value.then(a.0.cmp(&b.0))
    });
    // Ties (the simulation reports no fold spread, so within TIE_EPSILON) go to the lowest
    // latency bucket, then the smallest file, then objective order.
    let (_, _, top) = *candidates.first()?;
    let trial = |name: &str| trials.iter().find(|t| t.name == name).unwrap();
    let p99 = |name: &str| {
        trial(name)
            .status
            .latency
            .map_or(f64::INFINITY, |l| l.p99_micros)
    };
    let bytes = |name: &str| trial(name).status.model_bytes.unwrap_or(u64::MAX);
    let tied: Vec<&(u32, &str, f64)> = candidates
        .iter()
        .filter(|c| (c.2 - top).abs() <= study::TIE_EPSILON)
        .collect();
    let fastest = tied.iter().map(|c| p99(c.1)).fold(f64::INFINITY, f64::min);
    let mut fast: Vec<&&(u32, &str, f64)> = tied
        .iter()
        .filter(|c| {
            fastest.is_infinite() || p99(c.1) <= fastest * (1.0 + study::LATENCY_TIE_FRACTION)
        })
        .collect();
    fast.sort_by_key(|c| bytes(c.1));
    fast.first()
        .map(|(_, name, value)| (name.to_string(), *value))
}

fn is_active(t: &ObservedTrial) -> bool {
    !t.status.phase.is_finished()
}

/// Every invariant of one plan against the state it was made from.
fn check(
    spec: &StudySpec,
    previous: Option<&StudyStatus>,
    trials: &[ObservedTrial],
    plan: &Plan,
    now: i64,
    pruner: &dyn Pruner,
) {
    let names: BTreeSet<&str> = trials.iter().map(|t| t.name.as_str()).collect();
    let largest = trials.iter().map(|t| t.spec.index).max();
    let active = trials.iter().filter(|t| is_active(t)).count();
    let parallelism = spec.budget.parallelism.unwrap_or(1).max(1) as usize;

    // Creates: fresh deterministic names, within budget and parallelism.
    let mut created = BTreeSet::new();
    for (i, new) in plan.create.iter().enumerate() {
        assert_eq!(new.name, format!("{NAME}-{}", new.spec.index));
        assert_eq!(new.spec.study, NAME);
        assert!(new.spec.origin.is_some());
        assert!(!names.contains(new.name.as_str()), "{} exists", new.name);
        assert!(created.insert(new.name.clone()));
        let expected = largest.map_or(0, |l| l + 1) + i as u32;
        assert_eq!(new.spec.index, expected);
    }
    if !plan.create.is_empty() {
        assert!(trials.len() + plan.create.len() <= spec.budget.max_trials as usize);
        assert!(active + plan.create.len() <= parallelism);
        assert!(!plan.finished);
    }

    // Stops: only active trials, each once, for a reason of the rules.
    let mut stopped = BTreeSet::new();
    for stop in &plan.stop {
        let t = trials
            .iter()
            .find(|t| t.name == stop.name)
            .expect("stops an existing trial");
        assert!(is_active(t), "stops finished trial {}", t.name);
        assert!(stopped.insert(stop.name.clone()));
        match stop.reason.as_str() {
            reason::TRIAL_TIMEOUT => {
                assert_eq!(stop.phase, TrialPhase::Failed);
                assert_eq!(t.status.phase, TrialPhase::Running);
                let start = t.status.start_time.as_ref().unwrap().0.as_second();
                assert!(start + (spec.budget.trial_timeout_seconds.unwrap() as i64) < now);
            }
            reason::EARLY_STOPPED => {
                assert_eq!(stop.phase, TrialPhase::Pruned);
                assert_ne!(spec.early_stopping.rule, EarlyStoppingRule::None);
                let mut others: Vec<&ObservedTrial> = trials
                    .iter()
                    .filter(|o| o.name != t.name && !o.status.reports.is_empty())
                    .collect();
                others.sort_by_key(|o| o.spec.index);
                let others: Vec<&[Report]> =
                    others.iter().map(|o| o.status.reports.as_slice()).collect();
                let metric = spec.objective.metric;
                let why = pruner.should_stop(
                    &spec.early_stopping,
                    metric.direction(),
                    metric.as_str(),
                    &t.status.reports,
                    &others,
                );
                assert_eq!(why.as_ref(), Some(&stop.message));
            }
            reason::GOAL_REACHED | reason::STUDY_TIMEOUT | reason::STUDY_FAILED => {
                assert_eq!(stop.phase, TrialPhase::Pruned);
                assert!(plan.finished);
            }
            other => panic!("unexpected stop reason {other}"),
        }
    }
    if plan.finished && true_reason(&plan.status) != Some(reason::INVALID_SPEC) {
        assert_eq!(
            plan.stop.len(),
            active,
            "a finished study stops every active trial"
        );
    }

    // Status.
    let status = &plan.status;
    let count = |phase| trials.iter().filter(|t| t.status.phase == phase).count() as u32;
    assert_eq!(status.trials.pending, count(TrialPhase::Pending));
    assert_eq!(status.trials.running, count(TrialPhase::Running));
    assert_eq!(status.trials.succeeded, count(TrialPhase::Succeeded));
    assert_eq!(status.trials.failed, count(TrialPhase::Failed));
    assert_eq!(status.trials.pruned, count(TrialPhase::Pruned));
    assert_eq!(
        status.progress,
        Some(format!(
            "{}/{}",
            status.trials.finished(),
            spec.budget.max_trials
        ))
    );
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        plan.finished,
        matches!(status.phase, StudyPhase::Succeeded | StudyPhase::Failed)
    );
    assert_eq!(status.completion_time.is_some(), plan.finished);
    if let Some(previous) = previous {
        if previous.start_time.is_some() {
            assert_eq!(status.start_time, previous.start_time);
        }
        if plan.finished && previous.completion_time.is_some() {
            assert_eq!(status.completion_time, previous.completion_time);
        }
        for c in &status.conditions {
            if let Some(p) = previous.conditions.iter().find(|p| p.type_ == c.type_) {
                if p.status == c.status {
                    assert_eq!(p.last_transition_time, c.last_transition_time);
                } else {
                    assert_eq!(c.last_transition_time, at(now));
                }
            }
        }
    }
    if !trials.is_empty() || !plan.create.is_empty() {
        assert!(status.start_time.is_some());
    }
    let truths: Vec<&str> = status
        .conditions
        .iter()
        .filter(|c| c.status == "True")
        .map(|c| c.type_.as_str())
        .collect();
    let expected_truth = match status.phase {
        StudyPhase::Pending => vec![],
        StudyPhase::Running => vec![condition_type::RUNNING],
        StudyPhase::Succeeded => vec![condition_type::SUCCEEDED],
        StudyPhase::Failed => vec![condition_type::FAILED],
    };
    assert_eq!(truths, expected_truth);

    // Winner.
    let best = oracle(spec, trials);
    assert_eq!(
        status
            .best_trial
            .as_ref()
            .map(|b| (b.name.clone(), b.objective)),
        best
    );
    assert_eq!(plan.winner.is_some(), status.phase == StudyPhase::Succeeded);
    if let Some(winner) = &plan.winner {
        assert_eq!(Some(winner), status.best_trial.as_ref());
    }

    // Why it finished.
    match true_reason(status) {
        Some(reason::TOO_MANY_FAILURES) => {
            assert!(status.trials.failed >= spec.budget.max_failed_trials());
        }
        Some(reason::BUDGET_EXHAUSTED) => {
            assert_eq!(active, 0);
            assert!(status.trials.finished() >= spec.budget.max_trials);
        }
        Some(reason::GOAL_REACHED) => {
            let goal = spec.objective.goal.unwrap();
            assert!(
                spec.objective
                    .metric
                    .direction()
                    .reaches(best.unwrap().1, goal)
            );
        }
        Some(reason::GRID_EXHAUSTED) => assert_eq!(active, 0),
        Some(reason::TIMEOUT) => {
            let start = status.start_time.as_ref().unwrap().0.as_second();
            assert!(start + spec.budget.timeout_seconds.unwrap() as i64 <= now);
        }
        Some(reason::RUNNING) => {}
        other => panic!("unexpected reason {other:?}"),
    }
}

/// Applies plans without any trial progress until nothing is left to do; the last status must
/// then be a fixed point, so an idle study causes no writes.
fn settle(
    spec: &StudySpec,
    trials: &mut Vec<ObservedTrial>,
    mut previous: StudyStatus,
    warm: &WarmHistory,
    now: i64,
    engine: Strategies<'_>,
) -> StudyStatus {
    for _ in 0..=spec.budget.max_trials + 3 {
        let plan = run_with(spec, Some(&previous), trials, warm, now, engine);
        check(spec, Some(&previous), trials, &plan, now, engine.pruner);
        if plan.create.is_empty() && plan.stop.is_empty() {
            let again = run_with(spec, Some(&plan.status), trials, warm, now, engine);
            assert_eq!(again, plan);
            assert!(!study::status_changed(Some(&plan.status), &again.status));
            return plan.status;
        }
        apply(trials, &plan);
        previous = plan.status;
    }
    panic!("the study did not settle");
}

/// How a simulated study went, to show the simulation reaches every ending.
#[derive(Debug, Default)]
struct Outcome {
    reason: String,
    trials: usize,
    plans: usize,
    restarts: usize,
    partial: usize,
    pruned: usize,
    resumed: bool,
    /// Interrupted plans that the next call completed.
    completed: usize,
}

fn simulate(scenario: Scenario) -> Outcome {
    let Scenario {
        mut spec,
        warm,
        world,
        engine,
    } = scenario;
    let mut rng = ChaCha8Rng::seed_from_u64(world);
    let finite = Finite::new(match engine {
        Engine::Finite(size) => size,
        _ => 0,
    });
    let real = search::sampler_for(&spec.algorithm);
    let engine = match engine {
        Engine::Finite(_) => Strategies {
            sampler: &finite,
            pruner: &low_pruner,
        },
        Engine::Random => Strategies {
            sampler: &RandomSampler,
            pruner: &low_pruner,
        },
        Engine::Real => Strategies {
            sampler: real.as_ref(),
            pruner: &early_stopping::should_stop,
        },
    };
    let minimise = spec.objective.metric.direction() == Direction::Minimize;
    let metric = spec.objective.metric.as_str().to_string();
    let mut trials: Vec<ObservedTrial> = Vec::new();
    let mut previous: Option<StudyStatus> = None;
    let mut now: i64 = 1_000_000;
    let mut resumed = false;
    let mut outcome = Outcome::default();

    for _ in 0..2_000 {
        let plan = run_with(&spec, previous.as_ref(), &trials, &warm, now, engine);
        outcome.plans += 1;
        check(&spec, previous.as_ref(), &trials, &plan, now, engine.pruner);
        assert_eq!(
            plan,
            run_with(&spec, previous.as_ref(), &trials, &warm, now, engine),
            "same inputs, same plan"
        );
        if spec.budget.timeout_seconds.is_none() {
            // What to create never depends on the stored status.
            assert_eq!(
                plan.create,
                run_with(&spec, None, &trials, &warm, now, engine).create
            );
        }

        if plan.finished && plan.stop.is_empty() && trials.iter().all(|t| !is_active(t)) {
            // Finished for good, unless more budget revives it.
            if !resumed && true_reason(&plan.status) == Some(reason::BUDGET_EXHAUSTED) {
                resumed = true;
                spec.budget.max_trials = plan.status.trials.finished() + rng.random_range(1..4u32);
                spec.budget.parallelism = Some(rng.random_range(1..4u32));
                let more = run_with(&spec, Some(&plan.status), &trials, &warm, now, engine);
                check(
                    &spec,
                    Some(&plan.status),
                    &trials,
                    &more,
                    now,
                    engine.pruner,
                );
                assert_ne!(true_reason(&more.status), Some(reason::BUDGET_EXHAUSTED));
                previous = Some(plan.status);
                continue;
            }
            let settled = settle(&spec, &mut trials, plan.status, &warm, now, engine);
            assert!(matches!(
                settled.phase,
                StudyPhase::Succeeded | StudyPhase::Failed
            ));
            // A finished study stays as it is, however late it is looked at again.
            let later = run_with(
                &spec,
                Some(&settled),
                &trials,
                &warm,
                now + 1_000_000,
                engine,
            );
            assert!(later.create.is_empty() && later.stop.is_empty());
            assert!(!study::status_changed(Some(&settled), &later.status));
            check_order(&spec, &trials);
            outcome.reason = true_reason(&settled).unwrap_or_default().to_string();
            outcome.trials = trials.len();
            outcome.pruned = trials
                .iter()
                .filter(|t| t.status.reason.as_deref() == Some(reason::EARLY_STOPPED))
                .count();
            outcome.resumed = resumed;
            return outcome;
        }

        // Apply the plan: creates in order but maybe only a prefix (a controller that crashed
        // midway), stops in any subset.
        let mut partial = plan.clone();
        if rng.random_bool(0.2) {
            outcome.partial += 1;
            let keep = rng.random_range(0..=partial.create.len());
            partial.create.truncate(keep);
            partial.stop.retain(|_| rng.random_bool(0.5));
        }
        apply(&mut trials, &partial);
        if partial.create.len() < plan.create.len() && plan.stop.is_empty() {
            // The next call completes the interrupted plan exactly: same names, same
            // configurations (the sampler's history is what it was for those indices).
            let next = run_with(&spec, Some(&plan.status), &trials, &warm, now, engine);
            assert_eq!(next.create, plan.create[partial.create.len()..]);
            outcome.completed += 1;
        }
        previous = if rng.random_bool(0.1) {
            // The stored status is lost; everything is rebuilt from the trial objects.
            outcome.restarts += 1;
            None
        } else {
            Some(plan.status.clone())
        };
        if rng.random_bool(0.1)
            && let Some(status) = previous.take()
        {
            // The controller catches up before anything else happens.
            previous = Some(settle(&spec, &mut trials, status, &warm, now, engine));
        }

        // The cluster moves on.
        for t in trials.iter_mut() {
            match t.status.phase {
                TrialPhase::Pending if rng.random_bool(0.5) => {
                    t.status.phase = TrialPhase::Running;
                    t.status.start_time = Some(at(now));
                }
                TrialPhase::Running => {
                    let roll: f64 = rng.random();
                    let mut value: f64 = rng.random();
                    if minimise {
                        value *= 2.0;
                    }
                    if roll < 0.3 {
                        t.status.reports.push(Report {
                            step: t.status.reports.len() as u64 + 1,
                            metrics: BTreeMap::from([(metric.clone(), value)]),
                        });
                    } else if roll < 0.55 {
                        t.status.phase = TrialPhase::Succeeded;
                        t.status.completion_time = Some(at(now));
                        let objective = if rng.random_bool(0.05) {
                            f64::NAN
                        } else {
                            value
                        };
                        if rng.random_bool(0.5) {
                            t.status.objective = Some(objective);
                        }
                        t.status.metrics.insert(metric.clone(), objective);
                        if rng.random_bool(0.8) {
                            let p99 = rng.random_range(1.0..200.0);
                            t.status.latency = Some(Latency {
                                p50_micros: p99 / 2.0,
                                p99_micros: p99,
                            });
                        }
                        if rng.random_bool(0.8) {
                            t.status.model_bytes = Some(rng.random_range(1..3_000));
                        }
                    } else if roll < 0.59 {
                        t.status.phase = TrialPhase::Failed;
                        t.status.completion_time = Some(at(now));
                        t.status.reason = Some("Crashed".into());
                        t.status.message = Some(format!("exit code {}", rng.random_range(1..255)));
                    }
                }
                _ => {}
            }
        }
        if rng.random_bool(0.03) {
            // Someone edits the budget mid-study.
            spec.budget.parallelism = Some(rng.random_range(1..5));
            spec.budget.max_trials = rng.random_range(0..12);
        }
        now += rng.random_range(0..20i64);
    }
    panic!("the study never finished");
}

/// Seeded configurations run before sampled ones, configurations first, in the spec's order.
fn check_order(spec: &StudySpec, trials: &[ObservedTrial]) {
    let mut by_index: Vec<&ObservedTrial> = trials.iter().collect();
    by_index.sort_by_key(|t| t.spec.index);
    let rank = |t: &ObservedTrial| match t.spec.origin {
        Some(TrialOrigin::Configuration) => 0,
        Some(TrialOrigin::WarmStart) => 1,
        _ => 2,
    };
    assert!(
        by_index.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "origins out of order: {:?}",
        by_index.iter().map(|t| t.spec.origin).collect::<Vec<_>>()
    );
    let configured: Vec<&Params> = by_index
        .iter()
        .filter(|t| t.spec.origin == Some(TrialOrigin::Configuration))
        .map(|t| &t.spec.params)
        .collect();
    let listed: Vec<&Params> = spec
        .warm_start
        .iter()
        .flat_map(|w| w.configurations.iter().map(|c| &c.params))
        .take(configured.len())
        .collect();
    assert_eq!(configured, listed);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_studies_keep_every_invariant_to_the_end(scenario in scenario()) {
        simulate(scenario);
    }

    /// Arbitrary, even impossible, observations: no panic, and the same plan twice.
    #[test]
    fn any_observations_plan_without_panicking(
        trials in prop::collection::vec(
            (
                any::<u32>(),
                0u8..5,
                prop::option::of(any::<f64>()),
                prop::option::of(-10i64..10_000),
                any::<bool>(),
            ),
            0..8,
        ),
        max_trials in any::<u32>(),
        parallelism in prop::option::of(any::<u32>()),
        timeouts in (prop::option::of(any::<u64>()), prop::option::of(any::<u64>())),
        goal in prop::option::of(any::<f64>()),
        now in -100i64..100_000,
        algorithm in 0usize..3,
    ) {
        let mut spec = spec();
        let algorithms = [AlgorithmName::Random, AlgorithmName::Grid, AlgorithmName::Tpe];
        spec.algorithm.name = algorithms[algorithm];
        spec.budget.max_trials = max_trials;
        spec.budget.parallelism = parallelism;
        spec.budget.timeout_seconds = timeouts.0;
        spec.budget.trial_timeout_seconds = timeouts.1;
        spec.objective.goal = goal;
        spec.early_stopping.rule = EarlyStoppingRule::Asha;
        let observed: Vec<ObservedTrial> = trials
            .into_iter()
            .map(|(index, phase, objective, start, named)| {
                let mut t = trial(index, [
                    TrialPhase::Pending,
                    TrialPhase::Running,
                    TrialPhase::Succeeded,
                    TrialPhase::Failed,
                    TrialPhase::Pruned,
                ][usize::from(phase)]);
                if !named {
                    t.name = format!("other-{index}");
                }
                t.status.objective = objective;
                t.status.start_time = start.map(at);
                if let Some(objective) = objective {
                    t.status.reports.push(Report {
                        step: u64::from(index % 7),
                        metrics: BTreeMap::from([("accuracy".to_string(), objective)]),
                    });
                }
                t
            })
            .collect();
        // The real rules: they too must cope with anything.
        let sampler = search::sampler_for(&spec.algorithm);
        let engine = Strategies {
            sampler: sampler.as_ref(),
            pruner: &early_stopping::should_stop,
        };
        let warm = WarmHistory::default();
        let a = run_with(&spec, None, &observed, &warm, now, engine);
        let b = run_with(&spec, Some(&a.status), &observed, &warm, now, engine);
        prop_assert_eq!(&a.create, &b.create);
        prop_assert_eq!(&a.stop, &b.stop);
        let c = run_with(&spec, Some(&b.status), &observed, &warm, now, engine);
        prop_assert_eq!(&b, &c);
        let names: BTreeSet<&str> = observed.iter().map(|t| t.name.as_str()).collect();
        for new in &a.create {
            prop_assert!(!names.contains(new.name.as_str()));
        }
    }
}

#[test]
fn plan_runs_a_grid_study_to_exhaustion_with_the_real_sampler() {
    let mut spec = spec();
    spec.algorithm.name = AlgorithmName::Grid;
    spec.budget.max_trials = 100;
    spec.budget.parallelism = Some(4);
    spec.search_space[0].params = BTreeMap::from([
        ("max_depth".to_string(), int_domain(1, 3)),
        ("min_samples_leaf".to_string(), int_domain(1, 2)),
    ]);
    let mut trials: Vec<ObservedTrial> = Vec::new();
    let mut previous = None;
    for step in 0..20 {
        let plan = study::plan(
            &spec,
            id(),
            previous.as_ref(),
            &trials,
            &WarmHistory::default(),
            &at(step),
        );
        if plan.finished {
            assert_eq!(true_reason(&plan.status), Some(reason::GRID_EXHAUSTED));
            assert_eq!(trials.len(), 6);
            let distinct: BTreeSet<String> = trials
                .iter()
                .map(|t| format!("{:?}", t.spec.params))
                .collect();
            assert_eq!(distinct.len(), 6, "every grid point once");
            assert_eq!(plan.winner.map(|w| w.name), Some("iris-5".to_string()));
            return;
        }
        apply(&mut trials, &plan);
        for t in &mut trials {
            if !t.status.phase.is_finished() {
                t.status.phase = TrialPhase::Succeeded;
                t.status.objective = Some(f64::from(t.spec.index) / 10.0);
            }
        }
        previous = Some(plan.status);
    }
    panic!("the grid never ran out");
}

#[test]
fn plan_prunes_with_the_studys_own_rule() {
    let mut spec = spec();
    spec.budget.parallelism = Some(3);
    spec.early_stopping = EarlyStopping {
        rule: EarlyStoppingRule::Median,
        median: Some(MedianSettings {
            min_trials: Some(2),
            warmup_steps: Some(1),
        }),
        asha: None,
    };
    let reports = |values: &[f64]| -> Vec<Report> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Report {
                step: i as u64 + 1,
                metrics: BTreeMap::from([("accuracy".to_string(), *v)]),
            })
            .collect()
    };
    let mut a = running(0, 10);
    a.status.reports = reports(&[0.8, 0.85, 0.9]);
    let mut b = running(1, 10);
    b.status.reports = reports(&[0.7, 0.75, 0.8]);
    let mut c = running(2, 10);
    c.status.reports = reports(&[0.1, 0.2]);
    let trials = [a, b, c];
    let plan = study::plan(&spec, id(), None, &trials, &WarmHistory::default(), &at(20));
    let stopped: Vec<(&str, &str)> = plan
        .stop
        .iter()
        .map(|s| (s.name.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(stopped, [("iris-2", reason::EARLY_STOPPED)]);
    assert_eq!(plan.stop[0].phase, TrialPhase::Pruned);
    assert!(!plan.stop[0].message.is_empty());
}

#[test]
fn parent_trials_become_observations_of_this_studys_metric() {
    let mut best = succeeded(0, 0.2);
    // The parent optimised something else; its objective is not this study's metric.
    best.status.objective = Some(100.0);
    best.status.metrics.insert("accuracy".into(), 0.9);
    let mut unmeasured = trial(1, TrialPhase::Succeeded);
    unmeasured.status.objective = Some(0.99);
    let mut pruned = trial(2, TrialPhase::Pruned);
    pruned.status.reports = vec![
        Report {
            step: 2,
            metrics: BTreeMap::from([("accuracy".to_string(), 0.4)]),
        },
        Report {
            step: 1,
            metrics: BTreeMap::from([("accuracy".to_string(), 0.3)]),
        },
    ];
    let parent = ParentStudy::from_trials(
        "parent",
        &[pruned, unmeasured, best, running(3, 0)],
        Metric::Accuracy,
    );
    let seen: Vec<(ObservationState, Option<f64>)> = parent
        .observations
        .iter()
        .map(|o| (o.state, o.value))
        .collect();
    assert_eq!(
        seen,
        [
            (ObservationState::Complete, Some(0.9)),
            (ObservationState::Failed, None),
            (ObservationState::Pruned, Some(0.4)),
            (ObservationState::Pending, None),
        ]
    );

    let mut spec = spec();
    spec.warm_start = Some(WarmStart {
        studies: vec!["parent".into()],
        top_k: None,
        configurations: vec![],
    });
    let warm = WarmHistory {
        studies: vec![parent],
    };
    let plan = run(&spec, None, &[], &warm, 0, &Finite::new(9));
    assert_eq!(plan.create[0].spec.origin, Some(TrialOrigin::WarmStart));
    assert_eq!(plan.create[0].spec.params, depth(1));
}

/// The simulation is only as good as what it reaches: every ending, restarts, partial applies,
/// pruning and resumption must all happen across a fixed set of generated studies.
#[test]
fn simulation_reaches_every_ending() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = scenario();
    let mut reasons = BTreeMap::<String, usize>::new();
    let (mut trials, mut plans, mut restarts, mut partial, mut pruned, mut resumed) =
        (0, 0, 0, 0, 0, 0);
    let mut completed = 0;
    for _ in 0..300 {
        let outcome = simulate(strategy.new_tree(&mut runner).unwrap().current());
        *reasons.entry(outcome.reason).or_default() += 1;
        trials += outcome.trials;
        plans += outcome.plans;
        restarts += outcome.restarts;
        partial += outcome.partial;
        pruned += outcome.pruned;
        resumed += usize::from(outcome.resumed);
        completed += outcome.completed;
    }
    for ending in [
        reason::BUDGET_EXHAUSTED,
        reason::GOAL_REACHED,
        reason::GRID_EXHAUSTED,
        reason::TIMEOUT,
        reason::TOO_MANY_FAILURES,
    ] {
        assert!(
            reasons.get(ending).copied().unwrap_or(0) >= 3,
            "{ending}: {reasons:?}"
        );
    }
    assert!(trials >= 900, "{trials} trials");
    assert!(plans >= 3_000, "{plans} plans");
    assert!(restarts >= 50 && partial >= 50 && pruned >= 20 && resumed >= 20);
    assert!(completed >= 20, "{completed} interrupted plans");
    eprintln!(
        "{reasons:?} trials {trials} plans {plans} restarts {restarts} partial {partial} \
         pruned {pruned} resumed {resumed} completed {completed}"
    );
}

#[test]
fn best_trial_carries_what_promotion_needs() {
    // Keeps the winner's shape honest: everything needed to promote it.
    let plan = simple(&spec(), None, &[succeeded(0, 0.5)], 0);
    let best: &BestTrial = plan.status.best_trial.as_ref().unwrap();
    assert_eq!(best.family, Family::DecisionTree);
    assert_eq!(best.params, depth(1));
    assert_eq!(best.metrics.get("accuracy"), Some(&0.5));
}

const NO_GPU: &str = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.";

/// A pending trial whose pod the scheduler cannot place.
fn unschedulable(index: u32) -> ObservedTrial {
    let mut t = trial(index, TrialPhase::Pending);
    t.status.conditions.push(flywheel_core::api::condition(
        flywheel_core::api::SCHEDULED,
        false,
        flywheel_core::api::UNSCHEDULABLE,
        NO_GPU,
        None,
        &at(10),
    ));
    t
}

/// A trial that failed because it was never placed before its deadline.
fn never_scheduled(index: u32) -> ObservedTrial {
    let mut t = unschedulable(index);
    t.status.phase = TrialPhase::Failed;
    t.status.reason = Some(flywheel_core::api::UNSCHEDULABLE.into());
    t.status.message = Some(format!(
        "the trial was never scheduled within trialTimeoutSeconds: {NO_GPU}"
    ));
    t
}

#[test]
fn unschedulable_trials_show_on_the_study_until_they_get_nodes() {
    let mut spec = spec();
    spec.budget.parallelism = Some(2);
    let plan = simple(&spec, None, &[unschedulable(0), unschedulable(1)], 100);
    assert!(!plan.finished);
    let waiting = condition(&plan.status, condition_type::TRIALS_SCHEDULABLE);
    assert_eq!(
        (waiting.status.as_str(), waiting.reason.as_str()),
        ("False", reason::UNSCHEDULABLE)
    );
    assert_eq!(
        waiting.message,
        format!("iris-0, iris-1 cannot be scheduled: {NO_GPU}")
    );
    assert_eq!(
        true_reason(&plan.status),
        Some(reason::RUNNING),
        "the phase condition is unaffected"
    );

    // A node arrived: the condition turns True, and stays (a study that never waited has none).
    let placed = simple(
        &spec,
        Some(&plan.status),
        &[running(0, 150), running(1, 150)],
        200,
    );
    let cleared = condition(&placed.status, condition_type::TRIALS_SCHEDULABLE);
    assert_eq!(
        (cleared.status.as_str(), cleared.reason.as_str()),
        ("True", reason::SCHEDULED)
    );
    assert_eq!(cleared.last_transition_time, at(200));
    let never_waited = simple(&spec, None, &[running(0, 150), running(1, 150)], 200);
    assert!(
        !never_waited
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == condition_type::TRIALS_SCHEDULABLE)
    );
}

#[test]
fn a_study_whose_trials_never_started_fails_unschedulable() {
    let mut spec = spec();
    spec.budget.parallelism = Some(2);
    spec.budget.trial_timeout_seconds = Some(600);
    // The first trial hit its deadline without a node; the study ends at once, naming the
    // scheduler's reason, and stops the one still waiting.
    let plan = simple(&spec, None, &[never_scheduled(0), unschedulable(1)], 700);
    assert!(plan.finished);
    assert_eq!(plan.status.phase, StudyPhase::Failed);
    let failed = condition(&plan.status, condition_type::FAILED);
    assert_eq!(failed.reason, reason::UNSCHEDULABLE);
    assert!(
        failed
            .message
            .starts_with("no trial could be scheduled (iris-0)")
            && failed.message.ends_with(NO_GPU),
        "{}",
        failed.message
    );
    assert_eq!(plan.stop.len(), 1);
    assert_eq!(
        (plan.stop[0].name.as_str(), plan.stop[0].reason.as_str()),
        ("iris-1", reason::STUDY_FAILED)
    );
    assert!(plan.create.is_empty());

    // The budget spent on such trials is the scheduler's doing too, not BudgetExhausted.
    spec.budget.max_trials = 2;
    let spent = simple(&spec, None, &[never_scheduled(0), never_scheduled(1)], 1300);
    assert_eq!(
        condition(&spent.status, condition_type::FAILED).reason,
        reason::UNSCHEDULABLE
    );

    // Without a trial timeout the study's own timeout ends the wait, with the same reason.
    spec.budget.max_trials = 5;
    spec.budget.trial_timeout_seconds = None;
    spec.budget.timeout_seconds = Some(300);
    let started = simple(&spec, None, &[unschedulable(0), unschedulable(1)], 0);
    let waited = simple(
        &spec,
        Some(&started.status),
        &[unschedulable(0), unschedulable(1)],
        400,
    );
    let failed = condition(&waited.status, condition_type::FAILED);
    assert_eq!(failed.reason, reason::UNSCHEDULABLE);
    assert!(
        failed.message.contains("timeout of 300s"),
        "{}",
        failed.message
    );
}

#[test]
fn an_unschedulable_trial_in_a_study_that_ran_others_is_an_ordinary_failure() {
    let mut spec = spec();
    spec.budget.parallelism = Some(2);
    // Capacity was there before (trial 0 ran): one trial's bad luck does not end the study.
    let plan = simple(&spec, None, &[succeeded(0, 0.9), never_scheduled(1)], 700);
    assert!(!plan.finished);
    assert_eq!(plan.create.len(), 2);
}
