//! Near-duplicates: pairs of vectors at least a threshold similar, within one set (the same
//! photo twice, perhaps under two labels) or across two (a training image that is also a
//! validation image: a leak that flatters every figure measured on it).
//!
//! Every pair is compared while that costs less than [`EXACT_PAIRS_WORK`]; beyond, each vector
//! asks an HNSW graph for its nearest [`NEIGHBOURS`] and only those pairs are kept, so a
//! vector with more near-duplicates than that reports the closest ones.

use crate::IndexError;
use crate::graph::Graph;
use crate::segment::Segment;
use crate::vectors::dot;

/// Multiply-adds of an all-pairs comparison below which it is done exactly (about 10 s here).
pub const EXACT_PAIRS_WORK: usize = 10_000_000_000;
/// Neighbours each vector asks the graph for beyond that.
pub const NEIGHBOURS: usize = 16;

/// A pair of rows and their cosine similarity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    pub similarity: f32,
}

/// Pairs `a < b` of rows of `vectors` (unit, `d` wide) at least `threshold` similar, most
/// similar first.
pub fn within(vectors: &[f32], d: usize, threshold: f32) -> Result<Vec<Pair>, IndexError> {
    pairs(vectors, None, d, threshold, EXACT_PAIRS_WORK)
}

/// Pairs of a row of `a` and a row of `b` at least `threshold` similar, most similar first.
pub fn across(a: &[f32], b: &[f32], d: usize, threshold: f32) -> Result<Vec<Pair>, IndexError> {
    pairs(a, Some(b), d, threshold, EXACT_PAIRS_WORK)
}

fn pairs(a: &[f32], b: Option<&[f32]>, d: usize, threshold: f32, exact_work: usize) -> Result<Vec<Pair>, IndexError> {
    if d == 0 {
        return Ok(Vec::new());
    }
    let (na, nb) = (a.len() / d, b.map_or(a.len() / d, |b| b.len() / d));
    fn row(v: &[f32], d: usize, i: usize) -> &[f32] {
        &v[i * d..(i + 1) * d]
    }
    let mut out = Vec::new();
    if na.saturating_mul(nb).saturating_mul(d) <= exact_work {
        for i in 0..na {
            let (others, start) = match b {
                Some(b) => (b, 0),
                None => (a, i + 1),
            };
            for j in start..nb {
                let similarity = dot(row(a, d, i), row(others, d, j));
                if similarity >= threshold {
                    out.push(Pair { a: i, b: j, similarity });
                }
            }
        }
    } else {
        let graph_err = |source| IndexError::Graph { name: "near-duplicates".into(), source };
        let segment = Segment {
            dimensions: d,
            entries: (0..na).map(|i| crate::Entry { id: i as u64, ..Default::default() }).collect(),
            vectors: a.to_vec(),
        };
        let graph = Graph::build(&segment).map_err(graph_err)?;
        let queries = b.unwrap_or(a);
        // Within one set a pair may be found from either end; the graph is approximate (and
        // built on several threads), so both ends are asked and the pair kept once.
        let mut seen = std::collections::HashSet::new();
        for j in 0..nb {
            for (i, similarity) in graph.search(row(queries, d, j), NEIGHBOURS + 1).map_err(graph_err)? {
                let i = i as usize;
                let (first, second) = match b {
                    Some(_) => (i, j),
                    None if i == j => continue,
                    None => (i.min(j), i.max(j)),
                };
                if similarity >= threshold && seen.insert((first, second)) {
                    out.push(Pair { a: first, b: second, similarity });
                }
            }
        }
    }
    out.sort_by(|x, y| y.similarity.total_cmp(&x.similarity).then((x.a, x.b).cmp(&(y.a, y.b))));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        crate::unit(v).unwrap()
    }

    #[test]
    fn pairs_within_and_across_sets() {
        let a: Vec<f32> = [unit(&[1.0, 0.0, 0.0]), unit(&[0.99, 0.05, 0.0]), unit(&[0.0, 1.0, 0.0])].concat();
        let found = within(&a, 3, 0.95).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].a, found[0].b), (0, 1));
        let b: Vec<f32> = [unit(&[0.0, 0.98, 0.1]), unit(&[0.0, 0.0, 1.0])].concat();
        let leaks = across(&a, &b, 3, 0.95).unwrap();
        assert_eq!(leaks.iter().map(|p| (p.a, p.b)).collect::<Vec<_>>(), vec![(2, 0)]);
        assert!(within(&a, 3, 1.01).unwrap().is_empty());
    }

    #[test]
    fn the_graph_finds_what_the_scan_finds() {
        // 300 random directions in 64-d and a near copy of every tenth: pairs by graph (forced
        // by a tiny work limit) equal pairs by scan.
        let mut rng = 7u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((rng >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut v = Vec::new();
        for i in 0..300 {
            let base: Vec<f32> = (0..64).map(|_| next()).collect();
            v.extend(unit(&base));
            if i % 10 == 0 {
                let near: Vec<f32> = base.iter().map(|x| x + 0.01 * next()).collect();
                v.extend(unit(&near));
            }
        }
        let exact = within(&v, 64, 0.9).unwrap();
        assert_eq!(exact.len(), 30);
        // The graph's cosine is its own arithmetic: compare the pairs, not the last digits.
        let ids = |p: Vec<Pair>| {
            let mut v: Vec<(usize, usize)> = p.into_iter().map(|p| (p.a, p.b)).collect();
            v.sort();
            v
        };
        assert_eq!(ids(pairs(&v, None, 64, 0.9, 0).unwrap()), ids(exact));
        let (a, b) = v.split_at(64 * 100);
        let across_exact = ids(pairs(a, Some(b), 64, 0.9, usize::MAX).unwrap());
        assert!(!across_exact.is_empty());
        assert_eq!(ids(pairs(a, Some(b), 64, 0.9, 0).unwrap()), across_exact);
    }
}
