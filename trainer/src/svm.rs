//! Linear support vector machines, solved as LIBLINEAR solves them (Fan et al. 2008) and with
//! the same objectives as scikit-learn's `LinearSVC` / `LinearSVR` defaults, on the featurised
//! (standardised, one-hot) rows stored sparse so each pass touches only non-zero features.
//!
//! - Classification: squared hinge loss with L2 regularisation, `½‖w‖² + C Σ max(0, 1 − y w·x)²`
//!   (`LinearSVC`'s default), by truncated Newton in the primal; one-vs-rest for more than two
//!   classes, the per-class problems spread over the thread budget.
//! - Regression: epsilon-insensitive loss, `½‖w‖² + C Σ max(0, |y − w·x| − ε)` (`LinearSVR`'s
//!   default), by dual coordinate descent with shrinking (Hsieh et al. 2008), on the
//!   standardised target, so `epsilon` is in target standard deviations and means the same on
//!   every dataset; the scaling is folded back into the coefficients.
//!
//! As in LIBLINEAR and scikit-learn (`intercept_scaling = 1`), the intercept is the weight of a
//! constant feature and is regularised with the others.
//!
//! An SVM has margins, not probabilities. The exported classifier keeps the logistic graph
//! (linear scores, softmax, ArgMax) with the margins multiplied by one temperature `T > 0`
//! fitted on the training rows (Platt scaling without the offset, with Platt's smoothed
//! targets): a positive scale leaves every row's predicted class (and, for two classes, the
//! ranking behind roc_auc) exactly those of the raw margins, while log_loss gets a fitted,
//! finite scale. The
//! "probabilities" are therefore monotone margin scores calibrated on the training data only;
//! they are not cross-validated probability estimates.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::features::Matrix;
use crate::linear::{LinearModel, Rows};

/// Epoch cap of the regression solver, scikit-learn's `max_iter` default for the linear SVMs.
pub const MAX_EPOCHS: usize = 1000;
/// Newton step cap of the classifier (the same `max_iter`); it converges in tens.
const MAX_NEWTON_STEPS: usize = 1000;
/// Conjugate-gradient steps per Newton step.
const MAX_CG_STEPS: usize = 250;
/// scikit-learn's `LinearSVC` default `tol`, which LIBLINEAR's primal solver scales by the
/// minority class share.
const NEWTON_TOLERANCE: f64 = 1e-4;
/// Regression stops when the summed violation falls below this fraction of the first epoch's.
const REGRESSOR_TOLERANCE: f64 = 1e-3;
/// Temperature bounds: positive so decisions survive, finite so a separable training set does
/// not make every score 0 or 1.
const MIN_TEMPERATURE: f64 = 1e-4;
const MAX_TEMPERATURE: f64 = 1e4;

/// A solved binary or regression problem.
struct Solved {
    w: Vec<f64>,
    bias: f64,
    epochs: usize,
}

/// A linear SVM classifier. `classes == 2` fits one weight vector (exported as a softmax over
/// `[0, T z]`, the same layout as logistic regression); more classes fit one vector per class,
/// one-vs-rest.
pub fn fit_classifier(
    x: &Matrix,
    y: &[u32],
    classes: usize,
    c: f64,
    threads: usize,
) -> LinearModel {
    let rows = Rows::from(x);
    let problems = if classes == 2 { 1 } else { classes };
    // Binary: class 1 is the positive side, as in the logistic layout.
    let positive = |k: usize| if classes == 2 { 1 } else { k as u32 };
    // A class whose solver thread panicked (a bug) keeps zero weights below.
    let solved = crate::parallel::map_indexed(problems, threads, |k| {
        let sign: Vec<f64> = y
            .iter()
            .map(|&label| if label == positive(k) { 1.0 } else { -1.0 })
            .collect();
        squared_hinge(&rows, &sign, c)
    });
    let mut coef = vec![vec![0.0; rows.width]; problems];
    let mut intercept = vec![0.0; problems];
    let mut epochs = 0;
    for (k, problem) in solved {
        coef[k] = problem.w;
        intercept[k] = problem.bias;
        epochs = epochs.max(problem.epochs);
    }
    let mut model = LinearModel {
        coef,
        intercept,
        iterations: epochs,
    };
    let t = temperature(&model, &rows, y, classes);
    for (w, b) in model.coef.iter_mut().zip(&mut model.intercept) {
        w.iter_mut().for_each(|v| *v *= t);
        *b *= t;
    }
    model
}

/// A linear SVM regressor (epsilon in standard deviations of the training target).
pub fn fit_regressor(x: &Matrix, y: &[f64], c: f64, epsilon: f64, seed: u64) -> LinearModel {
    let rows = Rows::from(x);
    let n = y.len().max(1) as f64;
    let mean = y.iter().sum::<f64>() / n;
    let std = (y.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    // A constant target has nothing to scale; fitting the centred zeros gives w = 0.
    let std = if std > 1e-12 { std } else { 1.0 };
    let z: Vec<f64> = y.iter().map(|v| (v - mean) / std).collect();
    let solved = epsilon_insensitive(&rows, &z, c, epsilon, seed);
    LinearModel {
        coef: vec![solved.w.iter().map(|w| w * std).collect()],
        intercept: vec![mean + std * solved.bias],
        iterations: solved.epochs,
    }
}

/// Truncated Newton for the squared hinge loss in the primal (LIBLINEAR's `-s 2` problem,
/// scikit-learn's choice for `LinearSVC` when rows outnumber features; a backtracking line search
/// stands in for LIBLINEAR's trust region): the loss is
/// differentiable with the generalised Hessian `I + 2C X_Iᵀ X_I` over the rows inside the margin
/// `I`, so each step solves the Newton system by conjugate gradients with a diagonal
/// preconditioner (one pass over the active rows per product) and backtracks along it. The line
/// search needs no further passes: margins move linearly along the step. The dual coordinate
/// descent this replaced needed ~700 epochs on adult at `C = 1` (weak regularisation, many
/// rows in the margin); Newton takes about ten steps.
fn squared_hinge(rows: &Rows, sign: &[f64], c: f64) -> Solved {
    let n = rows.rows;
    let d = rows.width;
    // `w[d]` is the intercept: the weight of a constant feature equal to 1.
    let mut w = vec![0.0; d + 1];
    let mut margin = vec![0.0; n];
    let positives = sign.iter().filter(|&&s| s > 0.0).count();
    // LIBLINEAR's stopping rule, as scikit-learn runs it (tol = 1e-4): the gradient norm falls
    // below tol · (minority share) of its norm at w = 0.
    let minority = positives.min(n - positives).max(1) as f64 / n.max(1) as f64;
    let tolerance = NEWTON_TOLERANCE * minority;
    let objective = |w: &[f64], margin: &[f64]| -> f64 {
        let loss: f64 = margin
            .iter()
            .zip(sign)
            .map(|(m, y)| (1.0 - y * m).max(0.0).powi(2))
            .sum();
        0.5 * w.iter().map(|v| v * v).sum::<f64>() + c * loss
    };
    let mut f = objective(&w, &margin);
    let mut first_norm = None;
    let mut active: Vec<usize> = Vec::with_capacity(n);
    let mut steps = 0;
    while steps < MAX_NEWTON_STEPS {
        active.clear();
        active.extend((0..n).filter(|&i| sign[i] * margin[i] < 1.0));
        let mut gradient = w.clone();
        for &i in &active {
            let r = 2.0 * c * (margin[i] - sign[i]);
            rows.axpy(i, r, &mut gradient);
            gradient[d] += r;
        }
        let norm = norm(&gradient);
        let initial = *first_norm.get_or_insert(norm);
        if norm <= tolerance * initial || norm == 0.0 {
            break;
        }
        steps += 1;
        let mut preconditioner = vec![1.0; d + 1];
        for &i in &active {
            let (index, values) = rows.row(i);
            for (&j, v) in index.iter().zip(values) {
                preconditioner[j as usize] += 2.0 * c * v * v;
            }
            preconditioner[d] += 2.0 * c;
        }
        let hessian = |v: &[f64], out: &mut [f64]| {
            out.copy_from_slice(v);
            for &i in &active {
                let a = 2.0 * c * (rows.dot(i, v) + v[d]);
                rows.axpy(i, a, out);
                out[d] += a;
            }
        };
        let direction = conjugate_gradient(&gradient, &preconditioner, hessian);
        // Margins move linearly along the direction: one pass gives every trial point.
        let along: Vec<f64> = (0..n)
            .map(|i| rows.dot(i, &direction) + direction[d])
            .collect();
        let slope = dot(&gradient, &direction);
        if slope >= 0.0 {
            break;
        }
        let mut t = 1.0;
        let mut accepted = false;
        let mut trial_w = vec![0.0; d + 1];
        let mut trial_margin = vec![0.0; n];
        for _ in 0..30 {
            for ((tw, w), s) in trial_w.iter_mut().zip(&w).zip(&direction) {
                *tw = w + t * s;
            }
            for ((tm, m), a) in trial_margin.iter_mut().zip(&margin).zip(&along) {
                *tm = m + t * a;
            }
            let trial = objective(&trial_w, &trial_margin);
            if trial <= f + 1e-4 * t * slope {
                f = trial;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            break;
        }
        std::mem::swap(&mut w, &mut trial_w);
        std::mem::swap(&mut margin, &mut trial_margin);
    }
    let bias = w.pop().unwrap_or(0.0);
    Solved {
        w,
        bias,
        epochs: steps,
    }
}

/// Preconditioned conjugate gradients for `H s = −g`, stopped when the residual is a tenth of
/// `‖g‖` (a truncated Newton step: exactness is wasted far from the optimum).
fn conjugate_gradient(
    gradient: &[f64],
    preconditioner: &[f64],
    hessian: impl Fn(&[f64], &mut [f64]),
) -> Vec<f64> {
    let size = gradient.len();
    let mut s = vec![0.0; size];
    let mut r: Vec<f64> = gradient.iter().map(|g| -g).collect();
    let mut z: Vec<f64> = r.iter().zip(preconditioner).map(|(r, m)| r / m).collect();
    let mut p = z.clone();
    let mut hp = vec![0.0; size];
    let mut rz = dot(&r, &z);
    let stop = 0.1 * norm(gradient);
    for _ in 0..MAX_CG_STEPS {
        if norm(&r) <= stop {
            break;
        }
        hessian(&p, &mut hp);
        let curvature = dot(&p, &hp);
        if curvature <= 0.0 {
            break;
        }
        let alpha = rz / curvature;
        for ((si, ri), (pi, hpi)) in s.iter_mut().zip(r.iter_mut()).zip(p.iter().zip(&hp)) {
            *si += alpha * pi;
            *ri -= alpha * hpi;
        }
        for ((zi, ri), m) in z.iter_mut().zip(&r).zip(preconditioner) {
            *zi = ri / m;
        }
        let next = dot(&r, &z);
        let beta = next / rz;
        rz = next;
        for (pi, zi) in p.iter_mut().zip(&z) {
            *pi = zi + beta * *pi;
        }
    }
    s
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Dual coordinate descent for the epsilon-insensitive loss (LIBLINEAR's `solve_l2r_l1l2_svr`,
/// L1-loss case): dual variables in `[−C, C]`, each update the exact minimiser along its
/// coordinate, with the same shrinking as the classifier.
fn epsilon_insensitive(rows: &Rows, y: &[f64], c: f64, epsilon: f64, seed: u64) -> Solved {
    let n = rows.rows;
    let qd: Vec<f64> = (0..n).map(|i| rows.norm2(i) + 1.0).collect();
    let mut beta = vec![0.0f64; n];
    let mut w = vec![0.0; rows.width];
    let mut bias = 0.0;
    let mut order: Vec<usize> = (0..n).collect();
    let mut active = n;
    let mut bound = f64::INFINITY;
    let mut first = None;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut epochs = 0;
    while epochs < MAX_EPOCHS {
        epochs += 1;
        let mut worst = 0.0f64;
        let mut total = 0.0;
        order[..active].shuffle(&mut rng);
        let mut s = 0;
        while s < active {
            let i = order[s];
            let g = rows.dot(i, &w) + bias - y[i];
            let gp = g + epsilon;
            let gn = g - epsilon;
            let b = beta[i];
            let violation = if b == 0.0 {
                if gp < 0.0 {
                    -gp
                } else if gn > 0.0 {
                    gn
                } else if gp > bound && gn < -bound {
                    active -= 1;
                    order.swap(s, active);
                    continue;
                } else {
                    0.0
                }
            } else if b >= c {
                if gp > 0.0 {
                    gp
                } else if gp < -bound {
                    active -= 1;
                    order.swap(s, active);
                    continue;
                } else {
                    0.0
                }
            } else if b <= -c {
                if gn < 0.0 {
                    -gn
                } else if gn > bound {
                    active -= 1;
                    order.swap(s, active);
                    continue;
                } else {
                    0.0
                }
            } else if b > 0.0 {
                gp.abs()
            } else {
                gn.abs()
            };
            worst = worst.max(violation);
            total += violation;
            let h = qd[i];
            let step = if gp < h * b {
                -gp / h
            } else if gn > h * b {
                -gn / h
            } else {
                -b
            };
            if step.abs() >= 1e-12 {
                beta[i] = (b + step).clamp(-c, c);
                let d = beta[i] - b;
                if d != 0.0 {
                    rows.axpy(i, d, &mut w);
                    bias += d;
                }
            }
            s += 1;
        }
        let initial = *first.get_or_insert(total);
        if total <= REGRESSOR_TOLERANCE * initial {
            if active == n {
                break;
            }
            active = n;
            bound = f64::INFINITY;
            continue;
        }
        bound = worst;
    }
    Solved { w, bias, epochs }
}

/// The softmax temperature for the training margins: minimises the log loss of
/// `softmax(T · scores)` against Platt's smoothed targets (the true class gets
/// `(n_c + 1) / (n_c + 2)`, the rest share `1 / (n_c + 2)`) by safeguarded Newton steps on this
/// one-dimensional convex problem. Binary scores are laid out as `[0, z]`.
fn temperature(model: &LinearModel, rows: &Rows, y: &[u32], classes: usize) -> f64 {
    let n = rows.rows;
    let width = classes.max(2);
    let mut scores = vec![0.0; n * width];
    for i in 0..n {
        let row = &mut scores[i * width..(i + 1) * width];
        let margins = model
            .coef
            .iter()
            .zip(&model.intercept)
            .map(|(w, b)| rows.dot(i, w) + b);
        if classes == 2 {
            row[1] = margins.sum();
        } else {
            row.iter_mut().zip(margins).for_each(|(s, m)| *s = m);
        }
    }
    let mut counts = vec![0usize; width];
    for &label in y {
        if let Some(count) = counts.get_mut(label as usize) {
            *count += 1;
        }
    }
    // Expected score under the smoothed targets, per row; fixed across iterations.
    let target: Vec<f64> = (0..n)
        .map(|i| {
            let row = &scores[i * width..(i + 1) * width];
            let truth = y[i] as usize;
            let total = (counts.get(truth).copied().unwrap_or(0) + 2) as f64;
            let rest = 1.0 / total / (width - 1) as f64;
            row.iter()
                .enumerate()
                .map(|(k, s)| s * if k == truth { 1.0 - 1.0 / total } else { rest })
                .sum()
        })
        .collect();
    let mut t = 1.0f64;
    let mut p = vec![0.0; width];
    for _ in 0..100 {
        let mut gradient = 0.0;
        let mut curvature = 0.0;
        for i in 0..n {
            let row = &scores[i * width..(i + 1) * width];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(t * s));
            let mut sum = 0.0;
            for (pk, s) in p.iter_mut().zip(row) {
                *pk = (t * s - max).exp();
                sum += *pk;
            }
            let mean: f64 = p.iter().zip(row).map(|(pk, s)| pk * s).sum::<f64>() / sum;
            let second: f64 = p.iter().zip(row).map(|(pk, s)| pk * s * s).sum::<f64>() / sum;
            gradient += mean - target[i];
            curvature += (second - mean * mean).max(0.0);
        }
        if curvature <= 1e-300 {
            break;
        }
        let mut next = t - gradient / curvature;
        // Newton from the left of a convex minimum can overshoot past zero: halve instead.
        if next <= 0.0 {
            next = t / 2.0;
        }
        let next = next.clamp(MIN_TEMPERATURE, MAX_TEMPERATURE);
        let done = (next - t).abs() <= 1e-9 * t;
        t = next;
        if done {
            break;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(columns: Vec<Vec<f32>>) -> Matrix {
        Matrix::from_columns(columns)
    }

    fn margin(model: &LinearModel, k: usize, x: &[f64]) -> f64 {
        model.intercept[k] + model.coef[k].iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
    }

    #[test]
    fn binary_margin_separates_and_matches_the_primal_optimum() {
        // Two overlapping clouds on a line: the fitted weight must point the right way, and the
        // solution must satisfy the primal optimality condition w = 2C Σ y_i ξ_i x_i (ξ the
        // squared-hinge slack) up to the temperature.
        let xs: Vec<f32> = (0..40).map(|i| (i as f32 - 20.0) / 5.0).collect();
        let y: Vec<u32> = (0..40).map(|i| u32::from(i >= 18)).collect();
        let x = matrix(vec![xs.clone()]);
        let c = 0.5;
        let model = fit_classifier(&x, &y, 2, c, 1);
        assert!(model.coef[0][0] > 0.0, "{model:?}");
        let rows = Rows::from(&x);
        let sign: Vec<f64> = y.iter().map(|&l| if l == 1 { 1.0 } else { -1.0 }).collect();
        let raw = squared_hinge(&rows, &sign, c);
        let (mut gw, mut gb) = (raw.w[0], raw.bias);
        for (i, &v) in xs.iter().enumerate() {
            let slack = (1.0 - sign[i] * (raw.w[0] * f64::from(v) + raw.bias)).max(0.0);
            gw -= 2.0 * c * sign[i] * slack * f64::from(v);
            gb -= 2.0 * c * sign[i] * slack;
        }
        assert!(
            gw.abs() < 0.05 && gb.abs() < 0.05,
            "primal gradient {gw} {gb}"
        );
        // The temperature rescales without changing decisions.
        let ratio = model.coef[0][0] / raw.w[0];
        assert!(ratio > 0.0);
        assert!((model.intercept[0] / raw.bias - ratio).abs() < 1e-9);
        let predicted: Vec<u32> = xs
            .iter()
            .map(|&v| u32::from(margin(&model, 0, &[f64::from(v)]) > 0.0))
            .collect();
        let hits = predicted.iter().zip(&y).filter(|(a, b)| a == b).count();
        assert!(hits >= 38, "{hits}");
    }

    #[test]
    fn one_vs_rest_learns_three_bands_with_any_thread_count() {
        let xs: Vec<f32> = (0..60).map(|i| i as f32 / 10.0 - 3.0).collect();
        let y: Vec<u32> = (0..60).map(|i| (i / 20) as u32).collect();
        let squares: Vec<f32> = xs.iter().map(|v| v * v).collect();
        let x = matrix(vec![xs.clone(), squares.clone()]);
        let one = fit_classifier(&x, &y, 3, 10.0, 1);
        let three = fit_classifier(&x, &y, 3, 10.0, 3);
        assert_eq!(one.coef, three.coef, "threads must not change the fit");
        let hits = (0..60)
            .filter(|&i| {
                let row = [f64::from(xs[i]), f64::from(squares[i])];
                let best = (0..3)
                    .max_by(|&a, &b| margin(&one, a, &row).total_cmp(&margin(&one, b, &row)))
                    .unwrap_or(0);
                best as u32 == y[i]
            })
            .count();
        assert!(hits >= 54, "{hits}/60");
    }

    #[test]
    fn temperature_is_positive_and_finite_on_separable_data() {
        let x = matrix(vec![vec![-2.0, -1.0, 1.0, 2.0]]);
        let model = fit_classifier(&x, &[0, 0, 1, 1], 2, 1e3, 1);
        let z = margin(&model, 0, &[1.0]);
        assert!(z.is_finite() && z > 0.0 && z < 50.0, "{model:?}");
    }

    #[test]
    fn regressor_fits_a_line_within_the_tube() {
        let xs: Vec<f32> = (0..50).map(|i| i as f32 / 10.0).collect();
        let y: Vec<f64> = xs.iter().map(|&v| 3.0 * f64::from(v) + 100.0).collect();
        let x = matrix(vec![xs.clone()]);
        let model = fit_regressor(&x, &y, 100.0, 0.0, 0);
        for (v, target) in xs.iter().zip(&y) {
            let predicted = margin(&model, 0, &[f64::from(*v)]);
            assert!((predicted - target).abs() < 0.05, "{predicted} vs {target}");
        }
        // A wide tube around a constant-looking target leaves the weight at zero.
        let flat = fit_regressor(&x, &y, 1.0, 5.0, 0);
        assert_eq!(flat.coef[0][0], 0.0);
        assert!((flat.intercept[0] - 107.35).abs() < 1e-4);
    }
}
