//! Maximum-weight bipartite matching of a similarity matrix: exact Hungarian (Kuhn-Munkres from
//! `pathfinding`, on similarities scaled to integers) up to [`HUNGARIAN_MAX`] on the larger side,
//! greedy above it.
//!
//! Greedy fallback: visit all (row, col) pairs by decreasing similarity and keep a pair when both
//! are still free. It is a 1/2-approximation in the worst case, and on near-permutation
//! similarity matrices (a well recovered dictionary) it finds the same matching as Hungarian.

use crate::Matrix;
use pathfinding::kuhn_munkres::kuhn_munkres;
use serde::{Deserialize, Serialize};

/// Above this many rows or columns the matching is greedy (Hungarian is O(n^3): ~8 s at 8192).
pub const HUNGARIAN_MAX: usize = 4096;

/// Similarities are scaled by this before rounding to integers for Kuhn-Munkres.
const SCALE: f64 = 1e6;

/// Which algorithm produced a matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchingMethod {
    /// Exact Kuhn-Munkres.
    Hungarian,
    /// Greedy by decreasing similarity.
    Greedy,
}

/// A one-to-one assignment of rows to columns (`min(rows, cols)` pairs).
#[derive(Clone, Debug, PartialEq)]
pub struct Matching {
    /// (row, column) pairs, sorted by row.
    pub pairs: Vec<(usize, usize)>,
    /// The algorithm used.
    pub method: MatchingMethod,
}

/// Matches rows to columns maximising the summed similarity.
pub fn max_weight_matching(sim: &Matrix, hungarian_max: usize) -> Matching {
    let (r, c) = sim.shape();
    if r == 0 || c == 0 {
        return Matching {
            pairs: vec![],
            method: MatchingMethod::Hungarian,
        };
    }
    if r.max(c) > hungarian_max {
        return greedy(sim);
    }
    let transpose = r > c;
    let (rows, cols) = if transpose { (c, r) } else { (r, c) };
    let w = pathfinding::matrix::Matrix::from_fn(rows, cols, |(i, j)| {
        let v = if transpose {
            sim.get(j, i)
        } else {
            sim.get(i, j)
        };
        (v as f64 * SCALE).round() as i64
    });
    let (_, assign) = kuhn_munkres(&w);
    let pairs = assign
        .into_iter()
        .enumerate()
        .map(|(i, j)| if transpose { (j, i) } else { (i, j) })
        .collect();
    Matching {
        pairs,
        method: MatchingMethod::Hungarian,
    }
}

fn greedy(sim: &Matrix) -> Matching {
    let (r, c) = sim.shape();
    let mut order: Vec<(f32, u32, u32)> = Vec::with_capacity(r * c);
    for i in 0..r {
        for (j, &v) in sim.row(i).iter().enumerate() {
            order.push((v, i as u32, j as u32));
        }
    }
    order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut row_used, mut col_used) = (vec![false; r], vec![false; c]);
    let mut pairs = Vec::with_capacity(r.min(c));
    for (_, i, j) in order {
        let (i, j) = (i as usize, j as usize);
        if !row_used[i] && !col_used[j] {
            row_used[i] = true;
            col_used[j] = true;
            pairs.push((i, j));
            if pairs.len() == r.min(c) {
                break;
            }
        }
    }
    pairs.sort_unstable();
    Matching {
        pairs,
        method: MatchingMethod::Greedy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn total(sim: &Matrix, m: &Matching) -> f64 {
        m.pairs.iter().map(|&(i, j)| sim.get(i, j) as f64).sum()
    }

    fn brute_force(sim: &Matrix) -> f64 {
        // Best assignment of the smaller side into the larger, by trying all injections.
        let (r, c) = sim.shape();
        let (small, large, get): (usize, usize, Box<dyn Fn(usize, usize) -> f32>) = if r <= c {
            (r, c, Box::new(|i, j| sim.get(i, j)))
        } else {
            (c, r, Box::new(|i, j| sim.get(j, i)))
        };
        fn rec(
            i: usize,
            small: usize,
            used: &mut Vec<bool>,
            get: &dyn Fn(usize, usize) -> f32,
        ) -> f64 {
            if i == small {
                return 0.0;
            }
            let mut best = f64::MIN;
            for j in 0..used.len() {
                if !used[j] {
                    used[j] = true;
                    best = best.max(get(i, j) as f64 + rec(i + 1, small, used, get));
                    used[j] = false;
                }
            }
            best
        }
        rec(0, small, &mut vec![false; large], &*get)
    }

    proptest! {
        #[test]
        fn hungarian_matches_brute_force(r in 1usize..6, c in 1usize..6, vals in prop::collection::vec(0.0f32..1.0, 36)) {
            let sim = Matrix::from_fn(r, c, |i, j| vals[i * 6 + j]);
            let m = max_weight_matching(&sim, HUNGARIAN_MAX);
            prop_assert_eq!(m.pairs.len(), r.min(c));
            let mut rows: Vec<_> = m.pairs.iter().map(|p| p.0).collect();
            let mut cols: Vec<_> = m.pairs.iter().map(|p| p.1).collect();
            rows.sort(); rows.dedup(); cols.sort(); cols.dedup();
            prop_assert_eq!(rows.len(), r.min(c));
            prop_assert_eq!(cols.len(), r.min(c));
            prop_assert!((total(&sim, &m) - brute_force(&sim)).abs() < 1e-4);
            // Greedy is never better than optimal and at least half of it.
            let g = max_weight_matching(&sim, 0);
            prop_assert_eq!(g.method, MatchingMethod::Greedy);
            prop_assert!(total(&sim, &g) <= total(&sim, &m) + 1e-6);
            prop_assert!(total(&sim, &g) >= 0.5 * total(&sim, &m) - 1e-6);
        }
    }

    #[test]
    fn greedy_finds_a_planted_permutation() {
        let perm = [3usize, 0, 4, 1, 2];
        let sim = Matrix::from_fn(5, 5, |i, j| {
            if perm[i] == j {
                0.9
            } else {
                0.1 + 0.01 * (i + j) as f32
            }
        });
        let g = max_weight_matching(&sim, 0);
        assert_eq!(
            g.pairs,
            perm.iter()
                .enumerate()
                .map(|(i, &j)| (i, j))
                .collect::<Vec<_>>()
        );
    }
}
