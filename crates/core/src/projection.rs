//! A 2-D view of a user's actions for people to look at: the projection on the first two
//! principal components (PCA by power iteration with deflation, `f64` throughout).

use crate::embeddings::Embeddings;

/// Power-iteration rounds per component; convergence is checked before this cap.
const MAX_ROUNDS: usize = 200;

/// Rows projected on their first two principal components.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// `(x, y)` of every row, centred on the mean.
    pub points: Vec<[f64; 2]>,
    /// Share of the total variance along each axis (0..=1).
    pub explained: [f64; 2],
}

/// Projects the rows of `x` on their first two principal components. Deterministic; the sign of
/// each axis is chosen so that the row farthest along it (the first, on ties) is positive. Rows that are all equal
/// project to the origin.
///
/// ```
/// use pinnersage_core::{Embeddings, projection::project_2d};
/// // Points on a line in 3-D: all the variance is on the first axis.
/// let data = [0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0];
/// let p = project_2d(Embeddings::new(&data, 3).unwrap());
/// assert!((p.explained[0] - 1.0).abs() < 1e-9);
/// assert!((p.points[0][0] - 3.0).abs() < 1e-9 && (p.points[2][0] + 3.0).abs() < 1e-9);
/// assert!(p.points.iter().all(|q| q[1].abs() < 1e-9));
/// ```
pub fn project_2d(x: Embeddings<'_>) -> Projection {
    let (n, d) = (x.rows(), x.dim());
    let mut mean = vec![0.0f64; d];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(x.row(i)) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let centred: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            x.row(i)
                .iter()
                .zip(&mean)
                .map(|(&v, m)| f64::from(v) - m)
                .collect()
        })
        .collect();
    let total: f64 = centred.iter().flatten().map(|v| v * v).sum();
    let mut axes: Vec<Vec<f64>> = Vec::with_capacity(2);
    let mut explained = [0.0; 2];
    for (k, share) in explained.iter_mut().enumerate() {
        let Some((axis, variance)) = leading_axis(&centred, d, &axes, k) else {
            break;
        };
        // What is left after the first axis may be rounding noise only.
        if variance <= 1e-12 * total {
            break;
        }
        *share = variance / total;
        axes.push(axis);
    }
    let points = centred
        .iter()
        .map(|row| {
            let mut p = [0.0; 2];
            for (k, axis) in axes.iter().enumerate() {
                p[k] = dot(row, axis);
            }
            p
        })
        .collect();
    Projection { points, explained }
}

/// The unit direction of largest variance of `rows` orthogonal to `found`, and that variance
/// (sum of squares along it). `None` when nothing is left.
fn leading_axis(
    rows: &[Vec<f64>],
    d: usize,
    found: &[Vec<f64>],
    seed: usize,
) -> Option<(Vec<f64>, f64)> {
    // A fixed, non-degenerate start.
    let mut v: Vec<f64> = (0..d)
        .map(|j| 1.0 + ((j * 7 + seed * 13) % 11) as f64 / 11.0)
        .collect();
    orthogonalise(&mut v, found);
    normalise(&mut v)?;
    let mut variance = 0.0;
    for _ in 0..MAX_ROUNDS {
        // w = Σ_i (r_i · v) r_i  =  Xᵀ X v
        let mut w = vec![0.0; d];
        for row in rows {
            let s = dot(row, &v);
            w.iter_mut().zip(row).for_each(|(w, r)| *w += s * r);
        }
        orthogonalise(&mut w, found);
        let next_variance = dot(&w, &v);
        normalise(&mut w)?;
        let change: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
        v = w;
        let converged = (next_variance - variance).abs() <= 1e-12 * next_variance.abs();
        variance = next_variance;
        if change < 1e-10 || converged {
            break;
        }
    }
    if variance <= 0.0 {
        return None;
    }
    // Sign: the row farthest along the axis is on the positive side.
    let far =
        rows.iter().map(|r| dot(r, &v)).fold(
            0.0f64,
            |best, p| if p.abs() > best.abs() { p } else { best },
        );
    if far < 0.0 {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    Some((v, variance))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn orthogonalise(v: &mut [f64], against: &[Vec<f64>]) {
    for a in against {
        let s = dot(v, a);
        v.iter_mut().zip(a).for_each(|(x, y)| *x -= s * y);
    }
}

/// Scales `v` to unit length; `None` if it is (numerically) zero.
fn normalise(v: &mut [f64]) -> Option<()> {
    let norm = dot(v, v).sqrt();
    if norm <= 1e-150 {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::uniform_rows;

    /// Against the exact answer on data with a known covariance: points spread along two
    /// orthogonal directions with variances 9 and 1 plus tiny noise elsewhere.
    #[test]
    fn recovers_known_principal_axes() {
        let (n, d) = (400, 6);
        let noise = uniform_rows(3, n, d);
        let u = [0.6, 0.8, 0.0, 0.0, 0.0, 0.0];
        let w = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let mut data = Vec::with_capacity(n * d);
        for i in 0..n {
            let a = 3.0 * if i % 2 == 0 { 1.0 } else { -1.0 };
            let b = if (i / 2) % 2 == 0 { 1.0 } else { -1.0 };
            for j in 0..d {
                data.push((a * u[j] + b * w[j]) as f32 + 1e-3 * noise[i * d + j]);
            }
        }
        let p = project_2d(Embeddings::new(&data, d).unwrap());
        assert!((p.explained[0] - 0.9).abs() < 1e-3, "{:?}", p.explained);
        assert!((p.explained[1] - 0.1).abs() < 1e-3, "{:?}", p.explained);
        for (i, pt) in p.points.iter().enumerate() {
            assert!((pt[0].abs() - 3.0).abs() < 0.01, "row {i}: {pt:?}");
            assert!((pt[1].abs() - 1.0).abs() < 0.01, "row {i}: {pt:?}");
        }
    }

    #[test]
    fn degenerate_inputs_project_to_the_origin() {
        let one = project_2d(Embeddings::new(&[1.0, 2.0], 2).unwrap());
        assert_eq!(one.points, vec![[0.0, 0.0]]);
        assert_eq!(one.explained, [0.0, 0.0]);
        let same = project_2d(Embeddings::new(&[1.0, 2.0, 1.0, 2.0], 2).unwrap());
        assert_eq!(same.points, vec![[0.0, 0.0]; 2]);
        // Collinear: one axis only.
        let line = project_2d(Embeddings::new(&[0.0, 0.0, 1.0, 1.0, 2.0, 2.0], 2).unwrap());
        assert!((line.explained[0] - 1.0).abs() < 1e-12 && line.explained[1] == 0.0);
    }
}
