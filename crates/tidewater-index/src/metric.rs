//! Scores: exact computation for [`crate::ExactIndex`], and conversion of usearch's
//! distances into the same scale.

use crate::config::Metric;
use crate::error::IndexError;

impl Metric {
    /// Score of `vector` against `query`; higher is better (see [`crate::Hit::score`]).
    pub(crate) fn score(self, query: &[f32], vector: &[f32]) -> f32 {
        match self {
            Metric::InnerProduct => dot(query, vector),
            Metric::L2 => -query
                .iter()
                .zip(vector)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>(),
            Metric::Cosine => {
                let norms = (dot(query, query) * dot(vector, vector)).sqrt();
                // A zero vector points nowhere: similar to nothing.
                if norms == 0.0 {
                    0.0
                } else {
                    dot(query, vector) / norms
                }
            }
        }
    }

    /// Score from a usearch distance: usearch reports `1 - cos` for cosine, `1 - dot` for
    /// inner product and the squared distance for L2.
    pub(crate) fn score_from_distance(self, distance: f32) -> f32 {
        match self {
            Metric::Cosine | Metric::InnerProduct => 1.0 - distance,
            Metric::L2 => -distance,
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks a vector's length and values before it reaches an index.
pub(crate) fn check_vector(
    vector: &[f32],
    dimension: usize,
    key: Option<u64>,
) -> Result<(), IndexError> {
    if vector.len() != dimension {
        return Err(IndexError::DimensionMismatch {
            expected: dimension,
            actual: vector.len(),
        });
    }
    if let Some(position) = vector.iter().position(|x| !x.is_finite()) {
        return Err(IndexError::NonFiniteValue { key, position });
    }
    Ok(())
}

/// Orders hits best first; ties by key, so that results are deterministic.
pub(crate) fn sort_hits(hits: &mut [crate::Hit]) {
    hits.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_higher_for_closer_vectors() {
        let q = [1.0, 0.0];
        let near = [0.9, 0.1];
        let far = [-1.0, 0.0];
        for metric in [Metric::Cosine, Metric::L2, Metric::InnerProduct] {
            assert!(
                metric.score(&q, &near) > metric.score(&q, &far),
                "{metric:?}"
            );
        }
        assert_eq!(Metric::Cosine.score(&q, &[2.0, 0.0]), 1.0);
        assert_eq!(Metric::L2.score(&q, &[1.0, 2.0]), -4.0);
        assert_eq!(Metric::InnerProduct.score(&q, &[3.0, 5.0]), 3.0);
        assert_eq!(Metric::Cosine.score(&q, &[0.0, 0.0]), 0.0);
    }

    #[test]
    fn rejects_bad_vectors() {
        assert!(matches!(
            check_vector(&[1.0], 2, None),
            Err(IndexError::DimensionMismatch {
                expected: 2,
                actual: 1
            })
        ));
        assert!(matches!(
            check_vector(&[1.0, f32::NAN], 2, Some(7)),
            Err(IndexError::NonFiniteValue {
                key: Some(7),
                position: 1
            })
        ));
        assert!(check_vector(&[1.0, 2.0], 2, None).is_ok());
    }
}
