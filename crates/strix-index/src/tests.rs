//! The index against a real registry (SQLite and a folder store, as the embedded default).

use strix_registry::{ModelRef, Registry, RegistryConfig};

use crate::{EXACT_WORK, EmbeddingModel, Entry, IndexError, add, create, list, open, remove};

fn model(dimensions: usize) -> EmbeddingModel {
    EmbeddingModel { reference: "test_embed".into(), sha256: "ab".repeat(32), dimensions, task: "embed".into() }
}

fn entry(image: &str) -> Entry {
    Entry { image: image.into(), ..Default::default() }
}

/// Deterministic pseudo-random unit-ish vectors (splitmix64).
fn vectors(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    (0..n).map(|_| (0..d).map(|_| next()).collect()).collect()
}

/// `n` vectors around 100 random centres (uniform random vectors in many dimensions are all
/// about equally far apart, which no graph can search well; real embeddings cluster).
fn clustered(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let centres = vectors(100, d, 1);
    let noise = vectors(n, d, seed);
    noise
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.iter().zip(&centres[i % 100]).map(|(e, c)| c + 0.3 * e).collect())
        .collect()
}

async fn registry(dir: &std::path::Path) -> Registry {
    Registry::open(&RegistryConfig::local(dir)).await.unwrap()
}

fn latest() -> ModelRef {
    ModelRef::parse("pantry").unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn add_search_remove_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(tmp.path()).await;
    create(&reg, "pantry", model(4), "test", "test").await.unwrap();
    assert!(matches!(create(&reg, "pantry", model(4), "", "test").await, Err(IndexError::Exists { version: 1, .. })));
    let items = vec![
        (entry("a.jpg"), vec![1.0, 0.0, 0.0, 0.0]),
        (Entry { external_id: Some("bob".into()), ..entry("b.jpg") }, vec![0.0, 2.0, 0.0, 0.0]),
        (entry("c.jpg"), vec![0.7, 0.7, 0.0, 0.0]),
    ];
    let change = add(&reg, "pantry", &model(4), items, "test").await.unwrap();
    assert_eq!((change.record.version, change.ids.clone()), (2, vec![1, 2, 3]));
    let index = open(&reg, &latest()).await.unwrap();
    let hits = index.search(&[0.0, 1.0, 0.0, 0.0], 2, -1.0).unwrap();
    assert_eq!(hits[0].entry.external_id.as_deref(), Some("bob"));
    assert!((hits[0].similarity - 1.0).abs() < 1e-6, "stored unit length");
    assert_eq!(hits[1].entry.image, "c.jpg");
    assert_eq!(index.search(&[0.0, 1.0, 0.0, 0.0], 10, 0.9).unwrap().len(), 1, "threshold");

    // Refused, and nothing written: another model's vectors, the wrong size, a zero vector.
    let other = EmbeddingModel { sha256: "cd".repeat(32), ..model(4) };
    let err = add(&reg, "pantry", &other, vec![(entry("x"), vec![1.0; 4])], "t").await.unwrap_err();
    assert!(matches!(err, IndexError::OtherModel { .. }), "{err}");
    let err = add(&reg, "pantry", &model(4), vec![(entry("x"), vec![1.0; 5])], "t").await.unwrap_err();
    assert!(matches!(err, IndexError::Dimensions { expected: 4, found: 5, .. }), "{err}");
    let err = add(&reg, "pantry", &model(4), vec![(entry("x"), vec![0.0; 4])], "t").await.unwrap_err();
    assert!(matches!(err, IndexError::BadVector { at: 0, .. }), "{err}");
    assert!(matches!(index.search(&[1.0; 3], 1, 0.0), Err(IndexError::Dimensions { .. })));
    assert_eq!(reg.versions("pantry").await.unwrap().len(), 2);

    // Removing and re-adding: the removed entry is gone, the new one gets a fresh id.
    remove(&reg, "pantry", &[2], "t").await.unwrap();
    assert!(matches!(remove(&reg, "pantry", &[2], "t").await, Err(IndexError::UnknownEntry { id: 2, .. })));
    let change = add(&reg, "pantry", &model(4), vec![(entry("b2.jpg"), vec![0.0, 1.0, 0.0, 0.0])], "t").await.unwrap();
    assert_eq!(change.ids, vec![4]);
    let index = open(&reg, &latest()).await.unwrap();
    assert_eq!(index.len(), 3);
    assert_eq!(index.search(&[0.0, 1.0, 0.0, 0.0], 1, 0.0).unwrap()[0].entry.image, "b2.jpg");
    // Earlier versions stay as they were.
    let v2 = open(&reg, &ModelRef::parse("pantry:2").unwrap()).await.unwrap();
    assert_eq!(v2.len(), 3);
    assert!(v2.entry(2).is_some());
    // Later versions keep the earlier segments' blobs instead of writing them again.
    let v5 = reg.get(&latest()).await.unwrap();
    let v2r = reg.get(&ModelRef::parse("pantry:2").unwrap()).await.unwrap();
    let seg = v2r.artifacts.iter().find(|a| a.file.starts_with("seg-")).unwrap();
    assert!(v5.artifacts.contains(seg));

    assert_eq!(list(&reg).await.unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["pantry"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = std::sync::Arc::new(registry(tmp.path()).await);
    create(&reg, "pantry", model(8), "", "test").await.unwrap();
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let reg = reg.clone();
            tokio::spawn(async move {
                let items = vectors(3, 8, w).into_iter().map(|v| (entry(&format!("w{w}.jpg")), v)).collect();
                add(&reg, "pantry", &model(8), items, "test").await.unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for w in writers {
        ids.extend(w.await.unwrap().ids);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=18).collect::<Vec<u64>>(), "every writer's ids are distinct");
    assert_eq!(open(&reg, &latest()).await.unwrap().len(), 18);
}

#[tokio::test(flavor = "current_thread")]
async fn a_big_index_searches_its_graph_and_reloads_to_the_same_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(tmp.path()).await;
    let d = 256;
    create(&reg, "pantry", model(d), "", "test").await.unwrap();
    let data = clustered(EXACT_WORK / d + 500, d, 7);
    let items = data.iter().enumerate().map(|(i, v)| (entry(&format!("{i}.jpg")), v.clone())).collect();
    add(&reg, "pantry", &model(d), items, "test").await.unwrap();
    let record = reg.get(&latest()).await.unwrap();
    assert!(record.artifacts.iter().any(|a| a.file.starts_with("graph-")), "{:?}", record.artifacts);
    let index = open(&reg, &latest()).await.unwrap();
    assert!(index.uses_graph());
    let queries = clustered(50, d, 99);
    let mut found = 0;
    for q in &queries {
        let q = crate::unit(q).unwrap();
        let graph: Vec<u64> = index.search(&q, 10, -1.0).unwrap().iter().map(|m| m.entry.id).collect();
        let exact: Vec<u64> = index.scan(&q, 10).iter().map(|h| h.0).collect();
        found += graph.iter().filter(|id| exact.contains(id)).count();
    }
    let recall = found as f64 / (10 * queries.len()) as f64;
    assert!(recall >= 0.9, "recall@10 {recall}");
    let again = open(&reg, &latest()).await.unwrap();
    for q in &queries {
        let q = crate::unit(q).unwrap();
        assert_eq!(index.search(&q, 10, -1.0).unwrap(), again.search(&q, 10, -1.0).unwrap());
    }
    // A small addition goes into a segment outside the graph; the loaded graph takes it in.
    let items = vec![(entry("new.jpg"), queries[0].clone())];
    add(&reg, "pantry", &model(d), items, "test").await.unwrap();
    let grown = open(&reg, &latest()).await.unwrap();
    let q = crate::unit(&queries[0]).unwrap();
    assert_eq!(grown.search(&q, 1, 0.0).unwrap()[0].entry.image, "new.jpg");
    assert_eq!(reg.get(&latest()).await.unwrap().artifacts.iter().filter(|a| a.file.starts_with("graph-")).count(), 1);
}

/// A removal that triggers a compaction (removed ids past a quarter of the index) keeps the
/// removal: the compacted segment leaves those entries out.
#[tokio::test(flavor = "current_thread")]
async fn a_removal_that_compacts_stays_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(tmp.path()).await;
    create(&reg, "pantry", model(8), "", "test").await.unwrap();
    let items = clustered(200, 8, 3).into_iter().enumerate().map(|(i, v)| (entry(&format!("{i}.jpg")), v)).collect();
    add(&reg, "pantry", &model(8), items, "test").await.unwrap();
    let gone: Vec<u64> = (1..=100).collect();
    remove(&reg, "pantry", &gone, "test").await.unwrap();
    let record = reg.get(&latest()).await.unwrap();
    let segments = record.artifacts.iter().filter(|a| a.file.starts_with("seg-")).count();
    let index = open(&reg, &latest()).await.unwrap();
    assert_eq!((index.len(), segments, index.manifest.removed.len()), (100, 1, 0), "compacted");
    assert!(gone.iter().all(|id| index.entry(*id).is_none()));
    // Many small additions are merged before the segments pile up.
    for i in 0..40 {
        add(&reg, "pantry", &model(8), vec![(entry(&format!("more{i}.jpg")), clustered(1, 8, i)[0].clone())], "t")
            .await
            .unwrap();
    }
    let index = open(&reg, &latest()).await.unwrap();
    assert!(index.manifest.segments.len() <= 32, "{}", index.manifest.segments.len());
    assert_eq!(index.len(), 140);
}
