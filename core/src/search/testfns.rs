//! Standard optimisation test functions, for measuring samplers in tests and benchmarks.
//!
//! Each is exposed as a one-family [`Space`] whose parameters are named `x0`, `x1`, ... so that a
//! sampler is exercised through the same [`Sampler`](super::Sampler) interface a study uses.

use std::collections::BTreeMap;

use super::space::{Domain, Family, Params};
use super::{FamilySpace, Space};

/// A function to minimise over a box.
#[derive(Clone, Copy, Debug)]
pub struct TestFunction {
    pub name: &'static str,
    /// `(low, high)` per dimension.
    pub bounds: &'static [(f64, f64)],
    /// The global minimum.
    pub minimum: f64,
    pub f: fn(&[f64]) -> f64,
}

/// Branin–Hoo on `[-5, 10] x [0, 15]`: three global minima of 0.397887.
pub const BRANIN: TestFunction = TestFunction {
    name: "branin",
    bounds: &[(-5.0, 10.0), (0.0, 15.0)],
    minimum: 0.397_887_357_729_738,
    f: branin,
};

/// Hartmann-6 on `[0, 1]^6`: one global minimum of -3.32237 among six local ones.
pub const HARTMANN6: TestFunction = TestFunction {
    name: "hartmann6",
    bounds: &[(0.0, 1.0); 6],
    minimum: -3.322_368_011_415_515,
    f: hartmann6,
};

impl TestFunction {
    /// The box as a search space: family `mlp` (any family would do) with float domains `x<i>`.
    pub fn space(&self) -> Space {
        let domains: BTreeMap<String, Domain> = self
            .bounds
            .iter()
            .enumerate()
            .map(|(i, &(low, high))| {
                (
                    format!("x{i}"),
                    Domain::Float {
                        low,
                        high,
                        log: false,
                        steps: None,
                    },
                )
            })
            .collect();
        Space {
            families: vec![FamilySpace {
                family: Family::Mlp,
                domains,
                fixed: Params::new(),
            }],
        }
    }

    /// The function's value at a configuration of [`Self::space`]; `None` if a coordinate is
    /// missing or not a number.
    pub fn evaluate(&self, params: &Params) -> Option<f64> {
        let x: Option<Vec<f64>> = (0..self.bounds.len())
            .map(|i| params.get(&format!("x{i}"))?.as_f64())
            .collect();
        Some((self.f)(&x?))
    }
}

fn branin(x: &[f64]) -> f64 {
    use std::f64::consts::PI;
    let (x1, x2) = (x[0], x[1]);
    let b = 5.1 / (4.0 * PI * PI);
    let c = 5.0 / PI;
    let t = 1.0 / (8.0 * PI);
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    -(0..4)
        .map(|i| {
            let exponent: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-exponent).exp()
        })
        .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_minima() {
        for x in [
            [-std::f64::consts::PI, 12.275],
            [std::f64::consts::PI, 2.275],
            [9.42478, 2.475],
        ] {
            assert!((branin(&x) - BRANIN.minimum).abs() < 1e-5, "{x:?}");
        }
        let argmin = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573];
        assert!((hartmann6(&argmin) - HARTMANN6.minimum).abs() < 1e-5);
    }
}
