//! Uniform random search, and the seeded random streams every sampler draws from.

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::space::{Domain, ParamValue};
use super::{Sampler, Space, SuggestContext, Suggestion};

/// Samples every hyper-parameter independently and uniformly (in log space where asked).
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomSampler;

/// Stream purposes: samplers sharing a (seed, index) must not reuse each other's draws unless
/// they mean to (TPE's start-up phase deliberately reuses random search's stream).
pub(crate) const PURPOSE_RANDOM: u64 = 0;
pub(crate) const PURPOSE_TPE: u64 = 1;

/// A random stream fixed by (seed, trial index, purpose), so replays give the same draws and
/// trials do not share draws. `purpose` must be below 256.
pub fn stream(seed: u64, index: u32, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((u64::from(index) << 8) ^ purpose);
    rng
}

/// Draws one value of `domain`; `None` when the domain holds no value (an empty choice list,
/// inverted or non-finite bounds: see [`super::domain_is_samplable`]).
pub fn sample_domain(domain: &Domain, rng: &mut (impl Rng + ?Sized)) -> Option<ParamValue> {
    if !super::domain_is_samplable(domain) {
        return None;
    }
    Some(match domain {
        Domain::Float { low, high, log, .. } => {
            let u: f64 = rng.random();
            ParamValue::Float(if *log {
                (low.ln() + u * (high.ln() - low.ln()))
                    .exp()
                    .clamp(*low, *high)
            } else {
                // `low + u * (high - low)` can overflow to infinity for bounds near ±f64::MAX.
                (low * (1.0 - u) + high * u).clamp(*low, *high)
            })
        }
        Domain::Int { low, high, log } => {
            if *log {
                let (a, b) = log_int_bounds(*low, *high);
                let u: f64 = rng.random();
                ParamValue::Int(((a + u * (b - a)).exp().round() as i64).clamp(*low, *high))
            } else {
                ParamValue::Int(rng.random_range(*low..=*high))
            }
        }
        Domain::Categorical { values } => values[rng.random_range(0..values.len())].clone(),
    })
}

/// The log-space interval a log-scaled integer domain is sampled from: each integer owns the
/// half-unit either side of it, so the end points are as likely as their neighbours.
pub(crate) fn log_int_bounds(low: i64, high: i64) -> (f64, f64) {
    (
        (low as f64 - 0.5).max(0.5).ln(),
        (high as f64 + 0.5).max(0.5).ln(),
    )
}

/// Draws a family (uniformly among the samplable ones) and its parameters.
pub fn sample_space(space: &Space, rng: &mut (impl Rng + ?Sized)) -> Option<Suggestion> {
    let families: Vec<_> = space.samplable_families().collect();
    if families.is_empty() {
        return None;
    }
    let family = families[rng.random_range(0..families.len())];
    let mut params = family.fixed.clone();
    for (name, domain) in &family.domains {
        params.insert(name.clone(), sample_domain(domain, rng)?);
    }
    Some(Suggestion {
        family: family.family,
        params,
    })
}

impl Sampler for RandomSampler {
    fn suggest(&self, ctx: &SuggestContext<'_>) -> Option<Suggestion> {
        sample_space(ctx.space, &mut stream(ctx.seed, ctx.index, PURPOSE_RANDOM))
    }
}
