//! The index benchmark's Strix side (bench/index.py drives it): vectors from a `.npy` file
//! into an index in a fresh registry, reloaded from the store, then every query searched
//! through the graph and exactly. Prints one JSON object.
//!
//! usage: index_bench VECTORS.npy QUERIES.npy K

use std::time::Instant;

use strix_index::{EmbeddingModel, Entry};
use strix_registry::{ModelRef, Registry, RegistryConfig};

fn read(path: &str) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy");
    let shape = npy.shape().to_vec();
    let data: Vec<f32> = npy.into_vec().expect("f32 data");
    (shape[0] as usize, shape[1] as usize, data)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (n, d, data) = read(&args[1]);
    let (nq, dq, queries) = read(&args[2]);
    let k: usize = args[3].parse().expect("K");
    assert_eq!(d, dq);
    let tmp = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(&RegistryConfig::local(tmp.path())).await.expect("registry");
    let model =
        EmbeddingModel { reference: "bench".into(), sha256: "0".repeat(64), dimensions: d, task: "embed".into() };
    strix_index::create(&registry, "bench", model.clone(), "", "bench").await.expect("create");
    let items = (0..n)
        .map(|i| (Entry { image: format!("{i}"), ..Default::default() }, data[i * d..(i + 1) * d].to_vec()))
        .collect();
    let started = Instant::now();
    strix_index::add(&registry, "bench", &model, items, "bench").await.expect("add");
    let add_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let reference = ModelRef::parse("bench").expect("name");
    let stored = strix_index::open(&registry, &reference).await.expect("open");
    let load_s = started.elapsed().as_secs_f64();
    // A small index keeps no graph (searches scan, `strix_index::scans`); one is built here to measure it.
    let graph_forced = !stored.uses_graph();
    let index = stored.with_graph().expect("graph");
    // Reloaded twice from the store, searched as the store has it: answers must not change.
    let first = strix_index::open(&registry, &reference).await.expect("open");
    let again = strix_index::open(&registry, &reference).await.expect("open");
    let (mut graph_us, mut exact_us, mut found, mut identical) = (Vec::new(), Vec::new(), 0usize, true);
    for q in 0..nq {
        let query = strix_index::unit(&queries[q * d..(q + 1) * d]).expect("query");
        let t = Instant::now();
        let hits = index.search(&query, k, -1.0).expect("search");
        graph_us.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let exact = index.scan(&query, k);
        exact_us.push(t.elapsed().as_secs_f64() * 1e6);
        found += hits.iter().filter(|h| exact.iter().any(|e| e.0 == h.entry.id)).count();
        identical &= again.search(&query, k, -1.0).expect("search") == first.search(&query, k, -1.0).expect("search");
    }
    let out = serde_json::json!({
        "vectors": n, "dimensions": d, "queries": nq, "k": k,
        "graph_in_store": index.manifest.graph.is_some(), "graph_forced": graph_forced,
        "add_s": add_s, "load_s": load_s,
        "graph_median_us": median(graph_us), "exact_median_us": median(exact_us),
        "recall": found as f64 / (k * nq) as f64,
        "reload_identical": identical,
    });
    println!("{out}");
}
