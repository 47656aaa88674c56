//! The search engine: spaces, samplers and early-stopping rules, deterministic for a seed.
//!
//! A sampler is a pure function of (space, history, seed, trial index): the study state machine
//! can replay it after a restart and the local runner and the operator get the same suggestions.

pub mod early_stopping;
pub mod grid;
pub mod random;
pub mod space;
pub mod testfns;
pub mod tpe;

use std::collections::BTreeMap;

use crate::api::{Algorithm, AlgorithmName, Direction, StudySpec};
use space::{Domain, Family, ParamValue, Params, Task};

/// The resolved search space of a study: each family with every searched domain and every
/// pinned value. Built from `spec.searchSpace` plus the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    pub families: Vec<FamilySpace>,
}

/// One family's part of the space.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilySpace {
    pub family: Family,
    /// Searched hyper-parameters (name order is the enumeration order of the grid).
    pub domains: BTreeMap<String, Domain>,
    /// Hyper-parameters pinned to one value.
    pub fixed: Params,
}

/// A configuration to try.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    pub family: Family,
    pub params: Params,
}

/// What a sampler knows of one trial.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub family: Family,
    pub params: Params,
    pub state: ObservationState,
    /// The objective value; set for `Complete`, and for `Pruned` (its last report) when known.
    pub value: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObservationState {
    /// Running or about to: a sampler should avoid suggesting the same point again.
    Pending,
    Complete,
    Pruned,
    Failed,
}

/// Everything a sampler may look at to make suggestion number `index`.
#[derive(Clone, Copy, Debug)]
pub struct SuggestContext<'a> {
    pub space: &'a Space,
    /// Earlier trials of this study and warm-start observations, in index order.
    pub history: &'a [Observation],
    pub direction: Direction,
    pub seed: u64,
    /// The index of the trial being suggested; with the seed it fixes the random stream.
    pub index: u32,
}

/// A strategy choosing the next configuration.
pub trait Sampler {
    /// The next configuration, or `None` when the space is exhausted (grid).
    fn suggest(&self, ctx: &SuggestContext<'_>) -> Option<Suggestion>;
}

/// Whether the study's metric is a regression metric decides the families that fit when the
/// task is `auto`.
pub fn effective_task(spec: &StudySpec) -> Task {
    match spec.dataset.task {
        Task::Auto if spec.objective.metric.is_regression() => Task::Regression,
        // Binary or multiclass is decided by the trainer; both admit the same families.
        Task::Auto => Task::Multiclass,
        task => task,
    }
}

/// The sampler `spec.algorithm` asks for, configured by its settings (TPE's `tpe` block).
///
/// The seed is not part of the sampler: it travels in [`SuggestContext::seed`].
pub fn sampler_for(algorithm: &Algorithm) -> Box<dyn Sampler + Send + Sync> {
    match algorithm.name {
        AlgorithmName::Random => Box::new(random::RandomSampler),
        AlgorithmName::Grid => Box::new(grid::GridSampler),
        AlgorithmName::Tpe => Box::new(tpe::TpeSampler::new(algorithm.tpe.as_ref())),
    }
}

impl Space {
    /// The families a sampler can draw from: those whose every domain holds at least one value.
    ///
    /// Validation rejects empty domains before a study runs; skipping them here keeps the
    /// samplers total functions on any `Space` a caller may build.
    pub fn samplable_families(&self) -> impl Iterator<Item = &FamilySpace> {
        self.families.iter().filter(|family| family.is_samplable())
    }
}

impl FamilySpace {
    /// Whether every domain holds at least one value a sampler can produce.
    pub fn is_samplable(&self) -> bool {
        self.domains.values().all(domain_is_samplable)
    }
}

/// Whether a domain holds at least one value with well-defined sampling arithmetic (finite
/// float bounds in order, a positive low end for a log scale, a non-empty choice list).
pub fn domain_is_samplable(domain: &Domain) -> bool {
    match domain {
        Domain::Float { low, high, log, .. } => {
            low.is_finite() && high.is_finite() && low <= high && (!log || *low > 0.0)
        }
        Domain::Int { low, high, .. } => low <= high,
        Domain::Categorical { values } => !values.is_empty(),
    }
}

/// Whether two hyper-parameter values denote the same setting. Numbers compare by value, as
/// `3` and `3.0` both reach us from YAML and JSON writers, with a relative tolerance that absorbs
/// the last-bit differences of a float that went through text.
pub(crate) fn same_value(a: &ParamValue, b: &ParamValue) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
        _ => a == b,
    }
}

/// The sampler's resolution: two values of a numeric parameter closer than this fraction of
/// its domain's width (measured in log space for a log domain, so 0.010 and 0.0102 are as close
/// as 10 and 10.2) are the same setting for search purposes. 2 % gives 50 distinguishable
/// levels per parameter, finer than any trained model's response to learning rates, depths or
/// tree counts that we measured; an integer domain narrower than 50 keeps every integer
/// distinct. Categorical and boolean values must be equal.
pub const RESOLUTION: f64 = 0.02;

/// Extra draws [`suggest_distinct`] makes before giving up: first from the sampler with other
/// seeds, then as many uniformly at random.
pub const DISTINCT_ATTEMPTS: u64 = 8;

/// Whether two values of parameter `domain` lie within [`RESOLUTION`] of each other.
pub fn near_value(domain: &Domain, a: &ParamValue, b: &ParamValue) -> bool {
    if same_value(a, b) {
        return true;
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return false;
    };
    let (low, high, log) = match domain {
        Domain::Float { low, high, log, .. } => (*low, *high, *log),
        Domain::Int { low, high, log } => (*low as f64, *high as f64, *log),
        Domain::Categorical { .. } => return false,
    };
    let scale = |v: f64| {
        if log {
            v.max(f64::MIN_POSITIVE).ln()
        } else {
            v
        }
    };
    let width = scale(high) - scale(low);
    let gap = (scale(x) - scale(y)).abs();
    width.is_finite() && gap.is_finite() && gap < RESOLUTION * width
}

/// Whether `suggestion` is within the sampler's resolution of an `observed` configuration: the
/// same family, and every parameter near the observed one's (compared exactly where the space
/// has no domain for it).
pub fn near_duplicate(space: &Space, suggestion: &Suggestion, observed: &Observation) -> bool {
    if suggestion.family != observed.family || suggestion.params.len() != observed.params.len() {
        return false;
    }
    let domains = space
        .families
        .iter()
        .find(|f| f.family == suggestion.family)
        .map(|f| &f.domains);
    suggestion.params.iter().all(|(name, value)| {
        observed
            .params
            .get(name)
            .is_some_and(|other| match domains.and_then(|d| d.get(name)) {
                Some(domain) => near_value(domain, value, other),
                None => same_value(value, other),
            })
    })
}

/// The sampler's suggestion, unless it lies within the resolution of a configuration in
/// `known` (this study's trials, finished or not): then the sampler is asked again with other
/// seeds, and then random draws are tried, [`DISTINCT_ATTEMPTS`] of each. `None` when the
/// sampler has nothing left, or every attempt repeated a known configuration (the space is
/// exhausted at this resolution). Deterministic in the context, like the samplers.
pub fn suggest_distinct(
    sampler: &dyn Sampler,
    ctx: &SuggestContext<'_>,
    known: &[Observation],
) -> Option<Suggestion> {
    let fresh = |s: &Suggestion| !known.iter().any(|o| near_duplicate(ctx.space, s, o));
    let first = sampler.suggest(ctx)?;
    if fresh(&first) {
        return Some(first);
    }
    // Another seed is another random stream for the same index; the multiplier is the 64-bit
    // golden ratio, which spreads consecutive attempts over the seed space.
    let reseeded = |attempt: u64| SuggestContext {
        seed: ctx.seed ^ attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ..*ctx
    };
    (1..=DISTINCT_ATTEMPTS)
        .filter_map(|attempt| sampler.suggest(&reseeded(attempt)))
        .chain(
            (DISTINCT_ATTEMPTS + 1..=2 * DISTINCT_ATTEMPTS)
                .filter_map(|attempt| random::RandomSampler.suggest(&reseeded(attempt))),
        )
        .find(|s| fresh(s))
}
