//! The search engine through its public interface: invariants every sampler keeps on any space
//! and history, and TPE's reason to exist (it beats random search on standard test functions).

use std::collections::{BTreeMap, BTreeSet};

use flywheel_core::api::{Algorithm, AlgorithmName, Direction, TpeSettings};
use flywheel_core::search::grid::{GridSampler, grid_size};
use flywheel_core::search::random::{RandomSampler, sample_space, stream};
use flywheel_core::search::space::{Domain, Family, ParamValue, Params};
use flywheel_core::search::testfns::{BRANIN, HARTMANN6, TestFunction};
use flywheel_core::search::tpe::TpeSampler;
use flywheel_core::search::{
    FamilySpace, Observation, ObservationState, Sampler, Space, SuggestContext, sampler_for,
};
use proptest::prelude::*;

fn float_domain() -> impl Strategy<Value = Domain> {
    (
        -100.0..100.0f64,
        1e-3..100.0f64,
        any::<bool>(),
        prop::option::of(1u32..6),
    )
        .prop_map(|(low, width, log, steps)| {
            let low = if log { low.abs() + 1e-3 } else { low };
            Domain::Float {
                low,
                high: low + width,
                log,
                steps,
            }
        })
}

fn int_domain() -> impl Strategy<Value = Domain> {
    (-50i64..50, 0i64..8, any::<bool>()).prop_map(|(low, width, log)| {
        let low = if log { low.abs() + 1 } else { low };
        Domain::Int {
            low,
            high: low + width,
            log,
        }
    })
}

fn value() -> impl Strategy<Value = ParamValue> {
    prop_oneof![
        any::<bool>().prop_map(ParamValue::Bool),
        (-5i64..5).prop_map(ParamValue::Int),
        "[a-d]{1,3}".prop_map(ParamValue::Str),
    ]
}

fn categorical_domain() -> impl Strategy<Value = Domain> {
    prop::collection::vec(value(), 1..5).prop_map(|mut values| {
        // A choice list names each value once (validation insists).
        let mut seen = Vec::new();
        values.retain(|v| {
            let fresh = !seen.contains(v);
            seen.push(v.clone());
            fresh
        });
        Domain::Categorical { values }
    })
}

fn domain() -> impl Strategy<Value = Domain> {
    prop_oneof![float_domain(), int_domain(), categorical_domain()]
}

fn family_space(family: Family) -> impl Strategy<Value = FamilySpace> {
    (
        prop::collection::btree_map("[a-e]", domain(), 0..4),
        prop::collection::btree_map("f[0-1]", value(), 0..2),
    )
        .prop_map(move |(domains, fixed)| FamilySpace {
            family,
            domains,
            fixed,
        })
}

fn space() -> impl Strategy<Value = Space> {
    prop::sample::subsequence(Family::ALL.to_vec(), 1..4)
        .prop_flat_map(|families| families.into_iter().map(family_space).collect::<Vec<_>>())
        .prop_map(|families| Space { families })
}

fn state() -> impl Strategy<Value = ObservationState> {
    prop_oneof![
        4 => Just(ObservationState::Complete),
        1 => Just(ObservationState::Pending),
        1 => Just(ObservationState::Pruned),
        1 => Just(ObservationState::Failed),
    ]
}

fn objective() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        8 => (-10.0..10.0f64).prop_map(Some),
        1 => Just(None),
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)].prop_map(Some),
    ]
}

/// A history of trials drawn at random from the space, with arbitrary outcomes, plus a trial of a
/// family outside the space (a warm start from another study).
fn history(
    space: &Space,
    outcomes: &[(ObservationState, Option<f64>)],
    seed: u64,
) -> Vec<Observation> {
    let mut history: Vec<Observation> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, &(state, value))| {
            let point = sample_space(space, &mut stream(seed, i as u32, 99))?;
            Some(Observation {
                family: point.family,
                params: point.params,
                state,
                value,
            })
        })
        .collect();
    let foreign = Family::ALL
        .into_iter()
        .find(|f| space.families.iter().all(|s| s.family != *f));
    if let Some(family) = foreign {
        history.push(Observation {
            family,
            params: Params::from([("a".to_string(), ParamValue::Float(f64::NAN))]),
            state: ObservationState::Complete,
            value: Some(-1e9),
        });
    }
    history
}

fn samplers(startup: u32) -> Vec<(&'static str, Box<dyn Sampler + Send + Sync>)> {
    let tpe = Algorithm {
        name: AlgorithmName::Tpe,
        seed: None,
        tpe: Some(TpeSettings {
            startup_trials: Some(startup),
            candidates: Some(8),
            gamma: None,
        }),
    };
    let plain = |name| Algorithm {
        name,
        seed: None,
        tpe: None,
    };
    vec![
        ("random", sampler_for(&plain(AlgorithmName::Random))),
        ("grid", sampler_for(&plain(AlgorithmName::Grid))),
        ("tpe", sampler_for(&tpe)),
    ]
}

fn check_in_space(space: &Space, family: Family, params: &Params) -> Result<(), TestCaseError> {
    let family_space = space.families.iter().find(|f| f.family == family);
    let family_space =
        family_space.ok_or_else(|| TestCaseError::fail(format!("{family} is not in the space")))?;
    let mut names: BTreeSet<&String> = family_space.domains.keys().collect();
    names.extend(family_space.fixed.keys());
    prop_assert_eq!(params.keys().collect::<BTreeSet<_>>(), names);
    for (name, domain) in &family_space.domains {
        prop_assert!(
            domain.contains(&params[name]),
            "{name}={} outside {domain:?}",
            params[name]
        );
    }
    for (name, value) in &family_space.fixed {
        prop_assert_eq!(&params[name], value);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn suggestions_lie_in_the_space_and_replay_identically(
        space in space(),
        outcomes in prop::collection::vec((state(), objective()), 0..30),
        history_seed: u64,
        seed: u64,
        index in 0u32..1000,
        startup in 0u32..12,
        maximize: bool,
    ) {
        let history = history(&space, &outcomes, history_seed);
        let direction = if maximize { Direction::Maximize } else { Direction::Minimize };
        let ctx = SuggestContext { space: &space, history: &history, direction, seed, index };
        for (name, sampler) in samplers(startup) {
            let suggestion = sampler.suggest(&ctx);
            prop_assert_eq!(&suggestion, &sampler.suggest(&ctx), "{} is not deterministic", name);
            match suggestion {
                Some(s) => check_in_space(&space, s.family, &s.params)?,
                // Random search and TPE never run out of a non-empty space.
                None => prop_assert_eq!(name, "grid"),
            }
        }
    }

    #[test]
    fn samplers_survive_degenerate_spaces(
        low in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(5.0), Just(-1.0)],
        int_low in prop_oneof![Just(i64::MIN), Just(10i64)],
        seed: u64,
    ) {
        let domains = BTreeMap::from([
            ("a".to_string(), Domain::Float { low, high: 1.0, log: true, steps: Some(3) }),
            ("b".to_string(), Domain::Int { low: int_low, high: 3, log: false }),
            ("c".to_string(), Domain::Categorical { values: vec![] }),
        ]);
        let broken = FamilySpace { family: Family::Mlp, domains, fixed: Params::new() };
        let fine = FamilySpace {
            family: Family::Svm,
            domains: BTreeMap::from([(
                "c".to_string(),
                Domain::Int { low: i64::MIN, high: i64::MAX, log: false },
            )]),
            fixed: Params::new(),
        };
        let nan_grid = FamilySpace {
            family: Family::Logistic,
            domains: BTreeMap::from([(
                "a".to_string(),
                Domain::Float { low: f64::NAN, high: 1.0, log: false, steps: Some(2) },
            )]),
            fixed: Params::new(),
        };
        for families in [vec![], vec![broken.clone()], vec![broken, nan_grid, fine]] {
            let space = Space { families };
            let outcomes = vec![(ObservationState::Complete, Some(1.0)); 12];
            let history = history(&space, &outcomes, seed);
            let ctx = SuggestContext {
                space: &space, history: &history, direction: Direction::Minimize, seed, index: 3,
            };
            for (_, sampler) in samplers(1) {
                if let Some(s) = sampler.suggest(&ctx) {
                    check_in_space(&space, s.family, &s.params)?;
                }
            }
        }
    }

    #[test]
    fn grid_enumerates_every_point_once(space in space()) {
        let size = grid_size(&space);
        prop_assume!(size.is_some_and(|size| size <= 300));
        let size = size.unwrap_or_default();
        let mut history: Vec<Observation> = Vec::new();
        while let Some(point) = GridSampler.suggest(&SuggestContext {
            space: &space,
            history: &history,
            direction: Direction::Minimize,
            seed: 0,
            index: history.len() as u32,
        }) {
            check_in_space(&space, point.family, &point.params)?;
            prop_assert!(
                !history.iter().any(|o| o.family == point.family && o.params == point.params),
                "duplicate {point:?}"
            );
            prop_assert!(history.len() as u64 <= size, "more points than the grid size {size}");
            history.push(Observation {
                family: point.family,
                params: point.params,
                state: ObservationState::Pending,
                value: None,
            });
        }
        prop_assert_eq!(history.len() as u64, size);
    }
}

/// Runs `trials` sequential trials of `sampler` on `function` and returns the best value found.
fn best_after(sampler: &dyn Sampler, function: &TestFunction, seed: u64, trials: u32) -> f64 {
    let space = function.space();
    let mut history = Vec::new();
    let mut best = f64::INFINITY;
    for index in 0..trials {
        let ctx = SuggestContext {
            space: &space,
            history: &history,
            direction: Direction::Minimize,
            seed,
            index,
        };
        let suggestion = sampler
            .suggest(&ctx)
            .expect("a continuous space never runs out");
        let value = function
            .evaluate(&suggestion.params)
            .expect("every coordinate is suggested");
        best = best.min(value);
        history.push(Observation {
            family: suggestion.family,
            params: suggestion.params,
            state: ObservationState::Complete,
            value: Some(value),
        });
    }
    best
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// The median regret (best found minus the global minimum) over `seeds` runs of each sampler.
fn median_regrets(function: &TestFunction, trials: u32, seeds: u64) -> (f64, f64) {
    let regrets = |sampler: &(dyn Sampler + Sync)| {
        let runs: Vec<f64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..seeds)
                .map(|seed| scope.spawn(move || best_after(sampler, function, seed, trials)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a run panicked"))
                .collect()
        });
        median(runs.iter().map(|best| best - function.minimum).collect())
    };
    (regrets(&TpeSampler::default()), regrets(&RandomSampler))
}

#[test]
fn tpe_beats_random_search_on_branin() {
    let (tpe, random) = median_regrets(&BRANIN, 60, 21);
    eprintln!("branin, 60 trials, median regret over 21 seeds: tpe {tpe:.4}, random {random:.4}");
    assert!(tpe < random, "tpe {tpe} vs random {random}");
}

#[test]
fn tpe_beats_random_search_on_hartmann6() {
    let (tpe, random) = median_regrets(&HARTMANN6, 80, 21);
    eprintln!(
        "hartmann6, 80 trials, median regret over 21 seeds: tpe {tpe:.4}, random {random:.4}"
    );
    assert!(tpe < random, "tpe {tpe} vs random {random}");
}

fn space_of(domains: &[(&str, Domain)]) -> Space {
    Space {
        families: vec![FamilySpace {
            family: Family::GradientBoosting,
            domains: domains
                .iter()
                .map(|(name, domain)| (name.to_string(), domain.clone()))
                .collect(),
            fixed: Params::new(),
        }],
    }
}

fn learning_rate() -> Domain {
    Domain::Float {
        low: 1e-3,
        high: 1.0,
        log: true,
        steps: None,
    }
}

#[test]
fn the_samplers_resolution_per_parameter_type() {
    use flywheel_core::search::near_value;
    let lr = learning_rate();
    // 2 % of a log width of ln(1000) ≈ 0.138: a 10 % step is near, a 20 % one is not.
    assert!(near_value(
        &lr,
        &ParamValue::Float(0.1),
        &ParamValue::Float(0.11)
    ));
    assert!(!near_value(
        &lr,
        &ParamValue::Float(0.1),
        &ParamValue::Float(0.12)
    ));
    assert!(near_value(
        &lr,
        &ParamValue::Float(0.001),
        &ParamValue::Float(0.00105)
    ));
    let sub = Domain::Float {
        low: 0.5,
        high: 1.0,
        log: false,
        steps: None,
    };
    assert!(near_value(
        &sub,
        &ParamValue::Float(0.80),
        &ParamValue::Float(0.809)
    ));
    assert!(!near_value(
        &sub,
        &ParamValue::Float(0.80),
        &ParamValue::Float(0.811)
    ));
    let trees = Domain::Int {
        low: 10,
        high: 1010,
        log: false,
    };
    assert!(near_value(
        &trees,
        &ParamValue::Int(300),
        &ParamValue::Int(319)
    ));
    assert!(!near_value(
        &trees,
        &ParamValue::Int(300),
        &ParamValue::Int(320)
    ));
    // A narrow integer domain keeps every integer distinct.
    let depth = Domain::Int {
        low: 1,
        high: 12,
        log: false,
    };
    assert!(!near_value(
        &depth,
        &ParamValue::Int(3),
        &ParamValue::Int(4)
    ));
    assert!(near_value(
        &depth,
        &ParamValue::Int(3),
        &ParamValue::Float(3.0)
    ));
    let penalty = Domain::Categorical {
        values: vec![ParamValue::Str("l1".into()), ParamValue::Str("l2".into())],
    };
    assert!(!near_value(
        &penalty,
        &ParamValue::Str("l1".into()),
        &ParamValue::Str("l2".into())
    ));
    assert!(near_value(
        &penalty,
        &ParamValue::Str("l2".into()),
        &ParamValue::Str("l2".into())
    ));
}

/// Suggests the same configuration whatever it is asked.
struct Stuck(Params);

impl Sampler for Stuck {
    fn suggest(&self, _: &SuggestContext<'_>) -> Option<flywheel_core::search::Suggestion> {
        Some(flywheel_core::search::Suggestion {
            family: Family::GradientBoosting,
            params: self.0.clone(),
        })
    }
}

#[test]
fn a_near_duplicate_is_not_suggested_again() {
    use flywheel_core::search::{near_duplicate, suggest_distinct};
    let space = space_of(&[("learning_rate", learning_rate())]);
    let params = |lr: f64| Params::from([("learning_rate".to_string(), ParamValue::Float(lr))]);
    let known = vec![Observation {
        family: Family::GradientBoosting,
        params: params(0.1),
        state: ObservationState::Complete,
        value: Some(0.9),
    }];
    let ctx = SuggestContext {
        space: &space,
        history: &known,
        direction: Direction::Maximize,
        seed: 5,
        index: 1,
    };
    // A fresh suggestion passes untouched.
    let fresh = suggest_distinct(&Stuck(params(0.5)), &ctx, &known).unwrap();
    assert_eq!(fresh.params, params(0.5));
    // A stuck sampler's repeat is replaced by a random configuration far enough away.
    let replaced = suggest_distinct(&Stuck(params(0.1005)), &ctx, &known).unwrap();
    assert!(
        !near_duplicate(&space, &replaced, &known[0]),
        "{replaced:?}"
    );
    assert_eq!(
        replaced,
        suggest_distinct(&Stuck(params(0.1005)), &ctx, &known).unwrap(),
        "deterministic"
    );

    // A space exhausted at the resolution has nothing more to suggest.
    let tiny = space_of(&[(
        "max_depth",
        Domain::Int {
            low: 3,
            high: 3,
            log: false,
        },
    )]);
    let depth = Params::from([("max_depth".to_string(), ParamValue::Int(3))]);
    let known = vec![Observation {
        family: Family::GradientBoosting,
        params: depth.clone(),
        state: ObservationState::Failed,
        value: None,
    }];
    let ctx = SuggestContext {
        space: &tiny,
        ..ctx
    };
    assert_eq!(suggest_distinct(&Stuck(depth), &ctx, &known), None);
    // TPE on a real space keeps producing fresh configurations.
    let tpe = TpeSampler::default();
    let space = space_of(&[
        ("learning_rate", learning_rate()),
        (
            "max_leaves",
            Domain::Int {
                low: 4,
                high: 64,
                log: true,
            },
        ),
    ]);
    let mut history: Vec<Observation> = Vec::new();
    for index in 0..60 {
        let ctx = SuggestContext {
            space: &space,
            history: &history,
            direction: Direction::Maximize,
            seed: 11,
            index,
        };
        let s = suggest_distinct(&tpe, &ctx, &history).unwrap();
        assert!(history.iter().all(|o| !near_duplicate(&space, &s, o)));
        let lr = s.params["learning_rate"].as_f64().unwrap();
        history.push(Observation {
            family: s.family,
            params: s.params,
            state: ObservationState::Complete,
            value: Some(-(lr.ln() - 0.1f64.ln()).abs()),
        });
    }
}
