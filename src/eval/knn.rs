//! Weighted k-NN classification of features, as DINO's `eval_knn.py`: cosine similarity of
//! L2-normalized features, the `k` most similar training images vote for their class with
//! weight `exp(similarity / T)`; top-1 and top-5 accuracy.
use rayon::prelude::*;

/// The ks DINO reports (20 is the headline number).
pub const KS: [usize; 4] = [10, 20, 100, 200];
/// DINO's vote temperature.
pub const TEMPERATURE: f32 = 0.07;

/// Accuracy at one k, in percent.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnResult {
    pub k: usize,
    pub top1: f64,
    pub top5: f64,
}

/// Scale every `dim`-long row to unit length (zero rows stay zero).
pub fn l2_normalize(x: &mut [f32], dim: usize) {
    x.par_chunks_mut(dim).for_each(|row| {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    });
}

/// `out (m x n) = a (m x d) . b (n x d)^T`, row-major.
fn similarities(a: &[f32], b: &[f32], d: usize, out: &mut [f32]) {
    let (m, n) = (a.len() / d, b.len() / d);
    unsafe {
        gemm::gemm(
            m,
            n,
            d,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            d as isize,
            b.as_ptr(),
            d as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        )
    }
}

/// Weighted k-NN accuracy for every k of `ks` (features already L2-normalized, `dim` each).
#[allow(clippy::too_many_arguments)]
pub fn weighted_knn(
    train: &[f32],
    train_labels: &[usize],
    test: &[f32],
    test_labels: &[usize],
    dim: usize,
    classes: usize,
    ks: &[usize],
    temperature: f32,
) -> Vec<KnnResult> {
    let hits = knn_hits(train, train_labels, test, test_labels, dim, classes, ks, temperature);
    accuracies(ks, &hits, test_labels.len())
}

/// Accuracies in percent from `(top-1, top-5)` hit counts per k over `n` test images.
pub fn accuracies(ks: &[usize], hits: &[(usize, usize)], n: usize) -> Vec<KnnResult> {
    let n = n.max(1) as f64;
    ks.iter()
        .zip(hits)
        .map(|(&k, &(t1, t5))| KnnResult { k, top1: 100.0 * t1 as f64 / n, top5: 100.0 * t5 as f64 / n })
        .collect()
}

/// How many test images [`weighted_knn`] classifies right, per k: `(top-1, top-5)` counts
/// (counts add up over shards of the test set).
#[allow(clippy::too_many_arguments)]
pub fn knn_hits(
    train: &[f32],
    train_labels: &[usize],
    test: &[f32],
    test_labels: &[usize],
    dim: usize,
    classes: usize,
    ks: &[usize],
    temperature: f32,
) -> Vec<(usize, usize)> {
    let n_train = train.len() / dim;
    assert_eq!(n_train, train_labels.len(), "one label per training feature");
    assert_eq!(test.len() / dim, test_labels.len(), "one label per test feature");
    let kmax = ks.iter().copied().max().unwrap_or(1).min(n_train);
    let chunk = 256;
    let mut hits = vec![(0usize, 0usize); ks.len()];
    let mut sims = vec![0f32; chunk.min(test_labels.len()) * n_train];
    for (ci, tchunk) in test.chunks(chunk * dim).enumerate() {
        let rows = tchunk.len() / dim;
        similarities(tchunk, train, dim, &mut sims[..rows * n_train]);
        let chunk_hits: Vec<Vec<(bool, bool)>> = sims[..rows * n_train]
            .par_chunks(n_train)
            .enumerate()
            .map(|(r, row)| {
                let mut idx: Vec<u32> = (0..n_train as u32).collect();
                let by_sim = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]);
                if kmax < n_train {
                    idx.select_nth_unstable_by(kmax - 1, by_sim);
                    idx.truncate(kmax);
                }
                idx.sort_unstable_by(by_sim);
                let truth = test_labels[ci * chunk + r];
                ks.iter()
                    .map(|&k| {
                        let mut votes = vec![0f64; classes];
                        for &j in &idx[..k.min(idx.len())] {
                            votes[train_labels[j as usize]] += ((row[j as usize] / temperature) as f64).exp();
                        }
                        let mine = votes[truth];
                        // rank of the true class: classes with strictly more votes come first
                        let better = votes.iter().filter(|&&v| v > mine).count();
                        (better == 0 && mine > 0.0, better < 5 && mine > 0.0)
                    })
                    .collect()
            })
            .collect();
        for row in chunk_hits {
            for (h, (t1, t5)) in hits.iter_mut().zip(row) {
                h.0 += t1 as usize;
                h.1 += t5 as usize;
            }
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_are_weighted_by_similarity() {
        // 2-d features; class 0 near (1, 0), class 1 near (0, 1)
        let mut train = vec![1.0, 0.0, 0.9, 0.1, 0.8, 0.3, 0.0, 1.0, 0.1, 0.9];
        let labels = [0, 0, 0, 1, 1];
        l2_normalize(&mut train, 2);
        let mut test = vec![0.95, 0.05, 0.2, 0.8, 0.6, 0.5];
        l2_normalize(&mut test, 2);
        let r = weighted_knn(&train, &labels, &test, &[0, 1, 1], 2, 2, &[1, 5], 0.07);
        // k = 1: nearest neighbours are classes 0, 1, 0 -> two right
        assert_eq!(r[0].k, 1);
        assert!((r[0].top1 - 200.0 / 3.0).abs() < 1e-9, "{r:?}");
        // k = 5, all vote: the third point (0.6, 0.5) is closer to class 0's members, so the
        // exp(sim / T) weights make it class 0 -> still two right; top-5 of 2 classes is 100%
        assert!((r[1].top1 - 200.0 / 3.0).abs() < 1e-9 && r[1].top5 == 100.0, "{r:?}");
    }

    #[test]
    fn a_planted_structure_is_recovered_with_every_k() {
        // 3 classes of noisy copies of 3 directions in 16-d
        let dim = 16;
        let (mut tr, ytr) = crate::eval::planted_classes(600, dim, 3.0, 1.0, 1);
        let (mut te, yte) = crate::eval::planted_classes(300, dim, 3.0, 1.0, 2);
        l2_normalize(&mut tr, dim);
        l2_normalize(&mut te, dim);
        for r in weighted_knn(&tr, &ytr, &te, &yte, dim, 3, &KS, TEMPERATURE) {
            assert!(r.top1 > 99.0 && r.top5 == 100.0, "{r:?}");
        }
    }
}
