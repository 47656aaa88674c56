//! The search engine: spaces, samplers and early-stopping rules, deterministic for a seed.
//!
//! A sampler is a pure function of (space, history, seed, trial index): the study state machine
//! can replay it after a restart and the local runner and the operator get the same suggestions.

pub mod space;

use std::collections::BTreeMap;

use crate::api::{AlgorithmName, Direction, StudySpec};
use space::{Domain, Family, Params, Task};

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

/// The sampler the algorithm names.
pub fn sampler_for(name: AlgorithmName) -> Box<dyn Sampler + Send + Sync> {
    match name {
        AlgorithmName::Random => Box::new(random::RandomSampler),
        // Filled in by the grid and TPE samplers.
        AlgorithmName::Grid | AlgorithmName::Tpe => Box::new(random::RandomSampler),
    }
}

pub mod random;
