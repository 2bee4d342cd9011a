//! A k-NN classifier as one ONNX file: the embedding model's graph up to its embedding, then
//! the vote over the labelled vectors, held in the file as constants. Any ONNX engine runs it
//! (ONNX Runtime, tract, Triton) with nothing beside it.
//!
//! The vote, as strix-index's `Knn::scores`: unit query, cosine similarity to every labelled
//! vector (MatMul), the `k` best (TopK), each giving its class `max(similarity, 0) + floor`
//! (Gather of one-hot rows, weighted by a MatMul), shares of the total. Only ops whose meaning
//! has not changed since opset 11 are added, so the embedding graph keeps its own opset.

use std::collections::HashSet;
use std::path::Path;

use prost::Message;
use strix_zoo::{Artifact, DecoderSpec, LabelsSpec, ModelSpec, Task};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto};

use crate::graph::{int, value_info};
use crate::{ExportError, ExportOptions, Exported, GateReport};

/// The graph's output: each class's share of the vote, `[N, classes]`.
pub const SCORES: &str = "scores";
/// Oldest opset the vote's ops (TopK with K as an input) read as written here.
const MIN_OPSET: i64 = 11;

/// The labelled vectors and the vote's settings.
#[derive(Clone, Copy, Debug)]
pub struct Neighbours<'a> {
    /// Row-major unit vectors, `labels.len()` rows of `dimensions`.
    pub vectors: &'a [f32],
    pub dimensions: usize,
    pub labels: &'a [usize],
    pub classes: &'a [String],
    pub k: usize,
    /// Added to each voter's similarity.
    pub floor: f32,
}

/// Nodes and constants appended to the embedding graph, with names no exporter uses.
struct Appender {
    nodes: Vec<NodeProto>,
    constants: Vec<TensorProto>,
}

impl Appender {
    fn name(&self, what: &str) -> String {
        format!("strix_knn/{what}_{}", self.nodes.len() + self.constants.len())
    }

    fn constant(&mut self, what: &str, dims: &[usize], data_type: DataType, raw_data: Vec<u8>) -> String {
        let name = self.name(what);
        self.constants.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    fn floats(&mut self, what: &str, dims: &[usize], values: &[f32]) -> String {
        self.constant(what, dims, DataType::Float, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn int64s(&mut self, what: &str, values: &[i64]) -> String {
        self.constant(what, &[values.len()], DataType::Int64, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn node_outputs(
        &mut self,
        op: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        let name = self.name(&op.to_ascii_lowercase());
        let output: Vec<String> = (0..outputs).map(|i| format!("{name}:{i}")).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            name,
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        output
    }

    fn node(&mut self, op: &str, inputs: &[&str]) -> String {
        self.node_outputs(op, inputs, vec![], 1).remove(0)
    }
}

/// The embedding graph (`embed_onnx`, read up to `embedding_output`, else its first output)
/// followed by the vote; `metadata` joins the model's metadata.
pub fn knn_model(
    embed_onnx: &[u8],
    embedding_output: Option<&str>,
    n: &Neighbours<'_>,
    metadata: &[(String, String)],
) -> Result<ModelProto, ExportError> {
    let spec_err = |m: String| ExportError::Spec(format!("k-NN over the embedding model: {m}"));
    let rows = n.labels.len();
    if rows == 0 || n.vectors.len() != rows * n.dimensions {
        return Err(spec_err(format!(
            "{rows} labelled {}-d vectors do not fit {} floats",
            n.dimensions,
            n.vectors.len()
        )));
    }
    if let Some(l) = n.labels.iter().find(|&&l| l >= n.classes.len()) {
        return Err(spec_err(format!("label {l} of {} classes", n.classes.len())));
    }
    let mut model = ModelProto::decode(embed_onnx).map_err(|e| spec_err(format!("not an ONNX model: {e}")))?;
    let opset = model.opset_import.iter().find(|o| o.domain.is_empty()).map_or(1, |o| o.version);
    if opset < MIN_OPSET {
        return Err(spec_err(format!("its opset {opset} is older than {MIN_OPSET}")));
    }
    let graph = model.graph.as_mut().ok_or_else(|| spec_err("no graph".into()))?;
    let embedding = match embedding_output {
        Some(name) => name.to_string(),
        None => graph.output.first().map(|o| o.name.clone()).ok_or_else(|| spec_err("no output".into()))?,
    };
    prune_to(graph, &embedding).map_err(spec_err)?;

    let (d, c) = (n.dimensions, n.classes.len());
    let k = n.k.clamp(1, rows);
    let mut a = Appender { nodes: Vec::new(), constants: Vec::new() };
    // Unit query: x / max(|x|, tiny); the row sum as a MatMul with ones (ReduceSum's axes moved
    // from an attribute to an input at opset 13).
    let x = a.node_outputs("Flatten", &[&embedding], vec![int("axis", 1)], 1).remove(0);
    let squares = a.node("Mul", &[&x, &x]);
    let ones_d = a.floats("ones", &[d, 1], &vec![1.0; d]);
    let norm = a.node("MatMul", &[&squares, &ones_d]);
    let norm = a.node("Sqrt", &[&norm]);
    let tiny = a.floats("tiny", &[], &[1e-12]);
    let norm = a.node("Max", &[&norm, &tiny]);
    let unit = a.node("Div", &[&x, &norm]);
    // Similarities to every labelled vector, the k best.
    let mut transposed = vec![0f32; d * rows];
    for (r, row) in n.vectors.chunks_exact(d).enumerate() {
        for (i, v) in row.iter().enumerate() {
            transposed[i * rows + r] = *v;
        }
    }
    let vectors = a.floats("vectors", &[d, rows], &transposed);
    let similarities = a.node("MatMul", &[&unit, &vectors]);
    let kk = a.int64s("k", &[k as i64]);
    let top = a.node_outputs("TopK", &[&similarities, &kk], vec![int("axis", -1)], 2);
    // Votes: one-hot class rows of the k best, weighted by their similarity.
    let mut one_hot = vec![0f32; rows * c];
    for (r, &label) in n.labels.iter().enumerate() {
        one_hot[r * c + label] = 1.0;
    }
    let one_hot = a.floats("classes", &[rows, c], &one_hot);
    let votes = a.node_outputs("Gather", &[&one_hot, &top[1]], vec![int("axis", 0)], 1).remove(0);
    let weights = a.node("Relu", &[&top[0]]);
    let floor = a.floats("floor", &[], &[n.floor]);
    let weights = a.node("Add", &[&weights, &floor]);
    let row_shape = a.int64s("row", &[0, 1, -1]);
    let weights = a.node("Reshape", &[&weights, &row_shape]);
    let scores = a.node("MatMul", &[&weights, &votes]);
    let flat_shape = a.int64s("flat", &[0, -1]);
    let scores = a.node("Reshape", &[&scores, &flat_shape]);
    let ones_c = a.floats("ones", &[c, 1], &vec![1.0; c]);
    let total = a.node("MatMul", &[&scores, &ones_c]);
    let shares = a.node("Div", &[&scores, &total]);
    for node in &mut a.nodes {
        for name in node.output.iter_mut() {
            if *name == shares {
                *name = SCORES.into();
            }
        }
    }
    graph.node.extend(a.nodes);
    graph.initializer.extend(a.constants);
    graph.output = vec![value_info(SCORES, &[c])];
    model.metadata_props.retain(|p| !metadata.iter().any(|(k, _)| *k == p.key));
    model
        .metadata_props
        .extend(metadata.iter().map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() }));
    model.producer_name = "strix".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    Ok(model)
}

/// Keep only what `output` needs: later nodes (the embedding model's own classifier) and
/// their weights go.
fn prune_to(graph: &mut tract_onnx::pb::GraphProto, output: &str) -> Result<(), String> {
    let mut needed: HashSet<String> = HashSet::from([output.to_string()]);
    let mut keep = vec![false; graph.node.len()];
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(node.input.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    let produced = graph.node.iter().flat_map(|n| n.output.iter()).any(|o| o == output)
        || graph.input.iter().any(|i| i.name == output);
    if !produced {
        return Err(format!("no tensor named {output:?} in the graph"));
    }
    let mut flags = keep.into_iter();
    graph.node.retain(|_| flags.next().unwrap_or(false));
    graph.initializer.retain(|t| needed.contains(&t.name));
    graph.value_info.retain(|v| needed.contains(&v.name));
    graph.input.retain(|v| needed.contains(&v.name));
    Ok(())
}

/// The spec of a k-NN export: the embedding model's input and preprocessing, the vote's
/// shares as a classifier's probabilities.
pub fn knn_spec(
    name: &str,
    embedding: &ModelSpec,
    classes: &[String],
    onnx: &Path,
    summary: String,
) -> Result<ModelSpec, ExportError> {
    let (sha256, size) = strix_core::digest::sha256_file(onnx).map_err(ExportError::io(onnx))?;
    let spec = ModelSpec {
        name: name.to_string(),
        task: Task::Classify,
        summary,
        license: embedding.license.clone(),
        source: Some(format!("strix {} k-NN export over {}", env!("CARGO_PKG_VERSION"), embedding.name)),
        weights: Artifact { file: crate::ONNX_FILE.into(), sha256: Some(sha256), url: None, size: Some(size) },
        networks: Default::default(),
        labels: Some(LabelsSpec { file: None, sha256: None, url: None, names: classes.to_vec() }),
        input: embedding.input.clone(),
        preprocess: embedding.preprocess.clone(),
        decoder: DecoderSpec::Classify(strix_vision::ClassifyHead { softmax: false, output: Some(SCORES.into()) }),
        describe: None,
    };
    ModelSpec::from_toml(&spec.to_toml(), name).map_err(|e| ExportError::Spec(e.to_string()))
}

/// What the gate feeds the export and what it must answer: images `[n, c, h, w]` preprocessed
/// as the embedding model's spec says, and the vote computed in Rust on the embedding model's
/// vectors of the same images.
#[derive(Clone, Copy, Debug)]
pub struct GateInput<'a> {
    pub images: &'a [f32],
    pub shape: [usize; 4],
    pub reference: &'a [f32],
}

/// Write the k-NN export of `run_dir` into `dir`: the model gated against `gate`, then its spec
/// and gate report. On a gate failure nothing is left there.
pub fn write_knn(
    run_dir: &Path,
    dir: &Path,
    model: &ModelProto,
    gate: GateInput<'_>,
    options: &ExportOptions,
    spec: impl FnOnce(&Path) -> Result<ModelSpec, ExportError>,
) -> Result<Exported, ExportError> {
    let bytes = model.encode_to_vec();
    let (onnx, report) = crate::write_gated(dir, &bytes, |staging| {
        let report: GateReport =
            crate::gate::check(staging, gate.images, gate.shape, gate.reference, &options.engines, options.tolerance)?;
        crate::passed(report)
    })?;
    let spec = spec(&onnx)?;
    crate::write_files(run_dir, dir.to_path_buf(), onnx, spec, report)
}
