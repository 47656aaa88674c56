//! Uniform random search.

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::space::{Domain, ParamValue};
use super::{Sampler, Space, SuggestContext, Suggestion};

/// Samples every hyper-parameter independently and uniformly (in log space where asked).
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomSampler;

/// A random stream fixed by (seed, trial index, purpose), so replays give the same draws and
/// trials do not share draws.
pub fn stream(seed: u64, index: u32, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((u64::from(index) << 8) ^ purpose);
    rng
}

/// Draws one value of `domain`.
pub fn sample_domain(domain: &Domain, rng: &mut (impl Rng + ?Sized)) -> ParamValue {
    match domain {
        Domain::Float { low, high, log, .. } => {
            let u: f64 = rng.random();
            ParamValue::Float(if *log {
                (low.ln() + u * (high.ln() - low.ln())).exp().clamp(*low, *high)
            } else {
                low + u * (high - low)
            })
        }
        Domain::Int { low, high, log } => {
            if *log {
                let (a, b) = ((*low as f64 - 0.5).max(0.5).ln(), (*high as f64 + 0.5).ln());
                let u: f64 = rng.random();
                ParamValue::Int(((a + u * (b - a)).exp().round() as i64).clamp(*low, *high))
            } else {
                ParamValue::Int(rng.random_range(*low..=*high))
            }
        }
        Domain::Categorical { values } => values[rng.random_range(0..values.len())].clone(),
    }
}

/// Draws a family (uniformly) and its parameters.
pub fn sample_space(space: &Space, rng: &mut (impl Rng + ?Sized)) -> Option<Suggestion> {
    if space.families.is_empty() {
        return None;
    }
    let family = &space.families[rng.random_range(0..space.families.len())];
    let mut params = family.fixed.clone();
    for (name, domain) in &family.domains {
        params.insert(name.clone(), sample_domain(domain, rng));
    }
    Some(Suggestion {
        family: family.family,
        params,
    })
}

impl Sampler for RandomSampler {
    fn suggest(&self, ctx: &SuggestContext<'_>) -> Option<Suggestion> {
        sample_space(ctx.space, &mut stream(ctx.seed, ctx.index, 0))
    }
}
