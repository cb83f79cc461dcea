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

/// Greedy by decreasing similarity (ties: lower row, then lower column first), without sorting
/// all `rows x cols` pairs: a heap holds each free row's best candidate among columns that were
/// free when it was pushed, and a row whose candidate was taken meanwhile looks for its next
/// one. Each row keeps its candidates sorted in batches (the best [`BATCH`], then the next
/// twice as many, ...), so memory is `O(rows x BATCH)` beside the matrix, not 12 bytes per
/// pair, and the pairs chosen are exactly those of the full sort.
fn greedy(sim: &Matrix) -> Matching {
    let (r, c) = sim.shape();
    let mut rows: Vec<Candidates> = (0..r).map(|_| Candidates::new()).collect();
    let mut col_used = vec![false; c];
    let mut heap: std::collections::BinaryHeap<Entry> = rows
        .iter_mut()
        .enumerate()
        .filter_map(|(i, cands)| cands.next(sim.row(i), &col_used).map(|e| e.at(i)))
        .collect();
    let mut pairs = Vec::with_capacity(r.min(c));
    while let Some(Entry { i, j, .. }) = heap.pop() {
        if !col_used[j] {
            col_used[j] = true;
            pairs.push((i, j));
            if pairs.len() == r.min(c) {
                break;
            }
        } else if let Some(e) = rows[i].next(sim.row(i), &col_used) {
            heap.push(e.at(i));
        }
    }
    pairs.sort_unstable();
    Matching {
        pairs,
        method: MatchingMethod::Greedy,
    }
}

/// Candidates sorted per row at a time.
const BATCH: usize = 16;

/// A heap entry: larger value first, then lower row, then lower column.
#[derive(PartialEq)]
struct Entry {
    v: f32,
    i: usize,
    j: usize,
}

impl Eq for Entry {}

impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.v
            .total_cmp(&o.v)
            .then(o.i.cmp(&self.i))
            .then(o.j.cmp(&self.j))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// One row's next candidates (value, column), best last, and the size of the next batch.
struct Candidates {
    batch: Vec<(f32, usize)>,
    /// The last column handed out, in (value desc, column asc) order: the next batch starts
    /// after it.
    after: Option<(f32, usize)>,
    size: usize,
}

impl Candidates {
    fn new() -> Self {
        Candidates {
            batch: Vec::new(),
            after: None,
            size: BATCH,
        }
    }

    /// The best free column of `row` not handed out before, as an entry without its row.
    fn next(&mut self, row: &[f32], used: &[bool]) -> Option<Entry> {
        loop {
            while let Some((v, j)) = self.batch.pop() {
                self.after = Some((v, j));
                if !used[j] {
                    return Some(Entry { v, i: 0, j });
                }
            }
            if !self.refill(row, used) {
                return None;
            }
        }
    }

    /// Sorts the next `size` free columns ranked after `after`; false when none is left.
    fn refill(&mut self, row: &[f32], used: &[bool]) -> bool {
        let later = |v: f32, j: usize| match self.after {
            None => true,
            Some((av, aj)) => v.total_cmp(&av).is_lt() || (v.total_cmp(&av).is_eq() && j > aj),
        };
        let mut free: Vec<(f32, usize)> = row
            .iter()
            .enumerate()
            .filter(|&(j, &v)| !used[j] && later(v, j))
            .map(|(j, &v)| (v, j))
            .collect();
        if free.is_empty() {
            return false;
        }
        // Best first: value descending, then column ascending.
        let order = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let take = self.size.min(free.len());
        if take < free.len() {
            free.select_nth_unstable_by(take - 1, order);
            free.truncate(take);
        }
        free.sort_unstable_by(order);
        free.reverse();
        self.batch = free;
        self.size = self.size.saturating_mul(2);
        true
    }
}

impl Entry {
    fn at(self, i: usize) -> Entry {
        Entry { i, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Greedy by sorting every pair: the definition the heap version must reproduce.
    fn greedy_full_sort(sim: &Matrix) -> Vec<(usize, usize)> {
        let (r, c) = sim.shape();
        let mut order: Vec<(f32, usize, usize)> = (0..r)
            .flat_map(|i| (0..c).map(move |j| (i, j)))
            .map(|(i, j)| (sim.get(i, j), i, j))
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let (mut ru, mut cu) = (vec![false; r], vec![false; c]);
        let mut pairs = vec![];
        for (_, i, j) in order {
            if !ru[i] && !cu[j] {
                ru[i] = true;
                cu[j] = true;
                pairs.push((i, j));
            }
        }
        pairs.sort();
        pairs
    }

    proptest! {
        #[test]
        fn heap_greedy_equals_the_full_sort(r in 1usize..40, c in 1usize..40, seed in 0u64..1000, levels in 1u32..6) {
            // Few distinct values (many ties) and rows that all want the same columns, so
            // batches run out and are refilled.
            let noise = Matrix::standard_normal(r, c, seed);
            let sim = Matrix::from_fn(r, c, |i, j| {
                ((noise.get(i, j).abs() * levels as f32).floor() / levels as f32) + (j % 3) as f32 * 0.5
            });
            prop_assert_eq!(max_weight_matching(&sim, 0).pairs, greedy_full_sort(&sim));
        }
    }

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
