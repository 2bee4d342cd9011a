//! The HNSW graph, from usearch (chosen over hnsw_rs: see the note in Cargo.toml). Keys are
//! entry ids; distances are cosine distances (1 - cosine).

use usearch::{IndexOptions, MetricKind, ScalarKind};

use crate::segment::Segment;

pub(crate) type GraphError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) struct Graph {
    inner: usearch::Index,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("len", &self.len()).finish()
    }
}

fn options(dimensions: usize) -> IndexOptions {
    // usearch's defaults (connectivity 16, expansion 128 to add, 64 to search): recall@10 0.99
    // at 100k x 512 in bench/index.
    IndexOptions {
        dimensions,
        metric: MetricKind::Cos,
        quantization: ScalarKind::F32,
        connectivity: 0,
        expansion_add: 0,
        expansion_search: 0,
        multi: false,
    }
}

impl Graph {
    pub(crate) fn new(dimensions: usize, capacity: usize) -> Result<Graph, GraphError> {
        let inner = usearch::Index::new(&options(dimensions))?;
        inner.reserve_capacity_and_threads(capacity.max(16), threads())?;
        Ok(Graph { inner })
    }

    /// A graph over every vector of `segment`, built on all cores.
    pub(crate) fn build(segment: &Segment) -> Result<Graph, GraphError> {
        let graph = Graph::new(segment.dimensions, segment.entries.len())?;
        let n = segment.entries.len();
        let workers = threads().min(n.max(1));
        let results: Vec<Result<(), GraphError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let graph = &graph;
                    s.spawn(move || {
                        for i in (w..n).step_by(workers) {
                            graph.add(segment.entries[i].id, segment.vector(i))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a graph builder panicked".into()))).collect()
        });
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(graph)
    }

    pub(crate) fn from_bytes(dimensions: usize, bytes: &[u8]) -> Result<Graph, GraphError> {
        let inner = usearch::Index::new(&options(dimensions))?;
        inner.load_from_buffer(bytes)?;
        if inner.dimensions() != dimensions {
            return Err(format!("a {}-d graph in a {dimensions}-d index", inner.dimensions()).into());
        }
        Ok(Graph { inner })
    }

    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, GraphError> {
        let mut buf = vec![0u8; self.inner.serialized_length()];
        self.inner.save_to_buffer(&mut buf)?;
        Ok(buf)
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.size()
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.inner.contains(id)
    }

    pub(crate) fn reserve(&self, capacity: usize) -> Result<(), GraphError> {
        if capacity > self.inner.capacity() {
            self.inner.reserve_capacity_and_threads(capacity, threads())?;
        }
        Ok(())
    }

    pub(crate) fn add(&self, id: u64, vector: &[f32]) -> Result<(), GraphError> {
        Ok(self.inner.add(id, vector)?)
    }

    pub(crate) fn remove(&self, id: u64) -> Result<(), GraphError> {
        self.inner.remove(id)?;
        Ok(())
    }

    /// The `k` nearest ids with their cosine similarity, best first.
    pub(crate) fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>, GraphError> {
        let found = self.inner.search(query, k)?;
        let mut hits: Vec<(u64, f32)> =
            found.keys.into_iter().zip(found.distances).map(|(id, d)| (id, 1.0 - d)).collect();
        crate::vectors::top_k(&mut hits, k);
        Ok(hits)
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
