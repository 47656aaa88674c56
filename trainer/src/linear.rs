//! Linear models on standardised features: logistic regression (binary and softmax) fitted by
//! L-BFGS (L2) or FISTA (L1), and linear regression by the normal equations (ridge) or
//! coordinate descent (lasso). Objectives are per-row means plus `alpha` times the penalty
//! (½‖w‖² or ‖w‖₁), so `alpha` means the same across dataset sizes; intercepts are never
//! penalised.

use crate::features::Matrix;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Penalty {
    L2,
    L1,
}

impl Penalty {
    pub fn parse(name: &str) -> Penalty {
        if name == "l1" {
            Penalty::L1
        } else {
            Penalty::L2
        }
    }
}

/// A fitted linear model: `score_k = intercept_k + Σ_j coef[k][j] x_j`.
#[derive(Clone, Debug)]
pub struct LinearModel {
    /// `[outputs][features]`: one row for regression and binary, one per class for softmax.
    pub coef: Vec<Vec<f64>>,
    pub intercept: Vec<f64>,
    /// Optimiser iterations (epochs over the data) used.
    pub iterations: usize,
}

impl LinearModel {
    pub fn scores(&self, x: &Matrix, row: usize) -> Vec<f64> {
        self.coef
            .iter()
            .zip(&self.intercept)
            .map(|(w, b)| {
                b + w
                    .iter()
                    .zip(&x.columns)
                    .map(|(w, col)| w * f64::from(col[row]))
                    .sum::<f64>()
            })
            .collect()
    }
}

/// The features row by row with exact zeros left out (compressed sparse rows, f64). One-hot
/// columns are mostly zero (adult: ~14 of 99 entries per row are non-zero), so row passes over
/// this cost a fraction of a dense pass; fully dense data pays only the index loads.
pub(crate) struct Rows {
    pub rows: usize,
    pub width: usize,
    offsets: Vec<usize>,
    index: Vec<u32>,
    values: Vec<f64>,
}

impl Rows {
    pub fn from(x: &Matrix) -> Rows {
        let mut counts = vec![0usize; x.rows + 1];
        for col in &x.columns {
            for (i, &v) in col.iter().enumerate() {
                if v != 0.0 {
                    counts[i + 1] += 1;
                }
            }
        }
        for i in 0..x.rows {
            counts[i + 1] += counts[i];
        }
        let offsets = counts;
        let nnz = offsets[x.rows];
        let mut index = vec![0u32; nnz];
        let mut values = vec![0.0; nnz];
        let mut next = offsets[..x.rows].to_vec();
        // Column by column keeps each row's entries in ascending column order.
        for (j, col) in x.columns.iter().enumerate() {
            for (i, &v) in col.iter().enumerate() {
                if v != 0.0 {
                    index[next[i]] = j as u32;
                    values[next[i]] = f64::from(v);
                    next[i] += 1;
                }
            }
        }
        Rows {
            rows: x.rows,
            width: x.width(),
            offsets,
            index,
            values,
        }
    }

    /// Column indices and values of row `i`'s non-zero entries.
    #[inline]
    pub fn row(&self, i: usize) -> (&[u32], &[f64]) {
        let range = self.offsets[i]..self.offsets[i + 1];
        (&self.index[range.clone()], &self.values[range])
    }

    /// `w · x_i` over the first `width` entries of `w`.
    #[inline]
    pub fn dot(&self, i: usize, w: &[f64]) -> f64 {
        let (index, values) = self.row(i);
        index
            .iter()
            .zip(values)
            .map(|(&j, v)| w[j as usize] * v)
            .sum()
    }

    /// `w += a x_i`.
    #[inline]
    pub fn axpy(&self, i: usize, a: f64, w: &mut [f64]) {
        let (index, values) = self.row(i);
        for (&j, v) in index.iter().zip(values) {
            w[j as usize] += a * v;
        }
    }

    /// Stored (non-zero) entries over all rows.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// `‖x_i‖²`.
    pub fn norm2(&self, i: usize) -> f64 {
        self.row(i).1.iter().map(|v| v * v).sum()
    }
}

/// Logistic regression. `classes == 2` fits one weight vector (exported as a softmax over
/// `[0, z]`, which is the same probability); more classes fit a softmax.
pub fn fit_logistic(
    x: &Matrix,
    y: &[u32],
    classes: usize,
    penalty: Penalty,
    alpha: f64,
    threads: usize,
) -> LinearModel {
    let rows = Rows::from(x);
    let outputs = if classes == 2 { 1 } else { classes };
    let problem = Logistic {
        x: &rows,
        y,
        outputs,
        threads: threads.max(1),
    };
    // Parameters feature-major (see `Logistic`); the intercepts, last, are not penalised.
    let penalised = rows.width * outputs;
    let start = vec![0.0; penalised + outputs];
    let (params, iterations) = match penalty {
        Penalty::L2 => {
            let objective = |p: &[f64], g: &mut [f64]| -> f64 {
                let mut f = problem.loss_grad(p, g);
                for (w, gw) in p[..penalised].iter().zip(&mut g[..penalised]) {
                    f += 0.5 * alpha * w * w;
                    *gw += alpha * w;
                }
                f
            };
            lbfgs(start, objective, 500, LBFGS_TOLERANCE)
        }
        Penalty::L1 => {
            let lipschitz = if outputs == 1 { 0.25 } else { 0.5 } * top_eigenvalue(&rows);
            fista(
                start,
                |p, g| problem.loss_grad(p, g),
                lipschitz,
                alpha,
                penalised,
                1000,
            )
        }
    };
    unpack(&params, outputs, rows.width, iterations)
}

/// L-BFGS stops when no gradient entry exceeds this. The objective is a per-row mean, so the
/// bound means the same on every dataset; measured on adult and letter (alpha 1e-4), 1e-5 leaves
/// every holdout prediction of the former 1e-7 unchanged with about half the iterations, while
/// scikit-learn's 1e-4 moves adult's accuracy by 0.03 points.
const LBFGS_TOLERANCE: f64 = 1e-5;

/// Feature-major parameters (`[feature][output]`, intercepts last) to a `LinearModel`.
fn unpack(params: &[f64], outputs: usize, width: usize, iterations: usize) -> LinearModel {
    let coef = (0..outputs)
        .map(|k| (0..width).map(|j| params[j * outputs + k]).collect())
        .collect();
    let intercept = params[width * outputs..].to_vec();
    LinearModel {
        coef,
        intercept,
        iterations,
    }
}

/// The logistic loss over sparse rows. Parameters are laid out feature-major,
/// `params[j * outputs + k]` (intercepts in the block after the last feature), so every non-zero
/// feature of a row adds one contiguous run of all the class scores, and the gradient the same.
struct Logistic<'a> {
    x: &'a Rows,
    y: &'a [u32],
    outputs: usize,
    threads: usize,
}

impl Logistic<'_> {
    /// Mean log loss and its gradient; rows are split across threads.
    fn loss_grad(&self, params: &[f64], grad: &mut [f64]) -> f64 {
        let rows = self.x.rows;
        let chunk = rows.div_ceil(self.threads).max(1);
        let parts: Vec<(f64, Vec<f64>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..rows)
                .step_by(chunk)
                .map(|start| {
                    let end = (start + chunk).min(rows);
                    scope.spawn(move || self.partial(params, start, end))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| (f64::NAN, Vec::new())))
                .collect()
        });
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        for (l, g) in parts {
            loss += l;
            for (a, b) in grad.iter_mut().zip(&g) {
                *a += b;
            }
        }
        let n = rows.max(1) as f64;
        grad.iter_mut().for_each(|g| *g /= n);
        loss / n
    }

    fn partial(&self, params: &[f64], start: usize, end: usize) -> (f64, Vec<f64>) {
        let k = self.outputs;
        let bias = self.x.width * k;
        let mut grad = vec![0.0; params.len()];
        let mut loss = 0.0;
        if k == 1 {
            for i in start..end {
                let z = params[bias] + self.x.dot(i, params);
                let target = if self.y[i] == 1 { 1.0 } else { 0.0 };
                // log(1 + e^z) - t z without overflow, and the sigmoid from the same exponential.
                let e = (-z.abs()).exp();
                loss += z.max(0.0) + e.ln_1p() - target * z;
                let p = if z >= 0.0 {
                    1.0 / (1.0 + e)
                } else {
                    e / (1.0 + e)
                };
                let residual = p - target;
                self.x.axpy(i, residual, &mut grad);
                grad[bias] += residual;
            }
            return (loss, grad);
        }
        let mut z = vec![0.0; k];
        for i in start..end {
            z.copy_from_slice(&params[bias..]);
            let (index, values) = self.x.row(i);
            for (&j, &v) in index.iter().zip(values) {
                let j = j as usize;
                for (zk, w) in z.iter_mut().zip(&params[j * k..(j + 1) * k]) {
                    *zk += v * w;
                }
            }
            let truth = self.y[i] as usize;
            let true_score = z[truth];
            let max = z.iter().copied().fold(f64::MIN, f64::max);
            let mut sum = 0.0;
            for zk in z.iter_mut() {
                *zk = (*zk - max).exp();
                sum += *zk;
            }
            loss += max + sum.ln() - true_score;
            for (c, zk) in z.iter_mut().enumerate() {
                *zk = *zk / sum - if c == truth { 1.0 } else { 0.0 };
            }
            for (&j, &v) in index.iter().zip(values) {
                let j = j as usize;
                for (g, r) in grad[j * k..(j + 1) * k].iter_mut().zip(&z) {
                    *g += v * r;
                }
            }
            for (g, r) in grad[bias..].iter_mut().zip(&z) {
                *g += r;
            }
        }
        (loss, grad)
    }
}

pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Largest eigenvalue of `[X 1]ᵀ[X 1] / n` by power iteration: the curvature bound that sets a
/// safe proximal step.
fn top_eigenvalue(x: &Rows) -> f64 {
    let width = x.width + 1;
    let mut v = vec![1.0 / (width as f64).sqrt(); width];
    let mut value = 1.0;
    for _ in 0..50 {
        let mut next = vec![0.0; width];
        for i in 0..x.rows {
            let dot = v[x.width] + x.dot(i, &v);
            x.axpy(i, dot, &mut next);
            next[x.width] += dot;
        }
        let norm = next.iter().map(|a| a * a).sum::<f64>().sqrt() / x.rows.max(1) as f64;
        if norm == 0.0 {
            return 1.0;
        }
        let converged = (norm - value).abs() < 1e-6 * norm;
        value = norm;
        let scale = norm * x.rows.max(1) as f64;
        v = next.into_iter().map(|a| a / scale).collect();
        if converged {
            break;
        }
    }
    // A little head-room: power iteration approaches the top eigenvalue from below.
    value * 1.05
}

/// FISTA with gradient-based restart for `f(p) + alpha ‖w‖₁` over the first `penalised`
/// parameters (the intercepts after them are not penalised).
fn fista(
    start: Vec<f64>,
    loss_grad: impl Fn(&[f64], &mut [f64]) -> f64,
    lipschitz: f64,
    alpha: f64,
    penalised: usize,
    max_iter: usize,
) -> (Vec<f64>, usize) {
    let step = 1.0 / lipschitz.max(1e-12);
    let mut x = start;
    let mut y = x.clone();
    let mut grad = vec![0.0; x.len()];
    let mut t = 1.0f64;
    for iteration in 1..=max_iter {
        loss_grad(&y, &mut grad);
        let mut next: Vec<f64> = y.iter().zip(&grad).map(|(a, g)| a - step * g).collect();
        for (i, v) in next.iter_mut().enumerate() {
            if i < penalised {
                let shrink = step * alpha;
                *v = v.signum() * (v.abs() - shrink).max(0.0);
            }
        }
        let change = next
            .iter()
            .zip(&x)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let restart: f64 = y
            .iter()
            .zip(&next)
            .zip(&x)
            .map(|((yv, nv), xv)| (yv - nv) * (nv - xv))
            .sum();
        let t_next = if restart > 0.0 {
            1.0
        } else {
            (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0
        };
        let momentum = if restart > 0.0 {
            0.0
        } else {
            (t - 1.0) / t_next
        };
        y = next
            .iter()
            .zip(&x)
            .map(|(n, o)| n + momentum * (n - o))
            .collect();
        x = next;
        t = t_next;
        let scale = x.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        if change < 1e-6 * scale {
            return (x, iteration);
        }
    }
    (x, max_iter)
}

/// L-BFGS with an Armijo backtracking line search.
fn lbfgs(
    start: Vec<f64>,
    mut objective: impl FnMut(&[f64], &mut [f64]) -> f64,
    max_iter: usize,
    tolerance: f64,
) -> (Vec<f64>, usize) {
    const MEMORY: usize = 10;
    let n = start.len();
    let mut x = start;
    let mut g = vec![0.0; n];
    let mut f = objective(&x, &mut g);
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let mut next_g = vec![0.0; n];
    for iteration in 1..=max_iter {
        let g_norm = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if g_norm < tolerance {
            return (x, iteration - 1);
        }
        // Two-loop recursion for the search direction.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, yv, rho) in history.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(yv) {
                *qi -= a * yi;
            }
            alphas.push(a);
        }
        if let Some((s, yv, _)) = history.last() {
            let gamma = dot(s, yv) / dot(yv, yv).max(1e-300);
            q.iter_mut().for_each(|v| *v *= gamma);
        } else {
            let scale = 1.0 / g_norm.max(1.0);
            q.iter_mut().for_each(|v| *v *= scale);
        }
        for ((s, yv, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(yv, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - b) * si;
            }
        }
        let mut direction: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &direction);
        if slope >= 0.0 {
            history.clear();
            direction = g.iter().map(|v| -v / g_norm.max(1.0)).collect();
            slope = dot(&g, &direction);
        }
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..40 {
            let candidate: Vec<f64> = x
                .iter()
                .zip(&direction)
                .map(|(a, d)| a + step * d)
                .collect();
            let f_new = objective(&candidate, &mut next_g);
            if f_new.is_finite() && f_new <= f + 1e-4 * step * slope {
                accepted = Some((candidate, f_new));
                break;
            }
            step *= 0.5;
        }
        let Some((candidate, f_new)) = accepted else {
            return (x, iteration);
        };
        let s: Vec<f64> = candidate.iter().zip(&x).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = next_g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            if history.len() == MEMORY {
                history.remove(0);
            }
            history.push((s, yv, 1.0 / sy));
        }
        let improvement = f - f_new;
        x = candidate;
        g.copy_from_slice(&next_g);
        f = f_new;
        if improvement.abs() < 1e-12 * f.abs().max(1.0) {
            return (x, iteration);
        }
    }
    (x, max_iter)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Linear regression: ridge by the normal equations, lasso by coordinate descent, both on
/// centred data so the intercept is exact and unpenalised.
pub fn fit_linear(x: &Matrix, y: &[f64], penalty: Penalty, alpha: f64) -> LinearModel {
    let n = x.rows.max(1) as f64;
    let d = x.width();
    let means: Vec<f64> = x
        .columns
        .iter()
        .map(|c| c.iter().map(|&v| f64::from(v)).sum::<f64>() / n)
        .collect();
    let y_mean = y.iter().sum::<f64>() / n;
    let centred: Vec<Vec<f64>> = x
        .columns
        .iter()
        .zip(&means)
        .map(|(c, m)| c.iter().map(|&v| f64::from(v) - m).collect())
        .collect();
    let yc: Vec<f64> = y.iter().map(|v| v - y_mean).collect();
    let (w, iterations) = match penalty {
        Penalty::L2 => {
            let mut gram = vec![0.0; d * d];
            for a in 0..d {
                for b in a..d {
                    let v = dot(&centred[a], &centred[b]) / n;
                    gram[a * d + b] = v;
                    gram[b * d + a] = v;
                }
            }
            let rhs: Vec<f64> = centred.iter().map(|c| dot(c, &yc) / n).collect();
            let max_diag = (0..d).map(|a| gram[a * d + a]).fold(0.0f64, f64::max);
            // One-hot blocks are collinear with the intercept; a whisper of ridge keeps the
            // system solvable when alpha is zero.
            let jitter = (1e-10 * max_diag).max(1e-12);
            for a in 0..d {
                gram[a * d + a] += alpha + jitter;
            }
            (cholesky_solve(&mut gram, rhs, d), 1)
        }
        Penalty::L1 => {
            let norms: Vec<f64> = centred.iter().map(|c| dot(c, c) / n).collect();
            let mut w = vec![0.0; d];
            let mut residual = yc.clone();
            let mut sweeps = 0;
            for sweep in 1..=1000 {
                sweeps = sweep;
                let mut max_change = 0.0f64;
                let mut max_w = 0.0f64;
                for j in 0..d {
                    if norms[j] == 0.0 {
                        continue;
                    }
                    let old = w[j];
                    let rho = dot(&centred[j], &residual) / n + norms[j] * old;
                    let new = rho.signum() * (rho.abs() - alpha).max(0.0) / norms[j];
                    if new != old {
                        let delta = new - old;
                        for (r, xv) in residual.iter_mut().zip(&centred[j]) {
                            *r -= delta * xv;
                        }
                        w[j] = new;
                    }
                    max_change = max_change.max((new - old).abs());
                    max_w = max_w.max(new.abs());
                }
                if max_change <= 1e-7 * max_w.max(1e-12) {
                    break;
                }
            }
            (w, sweeps)
        }
    };
    let intercept = y_mean - w.iter().zip(&means).map(|(a, b)| a * b).sum::<f64>();
    LinearModel {
        coef: vec![w],
        intercept: vec![intercept],
        iterations,
    }
}

/// Solves `A x = b` for symmetric positive definite `A` (overwritten by its factor).
fn cholesky_solve(a: &mut [f64], mut b: Vec<f64>, d: usize) -> Vec<f64> {
    for j in 0..d {
        let mut diag = a[j * d + j];
        for k in 0..j {
            diag -= a[j * d + k] * a[j * d + k];
        }
        let diag = diag.max(1e-300).sqrt();
        a[j * d + j] = diag;
        for i in j + 1..d {
            let mut v = a[i * d + j];
            for k in 0..j {
                v -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = v / diag;
        }
    }
    for i in 0..d {
        let mut v = b[i];
        for k in 0..i {
            v -= a[i * d + k] * b[k];
        }
        b[i] = v / a[i * d + i];
    }
    for i in (0..d).rev() {
        let mut v = b[i];
        for k in i + 1..d {
            v -= a[k * d + i] * b[k];
        }
        b[i] = v / a[i * d + i];
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(columns: Vec<Vec<f32>>) -> Matrix {
        Matrix::from_columns(columns)
    }

    #[test]
    fn sparse_rows_keep_the_non_zero_entries_in_column_order() {
        let x = matrix(vec![
            vec![0.0, 2.0, 0.0],
            vec![1.0, 0.0, 0.0],
            vec![3.0, 4.0, 0.0],
        ]);
        let rows = Rows::from(&x);
        assert_eq!(rows.row(0), (&[1u32, 2][..], &[1.0, 3.0][..]));
        assert_eq!(rows.row(1), (&[0u32, 2][..], &[2.0, 4.0][..]));
        assert_eq!(rows.row(2), (&[][..], &[][..]));
        assert_eq!(rows.dot(1, &[1.0, 10.0, 100.0]), 402.0);
        let mut w = vec![0.0; 3];
        rows.axpy(0, 2.0, &mut w);
        assert_eq!(w, vec![0.0, 2.0, 6.0]);
        assert_eq!(rows.norm2(1), 20.0);
    }

    #[test]
    fn ridge_without_penalty_recovers_an_exact_line() {
        let x = matrix(vec![vec![0.0, 1.0, 2.0, 3.0], vec![1.0, 0.0, 1.0, 0.0]]);
        let y: Vec<f64> = (0..4)
            .map(|i| 2.0 * f64::from(x.columns[0][i]) - f64::from(x.columns[1][i]) + 0.5)
            .collect();
        let model = fit_linear(&x, &y, Penalty::L2, 0.0);
        assert!((model.coef[0][0] - 2.0).abs() < 1e-6, "{model:?}");
        assert!((model.coef[0][1] + 1.0).abs() < 1e-6, "{model:?}");
        assert!((model.intercept[0] - 0.5).abs() < 1e-6, "{model:?}");
        let lasso = fit_linear(&x, &y, Penalty::L1, 1e-6);
        assert!((lasso.coef[0][0] - 2.0).abs() < 1e-3, "{lasso:?}");
    }

    #[test]
    fn logistic_separates_a_simple_problem() {
        let x = matrix(vec![vec![-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]]);
        let y = [0, 0, 0, 1, 1, 1];
        for penalty in [Penalty::L2, Penalty::L1] {
            let model = fit_logistic(&x, &y, 2, penalty, 0.01, 2);
            assert!(model.coef[0][0] > 1.0, "{penalty:?} {model:?}");
            let three = fit_logistic(&x, &[0, 0, 1, 1, 2, 2], 3, penalty, 0.01, 1);
            assert_eq!(three.coef.len(), 3);
            assert!(three.coef[2][0] > three.coef[0][0]);
        }
    }
}
