//! The Tree-structured Parzen Estimator (Bergstra et al., 2011), after Optuna's `TPESampler`.
//!
//! After `startup_trials` completed trials, the completed trials are ranked by objective and split
//! into a good set (the best `ceil(gamma * n)`) and a bad set (the rest). Each hyper-parameter
//! gets two densities, `l(x)` fitted to the good trials and `g(x)` to the bad ones; `candidates`
//! values are drawn from `l` and the one maximising `l(x) / g(x)` (the expected improvement
//! under the TPE model) is suggested. Parameters are modelled independently, as in Optuna's
//! default (univariate) mode.
//!
//! The search space is tree-structured by model family: the family is chosen first, as a
//! categorical parameter fitted to every trial, and then that family's parameters are fitted to
//! that family's trials only.
//!
//! Choices, where the literature leaves room:
//! - `gamma` is a plain fraction (default 0.25, Bergstra's value), not Optuna's
//!   `min(ceil(0.1 n), 25)`: the API documents it as "the fraction of finished trials counted as
//!   good", and a fraction keeps the good set growing with the history.
//! - Pending trials (running, or suggested in the same batch), pruned and failed trials join the
//!   bad set: Optuna's "constant liar" for parallel suggestions, so a batch spreads out instead
//!   of collapsing onto one point; pruning is evidence a configuration is worse than its peers,
//!   and a failure that its configuration caused (a rejected combination, a parity mismatch)
//!   will recur near it. Completed trials with a non-finite objective are ignored.
//! - Numeric densities are mixtures of Gaussians truncated to the domain (in log space for log
//!   domains; integers own the half-unit either side), one per observation plus a prior component
//!   centred on the domain with the domain's width as spread. Bandwidths follow Optuna: the larger
//!   distance to a sorted neighbour, clipped to `[width / min(100, 1 + n), width]` ("magic clip").
//!   Older observations weigh less once there are more than 25 (Optuna's default weights).
//! - Categorical densities are smoothed counts: each observation puts its weight on its choice
//!   mixed with a uniform prior.
//!
//! The start-up phase draws exactly what [`RandomSampler`](super::random::RandomSampler) would,
//! so TPE and random search share their first trials for a seed.

use rand::{Rng, RngExt};

use super::random::{self, PURPOSE_RANDOM, PURPOSE_TPE, log_int_bounds, sample_domain, stream};
use super::same_value;
use super::space::{Domain, ParamValue, Params};
use super::{FamilySpace, Observation, ObservationState, Sampler, SuggestContext, Suggestion};
use crate::api::{Direction, TpeSettings};

/// The weight of the prior component relative to one observation (Optuna's `prior_weight`).
const PRIOR_WEIGHT: f64 = 1.0;
/// Observations beyond this many, counted from the newest, weigh linearly less with age.
const FLAT_WEIGHTS: usize = 25;
/// Attempts at drawing inside the truncation interval before clamping. Every component keeps
/// at least a third of its mass inside, so the fallback is practically never taken.
const MAX_REJECTIONS: usize = 64;

/// TPE, configured by `spec.algorithm.tpe`.
#[derive(Clone, Debug, PartialEq)]
pub struct TpeSampler {
    /// Completed trials needed before the model is used; until then suggestions are random.
    pub startup_trials: u32,
    /// Values drawn from `l(x)` per parameter; the best by `l(x) / g(x)` wins.
    pub candidates: u32,
    /// Fraction of completed trials counted as good, in (0, 1).
    pub gamma: f64,
}

impl TpeSampler {
    pub const DEFAULT_STARTUP_TRIALS: u32 = 10;
    pub const DEFAULT_CANDIDATES: u32 = 24;
    pub const DEFAULT_GAMMA: f64 = 0.25;

    /// The sampler for `spec.algorithm.tpe`, defaults filled in. Out-of-range settings (which
    /// validation rejects) fall back to the defaults rather than misbehave.
    pub fn new(settings: Option<&TpeSettings>) -> Self {
        let settings = settings.cloned().unwrap_or(TpeSettings {
            startup_trials: None,
            candidates: None,
            gamma: None,
        });
        Self {
            startup_trials: settings
                .startup_trials
                .unwrap_or(Self::DEFAULT_STARTUP_TRIALS),
            candidates: settings
                .candidates
                .filter(|c| *c >= 1)
                .unwrap_or(Self::DEFAULT_CANDIDATES),
            gamma: settings
                .gamma
                .filter(|g| *g > 0.0 && *g < 1.0)
                .unwrap_or(Self::DEFAULT_GAMMA),
        }
    }
}

impl Default for TpeSampler {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Sampler for TpeSampler {
    fn suggest(&self, ctx: &SuggestContext<'_>) -> Option<Suggestion> {
        let families: Vec<&FamilySpace> = ctx.space.samplable_families().collect();
        if families.is_empty() {
            return None;
        }
        let observations = classify(ctx.history, &families, ctx.direction);
        let completed = observations
            .iter()
            .filter(|o| matches!(o.role, Role::Scored(_)))
            .count();
        if completed < self.startup_trials as usize || completed == 0 {
            return random::sample_space(
                ctx.space,
                &mut stream(ctx.seed, ctx.index, PURPOSE_RANDOM),
            );
        }
        let mut rng = stream(ctx.seed, ctx.index, PURPOSE_TPE);
        let candidates = self.candidates.max(1) as usize;

        let chosen = if families.len() == 1 {
            0
        } else {
            let (good, bad) = split(&observations, self.gamma);
            let choices =
                |set: &[&Trial<'_>]| -> Vec<usize> { set.iter().map(|o| o.family).collect() };
            let l = Categorical::fit(&choices(&good), families.len());
            let g = Categorical::fit(&choices(&bad), families.len());
            best_of(candidates, &mut rng, |rng| {
                let choice = l.sample(rng);
                (choice, l.log_p[choice] - g.log_p[choice])
            })
        };
        let family = families[chosen];
        let own: Vec<Trial<'_>> = observations
            .into_iter()
            .filter(|o| o.family == chosen)
            .collect();

        let mut params = family.fixed.clone();
        if own.iter().any(|o| matches!(o.role, Role::Scored(_))) {
            let (good, bad) = split(&own, self.gamma);
            for (name, domain) in &family.domains {
                let value = suggest_param(name, domain, &good, &bad, candidates, &mut rng)?;
                params.insert(name.clone(), value);
            }
        } else {
            // Nothing completed in this family yet: its densities would both be the prior.
            for (name, domain) in &family.domains {
                params.insert(name.clone(), sample_domain(domain, &mut rng)?);
            }
        }
        Some(Suggestion {
            family: family.family,
            params,
        })
    }
}

/// How an observation counts in the good/bad split.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// Completed, with its loss (the objective, negated when maximising).
    Scored(f64),
    /// Pending, pruned or failed: always in the bad set.
    Bad,
}

#[derive(Debug)]
struct Trial<'a> {
    /// Position in the history: ties break on it and recency weights follow it.
    position: usize,
    /// Index into the samplable families.
    family: usize,
    params: &'a Params,
    role: Role,
}

fn classify<'a>(
    history: &'a [Observation],
    families: &[&FamilySpace],
    direction: Direction,
) -> Vec<Trial<'a>> {
    history
        .iter()
        .enumerate()
        .filter_map(|(position, observation)| {
            let family = families
                .iter()
                .position(|f| f.family == observation.family)?;
            let role = match observation.state {
                ObservationState::Complete => {
                    let value = observation.value.filter(|v| v.is_finite())?;
                    Role::Scored(match direction {
                        Direction::Minimize => value,
                        Direction::Maximize => -value,
                    })
                }
                // A failed configuration (one the trainer rejected, or whose export did not
                // match) is evidence against its region, like a pruned one; ignoring it would
                // let the sampler propose its neighbours again and again.
                ObservationState::Pending | ObservationState::Pruned | ObservationState::Failed => {
                    Role::Bad
                }
            };
            Some(Trial {
                position,
                family,
                params: &observation.params,
                role,
            })
        })
        .collect()
}

/// Splits observations into the good and the bad set, each in history order.
fn split<'s, 'a>(
    observations: &'s [Trial<'a>],
    gamma: f64,
) -> (Vec<&'s Trial<'a>>, Vec<&'s Trial<'a>>) {
    let mut ranked: Vec<(f64, &Trial<'a>)> = observations
        .iter()
        .filter_map(|o| match o.role {
            Role::Scored(loss) => Some((loss, o)),
            Role::Bad => None,
        })
        .collect();
    ranked.sort_by(|(a, x), (b, y)| a.total_cmp(b).then(x.position.cmp(&y.position)));
    let n = ranked.len();
    let n_good = ((gamma * n as f64).ceil() as usize).clamp(n.min(1), n);
    let mut good: Vec<&Trial<'a>> = ranked[..n_good].iter().map(|(_, o)| *o).collect();
    let mut bad: Vec<&Trial<'a>> = ranked[n_good..].iter().map(|(_, o)| *o).collect();
    bad.extend(observations.iter().filter(|o| matches!(o.role, Role::Bad)));
    good.sort_by_key(|o| o.position);
    bad.sort_by_key(|o| o.position);
    (good, bad)
}

/// Optuna's default observation weights, oldest first: flat for the newest 25, a linear ramp
/// from `1/n` below them so that stale regions of a long study fade.
fn recency_weights(n: usize) -> Vec<f64> {
    if n <= FLAT_WEIGHTS {
        return vec![1.0; n];
    }
    let ramp = n - FLAT_WEIGHTS;
    let start = 1.0 / n as f64;
    (0..ramp)
        .map(|i| {
            if ramp == 1 {
                start
            } else {
                start + (1.0 - start) * i as f64 / (ramp - 1) as f64
            }
        })
        .chain(std::iter::repeat_n(1.0, FLAT_WEIGHTS))
        .collect()
}

/// Draws `candidates` times and keeps the draw with the highest score (the first on ties).
fn best_of<T, R: Rng + ?Sized>(
    candidates: usize,
    rng: &mut R,
    mut draw: impl FnMut(&mut R) -> (T, f64),
) -> T {
    let (mut best, mut best_score) = draw(rng);
    for _ in 1..candidates {
        let (value, score) = draw(rng);
        // A NaN score never wins (scores are finite by construction; this is belt and braces).
        if score > best_score || best_score.is_nan() {
            best = value;
            best_score = score;
        }
    }
    best
}

fn suggest_param<R: Rng + ?Sized>(
    name: &str,
    domain: &Domain,
    good: &[&Trial<'_>],
    bad: &[&Trial<'_>],
    candidates: usize,
    rng: &mut R,
) -> Option<ParamValue> {
    // Observations whose value lies outside the domain come from another space (a warm start
    // from a study with wider domains): they say nothing about this one.
    let (good, bad) = (
        param_values(good, name, domain),
        param_values(bad, name, domain),
    );
    match domain {
        Domain::Categorical { values: choices } => {
            let index = |set: &[&ParamValue]| -> Vec<usize> {
                set.iter()
                    .filter_map(|v| choices.iter().position(|c| same_value(c, v)))
                    .collect()
            };
            let l = Categorical::fit(&index(&good), choices.len());
            let g = Categorical::fit(&index(&bad), choices.len());
            let choice = best_of(candidates, rng, |rng| {
                let choice = l.sample(rng);
                (choice, l.log_p[choice] - g.log_p[choice])
            });
            choices.get(choice).cloned()
        }
        Domain::Float { .. } | Domain::Int { .. } => {
            let Some(scale) = Scale::of(domain) else {
                return sample_domain(domain, rng);
            };
            let internal = |set: &[&ParamValue]| -> Vec<f64> {
                set.iter()
                    .filter_map(|v| v.as_f64())
                    .map(|v| scale.to_internal(v))
                    .filter(|x| x.is_finite())
                    .collect()
            };
            let l = Parzen::fit(&internal(&good), scale.low, scale.high);
            let g = Parzen::fit(&internal(&bad), scale.low, scale.high);
            Some(best_of(candidates, rng, |rng| {
                let value = scale.to_value(l.sample(rng));
                let x = scale.to_internal(value.as_f64().unwrap_or(scale.low));
                (value, l.log_pdf(x) - g.log_pdf(x))
            }))
        }
    }
}

fn param_values<'a>(set: &[&Trial<'a>], name: &str, domain: &Domain) -> Vec<&'a ParamValue> {
    set.iter()
        .filter_map(|o| o.params.get(name))
        .filter(|v| domain.contains(v))
        .collect()
}

/// The space a numeric domain is modelled in.
#[derive(Clone, Copy, Debug)]
struct Scale {
    /// Bounds of the internal (possibly log) space, with integer half-units included.
    low: f64,
    high: f64,
    log: bool,
    int: Option<(i64, i64)>,
    float: (f64, f64),
}

impl Scale {
    /// `None` when the domain is a single point or its arithmetic is degenerate; the caller then
    /// samples it directly.
    fn of(domain: &Domain) -> Option<Self> {
        let scale = match *domain {
            Domain::Float { low, high, log, .. } => Scale {
                low: if log { low.ln() } else { low },
                high: if log { high.ln() } else { high },
                log,
                int: None,
                float: (low, high),
            },
            Domain::Int { low, high, log } => {
                let (a, b) = if log {
                    log_int_bounds(low, high)
                } else {
                    (low as f64 - 0.5, high as f64 + 0.5)
                };
                Scale {
                    low: a,
                    high: b,
                    log,
                    int: Some((low, high)),
                    float: (low as f64, high as f64),
                }
            }
            Domain::Categorical { .. } => return None,
        };
        let width = scale.high - scale.low;
        (width.is_finite() && width > 0.0).then_some(scale)
    }

    fn to_internal(self, v: f64) -> f64 {
        if self.log {
            // Log integer domains may start at or below zero; such values sit at the floor.
            v.max(0.5).ln()
        } else {
            v
        }
    }

    fn to_value(self, x: f64) -> ParamValue {
        let v = if self.log { x.exp() } else { x };
        match self.int {
            Some((low, high)) => ParamValue::Int((v.round() as i64).clamp(low, high)),
            None => ParamValue::Float(v.clamp(self.float.0, self.float.1)),
        }
    }
}

/// A categorical density over `0..k`: smoothed, recency-weighted counts.
struct Categorical {
    log_p: Vec<f64>,
    cumulative: Vec<f64>,
}

impl Categorical {
    fn fit(observations: &[usize], k: usize) -> Self {
        let k = k.max(1);
        let weights = recency_weights(observations.len());
        // Each observation's kernel puts `1 + prior/k` on its choice and `prior/k` elsewhere
        // (normalised), and the prior component is uniform: Optuna's categorical estimator.
        let uniform = PRIOR_WEIGHT / k as f64;
        let mut p = vec![PRIOR_WEIGHT / k as f64; k];
        for (&choice, &w) in observations.iter().zip(&weights) {
            let w = w / (1.0 + PRIOR_WEIGHT);
            for (c, p) in p.iter_mut().enumerate() {
                *p += w * (uniform + if c == choice { 1.0 } else { 0.0 });
            }
        }
        let total: f64 = p.iter().sum();
        let mut acc = 0.0;
        let cumulative = p
            .iter()
            .map(|p| {
                acc += p / total;
                acc
            })
            .collect();
        Self {
            log_p: p.iter().map(|p| (p / total).ln()).collect(),
            cumulative,
        }
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.random();
        self.cumulative
            .iter()
            .position(|c| u < *c)
            .unwrap_or(self.cumulative.len() - 1)
    }
}

/// A mixture of Gaussians truncated to `[low, high]`: one kernel per observation plus the prior.
struct Parzen {
    low: f64,
    high: f64,
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    inverse_sigmas: Vec<f64>,
    /// `ln(weight) - ln(sigma * sqrt(2 pi) * mass inside [low, high])` per kernel.
    log_coefficients: Vec<f64>,
    cumulative: Vec<f64>,
}

impl Parzen {
    /// `observations` are in internal space, oldest first, all inside `[low, high]`; the caller
    /// guarantees `low < high`, both finite.
    fn fit(observations: &[f64], low: f64, high: f64) -> Self {
        let width = high - low;
        let mut mus = observations.to_vec();
        mus.push(0.5 * (low + high));
        let mut weights = recency_weights(observations.len());
        weights.push(PRIOR_WEIGHT);
        let total: f64 = weights.iter().sum();

        // Bergstra's bandwidth: each kernel reaches its farther sorted neighbour, the domain ends
        // counting as neighbours, except that the outermost kernels look inwards only.
        let n = mus.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]).then(a.cmp(&b)));
        let mut sigmas = vec![width; n];
        if n >= 2 {
            for (rank, &i) in order.iter().enumerate() {
                let left = if rank == 0 { low } else { mus[order[rank - 1]] };
                let right = if rank + 1 == n {
                    high
                } else {
                    mus[order[rank + 1]]
                };
                let here = mus[i];
                sigmas[i] = if rank == 0 {
                    right - here
                } else if rank + 1 == n {
                    here - left
                } else {
                    (here - left).max(right - here)
                };
            }
        }
        let min_sigma = width / (1.0 + n as f64).min(100.0);
        for sigma in &mut sigmas {
            *sigma = sigma.clamp(min_sigma, width);
        }
        // The prior is deliberately wide whatever its neighbours.
        sigmas[n - 1] = width;

        let half_log_two_pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let log_coefficients = (0..n)
            .map(|i| {
                let mass = normal_cdf((high - mus[i]) / sigmas[i])
                    - normal_cdf((low - mus[i]) / sigmas[i]);
                (weights[i] / total).ln()
                    - sigmas[i].ln()
                    - half_log_two_pi
                    - mass.max(f64::MIN_POSITIVE).ln()
            })
            .collect();
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Self {
            low,
            high,
            inverse_sigmas: sigmas.iter().map(|s| 1.0 / s).collect(),
            mus,
            sigmas,
            log_coefficients,
            cumulative,
        }
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let u: f64 = rng.random();
        let k = self
            .cumulative
            .iter()
            .position(|c| u < *c)
            .unwrap_or(self.mus.len() - 1);
        let (mu, sigma) = (self.mus[k], self.sigmas[k]);
        let mut x = mu;
        for _ in 0..MAX_REJECTIONS {
            x = mu + sigma * standard_normal(rng);
            if (self.low..=self.high).contains(&x) {
                return x;
            }
        }
        x.clamp(self.low, self.high)
    }

    fn log_pdf(&self, x: f64) -> f64 {
        // Log-sum-exp in two passes: recomputing the terms is cheaper than allocating for them.
        let term = |i: usize| {
            let z = (x - self.mus[i]) * self.inverse_sigmas[i];
            self.log_coefficients[i] - 0.5 * z * z
        };
        let n = self.mus.len();
        let max = (0..n).map(term).fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return max;
        }
        max + (0..n).map(|i| (term(i) - max).exp()).sum::<f64>().ln()
    }
}

/// A standard normal draw (Box–Muller); `rand` without `rand_distr` has no Gaussian.
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // `1 - u` lies in (0, 1], keeping the logarithm finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The standard normal CDF.
fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The complementary error function, with fractional error below 1.2e-7 everywhere (Numerical
/// Recipes' Chebyshev fit): ample for the truncation masses, which are at least a third.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::search::Space;
    use crate::search::space::Family;

    fn one_float_space() -> Space {
        let mut domains = BTreeMap::new();
        domains.insert(
            "x".to_string(),
            Domain::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                steps: None,
            },
        );
        Space {
            families: vec![FamilySpace {
                family: Family::Mlp,
                domains,
                fixed: Params::new(),
            }],
        }
    }

    fn observation(x: f64, state: ObservationState, value: Option<f64>) -> Observation {
        let mut params = Params::new();
        params.insert("x".into(), ParamValue::Float(x));
        Observation {
            family: Family::Mlp,
            params,
            state,
            value,
        }
    }

    fn suggest_x(sampler: &TpeSampler, space: &Space, history: &[Observation], index: u32) -> f64 {
        sampler
            .suggest(&SuggestContext {
                space,
                history,
                direction: Direction::Minimize,
                seed: 7,
                index,
            })
            .unwrap()
            .params["x"]
            .as_f64()
            .unwrap()
    }

    #[test]
    fn erfc_matches_reference_values() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (-1.0, 1.842_700_792_949_715),
            (3.0, 2.209_049_699_858_544e-5),
        ] {
            let got = erfc(x);
            assert!(
                (got - want).abs() <= 2e-7 * want,
                "erfc({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn truncated_mixture_integrates_to_one() {
        let parzen = Parzen::fit(&[0.1, 0.15, 0.9, 0.5], 0.0, 1.0);
        let n = 20_000;
        let integral: f64 = (0..n)
            .map(|i| parzen.log_pdf((i as f64 + 0.5) / n as f64).exp() / n as f64)
            .sum();
        assert!((integral - 1.0).abs() < 1e-4, "{integral}");
    }

    #[test]
    fn recency_weights_ramp_below_the_newest_25() {
        assert_eq!(recency_weights(3), vec![1.0; 3]);
        let w = recency_weights(40);
        assert_eq!(w.len(), 40);
        assert!((w[0] - 1.0 / 40.0).abs() < 1e-12);
        assert!(w.windows(2).all(|p| p[0] <= p[1]));
        assert!(w[15..].iter().all(|w| *w == 1.0));
    }

    #[test]
    fn concentrates_near_the_good_region() {
        let space = one_float_space();
        // The objective is |x - 0.8|: good trials cluster around 0.8.
        let history: Vec<Observation> = (0..30)
            .map(|i| {
                let x = f64::from(i) / 29.0;
                observation(x, ObservationState::Complete, Some((x - 0.8).abs()))
            })
            .collect();
        let sampler = TpeSampler::default();
        let suggestions: Vec<f64> = (30..60)
            .map(|i| suggest_x(&sampler, &space, &history, i))
            .collect();
        let near = suggestions
            .iter()
            .filter(|x| (**x - 0.8).abs() < 0.2)
            .count();
        assert!(near >= 24, "only {near} of 30 near 0.8: {suggestions:?}");
    }

    #[test]
    fn maximising_flips_the_split() {
        let space = one_float_space();
        let history: Vec<Observation> = (0..30)
            .map(|i| {
                let x = f64::from(i) / 29.0;
                observation(x, ObservationState::Complete, Some(x))
            })
            .collect();
        let sampler = TpeSampler::default();
        let mean = |direction| {
            (30..50)
                .map(|index| {
                    sampler
                        .suggest(&SuggestContext {
                            space: &space,
                            history: &history,
                            direction,
                            seed: 1,
                            index,
                        })
                        .unwrap()
                        .params["x"]
                        .as_f64()
                        .unwrap()
                })
                .sum::<f64>()
                / 20.0
        };
        assert!(mean(Direction::Maximize) > 0.7);
        assert!(mean(Direction::Minimize) < 0.3);
    }

    /// Twenty evenly spread trials whose loss grows with the distance from 0.5.
    fn best_at_the_middle() -> Vec<Observation> {
        (0..20)
            .map(|i| {
                let x = f64::from(i) / 19.0;
                observation(x, ObservationState::Complete, Some((x - 0.5).abs()))
            })
            .collect()
    }

    #[test]
    fn pending_trials_push_parallel_suggestions_apart() {
        let space = one_float_space();
        let mut history = best_at_the_middle();
        let sampler = TpeSampler::default();
        let first = suggest_x(&sampler, &space, &history, 20);
        // A pile of pending trials at the first suggestion makes that point look bad.
        for _ in 0..20 {
            history.push(observation(first, ObservationState::Pending, None));
        }
        let later: Vec<f64> = (40..50)
            .map(|i| suggest_x(&sampler, &space, &history, i))
            .collect();
        let close = later.iter().filter(|x| (**x - first).abs() < 0.01).count();
        assert!(close <= 2, "{first} {later:?}");
    }

    #[test]
    fn failed_trials_steer_suggestions_away() {
        let space = one_float_space();
        // The best completed trials sit at 0.5, and so do a pile of failures.
        let mut history = best_at_the_middle();
        let sampler = TpeSampler::default();
        let near = |history: &[Observation]| {
            (40..60)
                .map(|i| suggest_x(&sampler, &space, history, i))
                .filter(|x| (x - 0.5).abs() < 0.05)
                .count()
        };
        let before = near(&history);
        for _ in 0..20 {
            history.push(observation(0.5, ObservationState::Failed, None));
        }
        let after = near(&history);
        assert!(
            after < before,
            "near the failures: {before} before, {after} after"
        );
    }

    #[test]
    fn ignores_non_finite_and_out_of_domain_observations() {
        let space = one_float_space();
        let mut history = vec![
            observation(0.5, ObservationState::Complete, Some(f64::NAN)),
            observation(0.5, ObservationState::Complete, Some(f64::INFINITY)),
            observation(7.0, ObservationState::Complete, Some(0.0)),
            observation(f64::NAN, ObservationState::Complete, Some(1.0)),
        ];
        let sampler = TpeSampler {
            startup_trials: 1,
            ..TpeSampler::default()
        };
        for index in 0..10 {
            let x = suggest_x(&sampler, &space, &history, index);
            assert!((0.0..=1.0).contains(&x));
        }
        history.clear();
        assert!((0.0..=1.0).contains(&suggest_x(&sampler, &space, &history, 0)));
    }

    #[test]
    fn startup_phase_equals_random_search() {
        let space = one_float_space();
        let ctx = SuggestContext {
            space: &space,
            history: &[],
            direction: Direction::Minimize,
            seed: 3,
            index: 4,
        };
        assert_eq!(
            TpeSampler::default().suggest(&ctx),
            random::RandomSampler.suggest(&ctx)
        );
    }

    #[test]
    fn models_log_integers_and_categoricals() {
        let mut space = one_float_space();
        let domains = &mut space.families[0].domains;
        domains.clear();
        domains.insert(
            "units".into(),
            Domain::Int {
                low: 1,
                high: 1024,
                log: true,
            },
        );
        let choices: Vec<ParamValue> = ["a", "b", "c"].map(|c| ParamValue::Str(c.into())).to_vec();
        domains.insert(
            "kind".into(),
            Domain::Categorical {
                values: choices.clone(),
            },
        );
        // The loss prefers about 32 units and kind "b".
        let history: Vec<Observation> = (0..60u32)
            .map(|i| {
                let units = 1i64 << (i % 11);
                let kind = &choices[(i % 3) as usize];
                let loss = ((units as f64).log2() - 5.0).abs()
                    + if kind.as_str() == Some("b") { 0.0 } else { 3.0 };
                Observation {
                    family: Family::Mlp,
                    params: Params::from([
                        ("units".to_string(), ParamValue::Int(units)),
                        ("kind".to_string(), kind.clone()),
                    ]),
                    state: ObservationState::Complete,
                    value: Some(loss),
                }
            })
            .collect();
        let sampler = TpeSampler::default();
        let suggestions: Vec<Suggestion> = (60..80)
            .map(|index| {
                sampler
                    .suggest(&SuggestContext {
                        space: &space,
                        history: &history,
                        direction: Direction::Minimize,
                        seed: 5,
                        index,
                    })
                    .unwrap()
            })
            .collect();
        let b = suggestions
            .iter()
            .filter(|s| s.params["kind"].as_str() == Some("b"))
            .count();
        let near = suggestions
            .iter()
            .filter(|s| (8..=128).contains(&s.params["units"].as_i64().unwrap()))
            .count();
        assert!(b >= 18, "{b}");
        assert!(near >= 16, "{near}");
    }

    #[test]
    fn picks_the_family_that_does_well() {
        let mut space = one_float_space();
        let mut tree = space.families[0].clone();
        tree.family = Family::DecisionTree;
        space.families.push(tree);
        let history: Vec<Observation> = (0..40)
            .map(|i| {
                let mut o = observation(f64::from(i % 10) / 10.0, ObservationState::Complete, None);
                o.family = if i % 2 == 0 {
                    Family::Mlp
                } else {
                    Family::DecisionTree
                };
                o.value =
                    Some(if o.family == Family::Mlp { 0.1 } else { 0.9 } + f64::from(i) * 1e-3);
                o
            })
            .collect();
        let sampler = TpeSampler::default();
        let mlp = (40..60)
            .filter(|&index| {
                sampler
                    .suggest(&SuggestContext {
                        space: &space,
                        history: &history,
                        direction: Direction::Minimize,
                        seed: 11,
                        index,
                    })
                    .unwrap()
                    .family
                    == Family::Mlp
            })
            .count();
        assert!(mlp >= 18, "{mlp}");
    }
}
