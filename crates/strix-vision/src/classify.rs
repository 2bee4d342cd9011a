//! Image classification: scores per class to the top-k labels.

use strix_core::TensorView;

use crate::VisionError;

pub use strix_core::Class;

/// A `[N, C]` output (trailing 1-sized dims allowed, as in `[N, C, 1, 1]`): its values, row
/// after row, and `C`; any other shape is refused with `expected`.
pub(crate) fn rows(output: TensorView<'_>, name: &str, expected: &str) -> Result<(Vec<f32>, usize), VisionError> {
    let shape = output.shape();
    if shape.len() < 2 || shape[2..].iter().any(|&d| d != 1) {
        return Err(VisionError::OutputShape {
            name: name.to_string(),
            shape: shape.to_vec(),
            expected: expected.into(),
        });
    }
    Ok((output.to_f32_vec(), shape[1]))
}

/// Turns a classifier's output into ranked classes.
#[derive(Clone, Debug)]
pub struct Classifier {
    /// Apply softmax (the model outputs logits); `false` when it outputs probabilities.
    pub softmax: bool,
    pub labels: Vec<String>,
}

impl Classifier {
    /// Split a `[N, C]` output (trailing 1-sized dims allowed, as in `[N, C, 1, 1]`) into the
    /// top `k` classes of each of the `N` images.
    ///
    /// # Shapes
    /// `output`: `[N, C, 1...]` with `C` equal to the number of labels when labels are known.
    pub fn decode<'a>(
        &self,
        output: impl Into<TensorView<'a>>,
        name: &str,
        k: usize,
    ) -> Result<Vec<Vec<Class>>, VisionError> {
        let output = output.into();
        let (values, classes) = rows(output, name, "a classifier output must be [N, classes]")?;
        if !self.labels.is_empty() && classes != self.labels.len() {
            return Err(VisionError::OutputShape {
                name: name.to_string(),
                shape: output.shape().to_vec(),
                expected: format!("the spec lists {} labels", self.labels.len()),
            });
        }
        Ok(values.chunks_exact(classes.max(1)).map(|row| self.top_k(row, k)).collect())
    }

    /// The `k` best classes of one image, best first; ties keep the lower class id first.
    pub fn top_k(&self, scores: &[f32], k: usize) -> Vec<Class> {
        let probs = if self.softmax { softmax(scores) } else { scores.to_vec() };
        let mut ids: Vec<usize> = (0..probs.len()).collect();
        // NaN sorts last: a broken model must not hide the real answers.
        let key = |i: usize| {
            if probs[i].is_nan() { f32::NEG_INFINITY } else { probs[i] }
        };
        // A total order (ties by class id), so selecting the k best and sorting only them gives
        // what sorting every class would: 1000 ImageNet classes were a full sort per image.
        let order = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
        if k < ids.len() {
            ids.select_nth_unstable_by(k, order);
            ids.truncate(k);
        }
        ids.sort_by(order);
        ids.into_iter()
            .map(|i| Class {
                class_id: i,
                label: self.labels.get(i).cloned().unwrap_or_else(|| format!("class {i}")),
                score: probs[i],
            })
            .collect()
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strix_core::Tensor;

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1000.0, 999.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[0] - p[1]).abs() < 1e-7 && p[2] < p[0]);
    }

    #[test]
    fn top_k_ranks_and_names() {
        let c = Classifier { softmax: false, labels: vec!["compost".into(), "recycling".into(), "landfill".into()] };
        let top = c.top_k(&[0.2, 0.5, 0.3], 2);
        assert_eq!(top.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), vec!["recycling", "landfill"]);
        let nan = c.top_k(&[f32::NAN, 0.1, 0.2], 3);
        assert_eq!(nan.iter().map(|c| c.class_id).collect::<Vec<_>>(), vec![2, 1, 0]);
    }

    #[test]
    fn the_k_best_are_those_of_a_full_sort_ties_and_nans_included() {
        let c = Classifier { softmax: false, labels: Vec::new() };
        let mut state = 7u64;
        for _ in 0..200 {
            let n = 1 + (state % 40) as usize;
            let scores: Vec<f32> = (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    // Few distinct values, so ties are common; a NaN now and then.
                    match state >> 60 {
                        0 => f32::NAN,
                        v => v as f32 / 4.0,
                    }
                })
                .collect();
            let key = |i: usize| if scores[i].is_nan() { f32::NEG_INFINITY } else { scores[i] };
            let mut all: Vec<usize> = (0..n).collect();
            all.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
            for k in [0, 1, 3, n, n + 2] {
                let got: Vec<usize> = c.top_k(&scores, k).iter().map(|c| c.class_id).collect();
                assert_eq!(got, all[..k.min(n)], "{scores:?} k={k}");
            }
        }
    }

    #[test]
    fn decode_checks_label_count() {
        let c = Classifier { softmax: true, labels: vec!["a".into(), "b".into()] };
        let t = Tensor::from_f32(vec![2, 3], vec![0.0; 6]).unwrap();
        let err = c.decode(&t, "logits", 1).unwrap_err().to_string();
        assert!(err.contains("logits") && err.contains("2 labels"), "{err}");
        let t = Tensor::from_f32(vec![2, 2, 1, 1], vec![0.0, 1.0, 3.0, 2.0]).unwrap();
        let out = c.decode(&t, "logits", 1).unwrap();
        assert_eq!((out[0][0].class_id, out[1][0].class_id), (1, 0));
    }
}
