//! Top-k selection per row without sorting the whole row.
//!
//! `select_nth_unstable_by` partitions in O(n); ties are broken by the lower index so the result
//! does not depend on the order of equal values (and is identical across thread counts).

use std::cmp::Ordering;

/// Sparse codes with exactly `k` slots per row: `indices[r*k + s]`, `values[r*k + s]`.
/// A slot whose value is 0 is inactive (TopK keeps the k largest, then applies ReLU).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopK {
    /// Slots per row.
    pub k: usize,
    /// Latent index of each slot.
    pub indices: Vec<u32>,
    /// Value of each slot (>= 0).
    pub values: Vec<f32>,
}

impl TopK {
    /// Storage for `rows` rows of `k` slots.
    pub fn with_rows(rows: usize, k: usize) -> Self {
        TopK {
            k,
            indices: vec![0; rows * k],
            values: vec![0.0; rows * k],
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.indices.len().checked_div(self.k).unwrap_or(0)
    }

    /// Writes the codes densely into `out` (`rows x n`, zero elsewhere).
    pub fn to_dense(&self, n: usize) -> crate::Matrix {
        let rows = self.rows();
        let mut out = crate::Matrix::zeros(rows, n);
        for r in 0..rows {
            let row = out.row_mut(r);
            for s in 0..self.k {
                row[self.indices[r * self.k + s] as usize] = self.values[r * self.k + s];
            }
        }
        out
    }
}

fn desc(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// `a` ranks below `b`: a lower value, or the same value at a higher index.
#[inline]
fn worse(a: (f32, u32), b: (f32, u32)) -> bool {
    match a.0.total_cmp(&b.0) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => a.1 > b.1,
    }
}

/// Restores the heap property below `i` in a heap whose root is its worst element.
fn sift_down(heap: &mut [(f32, u32)], mut i: usize) {
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut w = i;
        if l < heap.len() && worse(heap[l], heap[w]) {
            w = l;
        }
        if r < heap.len() && worse(heap[r], heap[w]) {
            w = r;
        }
        if w == i {
            return;
        }
        heap.swap(i, w);
        i = w;
    }
}

/// Writes the `k` largest entries of `row` (ReLU applied: negatives become 0) into
/// `indices`/`values`, ordered by decreasing value. `scratch` is reused between calls.
/// Requires `1 <= k <= row.len()`.
///
/// One pass with a threshold: a heap of the best `k` seen so far whose root (the worst of them)
/// is the bar a new value must clear. With `k << n` the bar is rarely cleared (about
/// `k ln(n/k)` times for values in random order), so the pass costs about one comparison per value.
pub fn topk_row(
    row: &[f32],
    k: usize,
    scratch: &mut Vec<(f32, u32)>,
    indices: &mut [u32],
    values: &mut [f32],
) {
    select_by(row.len(), |i| row[i], k, scratch, indices, values)
}

/// [`topk_row`] of `row + shift` (elementwise) without writing the sum anywhere: the encoder
/// bias is added while selecting instead of in a separate pass over the pre-activations.
pub fn topk_row_shifted(
    row: &[f32],
    shift: &[f32],
    k: usize,
    scratch: &mut Vec<(f32, u32)>,
    indices: &mut [u32],
    values: &mut [f32],
) {
    debug_assert_eq!(row.len(), shift.len());
    select_by(
        row.len(),
        |i| row[i] + shift[i],
        k,
        scratch,
        indices,
        values,
    )
}

/// The best `k` values offered so far, in a heap whose root is the worst of them (ties: the
/// higher index ranks below), for passes that do more than select ([`topk_row`]'s rule).
pub(crate) struct BestK<'a> {
    heap: &'a mut Vec<(f32, u32)>,
    k: usize,
}

impl<'a> BestK<'a> {
    /// An empty selection of `k >= 1` reusing `heap`'s storage.
    pub(crate) fn new(heap: &'a mut Vec<(f32, u32)>, k: usize) -> Self {
        heap.clear();
        BestK { heap, k }
    }

    /// Offers value `v` of index `i` (indices offered in increasing order).
    #[inline(always)]
    pub(crate) fn offer(&mut self, v: f32, i: u32) {
        if self.heap.len() < self.k {
            self.heap.push((v, i));
            if self.heap.len() == self.k {
                for p in (0..self.k / 2).rev() {
                    sift_down(self.heap, p);
                }
            }
        } else if v > self.heap[0].0 {
            // Equal to the bar never enters: the newcomer has the higher index.
            self.heap[0] = (v, i);
            sift_down(self.heap, 0);
        }
    }

    /// The worst of the best `k` once `k` values were offered.
    #[inline(always)]
    pub(crate) fn bar(&self) -> Option<f32> {
        (self.heap.len() == self.k).then(|| self.heap[0].0)
    }
}

/// Leaves the best `k` of `value(0..n)` in `scratch` as a heap whose root is the worst of them,
/// and returns that root's value.
#[inline(always)]
fn best_k(n: usize, value: impl Fn(usize) -> f32, k: usize, scratch: &mut Vec<(f32, u32)>) -> f32 {
    debug_assert!(k >= 1 && k <= n);
    scratch.clear();
    scratch.extend((0..k).map(|i| (value(i), i as u32)));
    for i in (0..k / 2).rev() {
        sift_down(scratch, i);
    }
    let mut bar = scratch[0].0;
    for i in k..n {
        let v = value(i);
        // Equal to the bar never enters: the newcomer has the higher index, so it ranks below.
        if v > bar {
            scratch[0] = (v, i as u32);
            sift_down(scratch, 0);
            bar = scratch[0].0;
        }
    }
    bar
}

#[inline(always)]
fn select_by(
    n: usize,
    value: impl Fn(usize) -> f32,
    k: usize,
    scratch: &mut Vec<(f32, u32)>,
    indices: &mut [u32],
    values: &mut [f32],
) {
    best_k(n, value, k, scratch);
    scratch.sort_unstable_by(desc);
    for (s, &(v, i)) in scratch.iter().enumerate() {
        indices[s] = i;
        values[s] = v.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_full_sort(row in prop::collection::vec(-5i32..5, 1..70), kf in 0.0f64..1.0) {
            let row: Vec<f32> = row.into_iter().map(|v| v as f32 * 0.5).collect();
            let k = 1 + ((row.len() - 1) as f64 * kf) as usize;
            let mut idx = vec![0u32; k];
            let mut val = vec![0f32; k];
            topk_row(&row, k, &mut Vec::new(), &mut idx, &mut val);
            // Shifting by a vector selects the top-k of the sum.
            let shift: Vec<f32> = (0..row.len()).map(|i| if i % 3 == 0 { 1.0 } else { -0.5 }).collect();
            let summed: Vec<f32> = row.iter().zip(&shift).map(|(a, b)| a + b).collect();
            let (mut i2, mut v2, mut i3, mut v3) = (vec![0u32; k], vec![0f32; k], vec![0u32; k], vec![0f32; k]);
            topk_row_shifted(&row, &shift, k, &mut Vec::new(), &mut i2, &mut v2);
            topk_row(&summed, k, &mut Vec::new(), &mut i3, &mut v3);
            prop_assert_eq!((i2, v2), (i3, v3));
            let mut all: Vec<(f32, u32)> = row.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
            all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
            for s in 0..k {
                prop_assert_eq!(idx[s], all[s].1);
                prop_assert_eq!(val[s], all[s].0.max(0.0));
            }
        }
    }

    #[test]
    fn dense_round_trip() {
        let mut t = TopK::with_rows(2, 2);
        topk_row(
            &[0.1, 3.0, -1.0, 2.0],
            2,
            &mut Vec::new(),
            &mut t.indices[0..2],
            &mut t.values[0..2],
        );
        topk_row(
            &[-0.1, -3.0, -1.0, -2.0],
            2,
            &mut Vec::new(),
            &mut t.indices[2..4],
            &mut t.values[2..4],
        );
        let d = t.to_dense(4);
        assert_eq!(d.row(0), &[0.0, 3.0, 0.0, 2.0]);
        assert_eq!(d.row(1), &[0.0, 0.0, 0.0, 0.0]);
    }
}
