//! The QDQ rewrite of a float ONNX graph: which activation tensors get quantised ([`plan`]),
//! the calibration model that reports them ([`with_outputs`]), and the quantised graph
//! ([`quantize`]).
//!
//! The result is the QDQ form ONNX Runtime's own quantiser writes: every quantised activation
//! is followed by `QuantizeLinear -> DequantizeLinear` (uint8, asymmetric), every weight of a
//! `Conv` is int8 with one scale per output channel, `Gemm` / `MatMul` weights int8 with one
//! scale, biases int32 at the input scale times the weight scale. Engines that know the
//! pattern (ONNX Runtime) fuse it into integer kernels; others (tract) run it as written.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto::{self, Tensor as TensorType};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto, ValueInfoProto,
};

use strix_runtime::initializer::float_tensor;

use crate::OptimizeError;

/// The opset per-channel `DequantizeLinear` (its `axis`) needs.
pub const MIN_OPSET: i64 = 13;

/// Largest magnitude of a quantised weight: symmetric, so that zero is exact (as ONNX Runtime's
/// and TFLite's quantisers do).
const WEIGHT_MAX: f32 = 127.0;
/// Weights are stored as uint8 around this zero point, not as int8: ONNX Runtime multiplies
/// uint8 activations by int8 weights with AVX2's `vpmaddubsw`, which saturates a pair's sum at
/// 32767 on CPUs without VNNI (top-1 agreement on street frames fell to 60% on an AVX2-only EPYC),
/// while uint8 x uint8 goes through exact 16-bit products on every CPU.
const WEIGHT_ZERO: i32 = 128;

/// The observed range of one activation tensor over the calibration images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: f32,
    pub hi: f32,
}

impl Range {
    /// uint8 scale and zero point covering the range, with 0.0 exactly representable (zero
    /// padding and ReLU outputs must stay exact).
    pub fn uint8_params(self) -> (f32, u8) {
        let lo = self.lo.min(0.0);
        let hi = self.hi.max(0.0);
        // A tensor that never moved (a blank calibration image) still needs a usable scale.
        let scale = ((hi - lo) / 255.0).max(1e-8);
        let zero_point = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        (scale, zero_point)
    }
}

/// Which inputs of a quantised op are activations (the rest are weights or settings).
fn activation_inputs(node: &NodeProto) -> Option<Vec<usize>> {
    match node.op_type.as_str() {
        "Conv" | "Gemm" | "MatMul" => Some(vec![0]),
        "Add" => Some(vec![0, 1]),
        "GlobalAveragePool" | "AveragePool" | "MaxPool" | "LeakyRelu" | "Pad" | "Resize" => Some(vec![0]),
        "Concat" => Some((0..node.input.len()).collect()),
        _ => None,
    }
}

/// Ops with a weight (input 1) and an optional bias (input 2).
fn has_weights(op: &str) -> bool {
    matches!(op, "Conv" | "Gemm" | "MatMul")
}

/// Ops whose outputs are float when their first input is: how the plan tells float tensors
/// from the int64 shapes and indices a graph also carries.
const FLOAT_KEEPING: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Conv",
    "Div",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "Relu",
    "Reshape",
    "Resize",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// What [`plan`] found to quantise.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Float activation tensors to quantise, in graph order.
    pub tensors: Vec<String>,
    /// Indices of the nodes whose weights become int8 (their activation input is quantised).
    pub weight_nodes: Vec<usize>,
}

/// The graph's tensors, consumers and types, as the rewrite needs them.
struct Facts<'a> {
    initializers: HashMap<&'a str, &'a TensorProto>,
    consumers: HashMap<&'a str, Vec<usize>>,
    outputs: HashSet<&'a str>,
    floats: HashSet<&'a str>,
}

impl<'a> Facts<'a> {
    fn new(graph: &'a GraphProto) -> Facts<'a> {
        let initializers: HashMap<&str, &TensorProto> =
            graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for input in node.input.iter().filter(|s| !s.is_empty()) {
                consumers.entry(input.as_str()).or_default().push(i);
            }
        }
        let outputs = graph.output.iter().map(|o| o.name.as_str()).collect();
        let mut floats: HashSet<&str> = graph.input.iter().filter(|v| is_float(v)).map(|v| v.name.as_str()).collect();
        floats.extend(
            graph.initializer.iter().filter(|t| t.data_type == DataType::Float as i32).map(|t| t.name.as_str()),
        );
        for node in &graph.node {
            let float_in = node.input.first().is_some_and(|i| floats.contains(i.as_str()));
            let cast_to_float = node.op_type == "Cast"
                && node.attribute.iter().any(|a| a.name == "to" && a.i == DataType::Float as i64);
            if (float_in && FLOAT_KEEPING.contains(&node.op_type.as_str())) || cast_to_float {
                floats.extend(node.output.iter().map(String::as_str));
            }
        }
        Facts { initializers, consumers, outputs, floats }
    }

    /// A float tensor computed by the graph (not a weight), so worth quantising.
    fn is_activation(&self, name: &str) -> bool {
        !name.is_empty() && self.floats.contains(name) && !self.initializers.contains_key(name)
    }

    fn float_initializer(&self, name: &str) -> Option<&'a TensorProto> {
        self.initializers.get(name).copied().filter(|t| t.data_type == DataType::Float as i32)
    }

    /// Where the quantisation of `output` goes: after a ReLU or Clip that is its only
    /// consumer (the engine folds the activation into the integer op and the range is the
    /// activation's), else on `output` itself. `None` for graph outputs, which stay float.
    fn quantised_output(&self, graph: &'a GraphProto, output: &'a str) -> Option<&'a str> {
        if self.outputs.contains(output) {
            return None;
        }
        if let Some([only]) = self.consumers.get(output).map(Vec::as_slice) {
            let next = &graph.node[*only];
            if matches!(next.op_type.as_str(), "Relu" | "Clip") && next.input.first().is_some_and(|i| i == output) {
                let after = next.output[0].as_str();
                return (!self.outputs.contains(after)).then_some(after);
            }
        }
        Some(output)
    }
}

fn is_float(v: &ValueInfoProto) -> bool {
    matches!(
        v.r#type.as_ref().and_then(|t| t.value.as_ref()),
        Some(type_proto::Value::TensorType(TensorType { elem_type, .. })) if *elem_type == DataType::Float as i32
    )
}

/// The default-domain opset of `model`.
pub fn opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(0)
}

/// Which tensors of `model` to quantise. Refuses models it cannot rewrite.
pub fn plan(model: &ModelProto) -> Result<Plan, OptimizeError> {
    if opset(model) < MIN_OPSET {
        return Err(OptimizeError::Unsupported(format!(
            "the model's opset is {}; per-channel quantisation needs opset {MIN_OPSET} or newer (re-export it at opset {MIN_OPSET})",
            opset(model)
        )));
    }
    let graph = model.graph.as_ref().ok_or_else(|| OptimizeError::Unsupported("the model has no graph".into()))?;
    if graph.node.iter().any(|n| n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear") {
        return Err(OptimizeError::Unsupported("the model is quantised already".into()));
    }
    let facts = Facts::new(graph);
    let mut plan = Plan::default();
    let mut seen = HashSet::new();
    let mut add = |name: &str, plan: &mut Plan| {
        if seen.insert(name.to_string()) {
            plan.tensors.push(name.to_string());
        }
    };
    for (i, node) in graph.node.iter().enumerate() {
        let Some(inputs) = activation_inputs(node) else { continue };
        if has_weights(&node.op_type) {
            // Only constant weights are quantised; a product of two activations stays float.
            if node.input.get(1).and_then(|w| facts.float_initializer(w)).is_none() || !weights_supported(node) {
                continue;
            }
        }
        let acts: Vec<&str> = inputs
            .iter()
            .filter_map(|&k| node.input.get(k))
            .map(String::as_str)
            .filter(|n| facts.is_activation(n))
            .collect();
        if acts.is_empty() {
            continue;
        }
        for name in &acts {
            add(name, &mut plan);
        }
        if has_weights(&node.op_type) && acts.len() == 1 && acts[0] == node.input[0] {
            plan.weight_nodes.push(i);
        }
        for output in node.output.iter().filter(|o| facts.floats.contains(o.as_str())) {
            if let Some(target) = facts.quantised_output(graph, output) {
                add(target, &mut plan);
            }
        }
    }
    if plan.weight_nodes.is_empty() {
        return Err(OptimizeError::Unsupported(
            "no Conv, Gemm or MatMul with constant weights: nothing worth quantising".into(),
        ));
    }
    Ok(plan)
}

/// Gemm in the form the rewrite handles: `A x B (+ C)`, A not transposed, alpha and beta 1.
fn weights_supported(node: &NodeProto) -> bool {
    if node.op_type != "Gemm" {
        return true;
    }
    node.attribute.iter().all(|a| match a.name.as_str() {
        "transA" => a.i == 0,
        "alpha" | "beta" => a.f == 1.0,
        _ => true,
    })
}

/// `model` with each zero `Pad` that feeds only a `Conv` (or `-inf` padding that feeds only a
/// `MaxPool`) folded into that op's `pads`: the same function, one op fewer. TensorFlow exports
/// pad explicitly, and a `Pad` between two quantised ops runs in float, between a dequantise and
/// a quantise, where the fused op would have stayed integer.
pub fn fold_pads(model: &ModelProto) -> ModelProto {
    let mut model = model.clone();
    let Some(graph) = model.graph.as_mut() else { return model };
    let folds: Vec<(usize, usize, [i64; 4])> = {
        let facts = Facts::new(graph);
        graph
            .node
            .iter()
            .enumerate()
            .filter_map(|(i, pad)| {
                let spatial = foldable_pad(&facts, pad)?;
                let [only] = facts.consumers.get(pad.output[0].as_str())?.as_slice() else { return None };
                let next = &graph.node[*only];
                let value = pad.input.get(2).filter(|v| !v.is_empty()).map(|v| scalar(&facts, v));
                let fits = match next.op_type.as_str() {
                    "Conv" => value.is_none_or(|v| v == Some(0.0)),
                    "MaxPool" => value == Some(Some(f32::NEG_INFINITY)),
                    _ => false,
                };
                let explicit = next.attribute.iter().all(|a| match a.name.as_str() {
                    "auto_pad" => a.s.is_empty() || a.s == b"NOTSET",
                    "pads" => a.ints.len() == 4,
                    _ => true,
                });
                (fits && explicit && next.input[0] == pad.output[0] && !facts.outputs.contains(pad.output[0].as_str()))
                    .then_some((i, *only, spatial))
            })
            .collect()
    };
    let mut removed = HashSet::new();
    for (pad, next, [top, left, bottom, right]) in folds {
        let source = graph.node[pad].input[0].clone();
        let n = &mut graph.node[next];
        n.input[0] = source;
        let pads = match n.attribute.iter_mut().find(|a| a.name == "pads") {
            Some(a) => a,
            None => {
                n.attribute.push(AttributeProto {
                    name: "pads".into(),
                    r#type: AttributeType::Ints as i32,
                    ints: vec![0; 4],
                    ..Default::default()
                });
                n.attribute.last_mut().expect("just pushed")
            }
        };
        for (k, add) in [top, left, bottom, right].into_iter().enumerate() {
            pads.ints[k] += add;
        }
        removed.insert(pad);
    }
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes.into_iter().enumerate().filter(|(i, _)| !removed.contains(i)).map(|(_, n)| n).collect();
    drop_unused_initializers(graph);
    model
}

/// The spatial pads `[top, left, bottom, right]` of a constant-mode 4-D `Pad` whose pads are
/// a constant and leave batch and channels alone.
fn foldable_pad(facts: &Facts<'_>, pad: &NodeProto) -> Option<[i64; 4]> {
    if pad.op_type != "Pad" {
        return None;
    }
    let mode = pad.attribute.iter().find(|a| a.name == "mode").map(|a| a.s.as_slice());
    if mode.is_some_and(|m| m != b"constant") || pad.input.len() > 3 {
        return None;
    }
    let t = facts.initializers.get(pad.input.get(1)?.as_str())?;
    let pads: Vec<i64> = if t.raw_data.is_empty() {
        t.int64_data.clone()
    } else {
        t.raw_data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
    };
    match pads.as_slice() {
        [0, 0, top, left, 0, 0, bottom, right] if [top, left, bottom, right].iter().all(|p| **p >= 0) => {
            Some([*top, *left, *bottom, *right])
        }
        _ => None,
    }
}

/// The value of a one-element float initializer (`None`: not one).
fn scalar(facts: &Facts<'_>, name: &str) -> Option<f32> {
    let data = float_data(facts.float_initializer(name)?).ok()?;
    (data.len() == 1).then(|| data[0])
}

/// `model` with `tensors` added as outputs, so one run reports them all.
pub use strix_runtime::outputs::with_outputs;

/// What [`quantize`] did, for the report.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Rewrite {
    /// Activation tensors with a quantise / dequantise pair.
    pub activations: usize,
    /// Nodes whose weights became int8.
    pub weight_nodes: usize,
    /// Weight values now stored as int8.
    pub weights: usize,
}

/// The float data of an initializer, by the one reader Strix has ([`float_tensor`]).
pub fn float_data(t: &TensorProto) -> Result<Vec<f32>, OptimizeError> {
    Ok(float_tensor(t)?.data)
}

fn initializer(name: String, dims: Vec<i64>, data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto { name, dims, data_type: data_type as i32, raw_data, ..Default::default() }
}

fn node(op: &str, name: String, inputs: Vec<String>, output: String, axis: Option<i64>) -> NodeProto {
    let attribute = axis
        .map(|i| AttributeProto { name: "axis".into(), r#type: AttributeType::Int as i32, i, ..Default::default() })
        .into_iter()
        .collect();
    NodeProto { op_type: op.into(), name, input: inputs, output: vec![output], attribute, ..Default::default() }
}

/// The quantised graph: `ranges` must hold every tensor of `plan`.
pub fn quantize(
    model: &ModelProto,
    plan: &Plan,
    ranges: &HashMap<String, Range>,
) -> Result<(ModelProto, Rewrite), OptimizeError> {
    let mut out = model.clone();
    let graph = model.graph.as_ref().ok_or_else(|| OptimizeError::Unsupported("the model has no graph".into()))?;
    let facts = Facts::new(graph);
    let mut rewrite = Rewrite::default();
    let mut params: HashMap<&str, (f32, u8)> = HashMap::new();
    for name in &plan.tensors {
        let range =
            ranges.get(name).ok_or_else(|| OptimizeError::Calibration(format!("no range for tensor {name}")))?;
        params.insert(name.as_str(), range.uint8_params());
    }
    let mut initializers = Vec::new();
    let qdq = |name: &str, nodes: &mut Vec<NodeProto>, initializers: &mut Vec<TensorProto>| {
        let (scale, zero_point) = params[name];
        let (s, z) = (format!("{name}/scale"), format!("{name}/zero_point"));
        initializers.push(initializer(s.clone(), vec![], DataType::Float, scale.to_le_bytes().to_vec()));
        initializers.push(initializer(z.clone(), vec![], DataType::Uint8, vec![zero_point]));
        let q = format!("{name}/quantized");
        nodes.push(node("QuantizeLinear", q.clone(), vec![name.into(), s.clone(), z.clone()], q.clone(), None));
        nodes.push(node("DequantizeLinear", format!("{name}/dequantized"), vec![q, s, z], dequantized(name), None));
    };
    let quantised: HashSet<&str> = plan.tensors.iter().map(String::as_str).collect();
    let weight_nodes: HashSet<usize> = plan.weight_nodes.iter().copied().collect();
    let mut nodes = Vec::with_capacity(graph.node.len() * 2);
    for input in graph.input.iter().filter(|i| quantised.contains(i.name.as_str())) {
        qdq(&input.name, &mut nodes, &mut initializers);
        rewrite.activations += 1;
    }
    for (i, original) in graph.node.iter().enumerate() {
        let mut n = original.clone();
        for input in n.input.iter_mut().filter(|s| quantised.contains(s.as_str())) {
            *input = dequantized(input);
        }
        if weight_nodes.contains(&i) {
            let input_scale = params[original.input[0].as_str()].0;
            rewrite.weights +=
                quantize_weights(&facts, original, i, input_scale, &mut n, &mut nodes, &mut initializers)?;
            rewrite.weight_nodes += 1;
        }
        nodes.push(n);
        for output in original.output.iter().filter(|o| quantised.contains(o.as_str())) {
            qdq(output, &mut nodes, &mut initializers);
            rewrite.activations += 1;
        }
    }
    let g = out.graph.as_mut().expect("checked above");
    g.node = nodes;
    g.initializer.extend(initializers);
    drop_unused_initializers(g);
    out.metadata_props.push(StringStringEntryProto {
        key: "strix.quantization".into(),
        value: "int8 QDQ: uint8 activations, int8 per-channel Conv weights".into(),
    });
    Ok((out, rewrite))
}

fn dequantized(name: &str) -> String {
    format!("{name}/dequantized")
}

/// Replace the float weight (and bias) of weight node `i` by int8 (int32) initializers and
/// the `DequantizeLinear` nodes that read them; returns how many weights were quantised.
fn quantize_weights(
    facts: &Facts<'_>,
    original: &NodeProto,
    i: usize,
    input_scale: f32,
    n: &mut NodeProto,
    nodes: &mut Vec<NodeProto>,
    initializers: &mut Vec<TensorProto>,
) -> Result<usize, OptimizeError> {
    let w = facts.float_initializer(&original.input[1]).expect("the plan checked the weight");
    let data = float_data(w)?;
    // Conv: one scale per output channel (axis 0). Gemm and MatMul: one scale.
    let channels = if original.op_type == "Conv" { w.dims.first().copied().unwrap_or(1).max(1) as usize } else { 1 };
    if data.is_empty() || data.len() % channels != 0 {
        return Err(OptimizeError::Unsupported(format!(
            "weight {} has {} values for {channels} channels",
            w.name,
            data.len()
        )));
    }
    let per = data.len() / channels;
    let scales: Vec<f32> = data
        .chunks_exact(per)
        .map(|c| {
            let max = c.iter().fold(0f32, |m, v| m.max(v.abs()));
            if max > 0.0 { max / WEIGHT_MAX } else { 1.0 }
        })
        .collect();
    let q: Vec<u8> = data
        .chunks_exact(per)
        .zip(&scales)
        .flat_map(|(c, s)| {
            c.iter().map(move |v| ((v / s).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i32 + WEIGHT_ZERO) as u8)
        })
        .collect();
    let axis = (channels > 1).then_some(0);
    let scale_dims = if channels > 1 { vec![channels as i64] } else { vec![] };
    let base = format!("{}/{i}", w.name);
    let (wq, ws, wz) = (format!("{base}/quantized"), format!("{base}/scale"), format!("{base}/zero_point"));
    initializers.push(initializer(wq.clone(), w.dims.clone(), DataType::Uint8, q));
    initializers.push(initializer(ws.clone(), scale_dims.clone(), DataType::Float, f32_bytes(&scales)));
    initializers.push(initializer(wz.clone(), scale_dims.clone(), DataType::Uint8, vec![WEIGHT_ZERO as u8; channels]));
    let wd = format!("{base}/dequantized");
    nodes.push(node("DequantizeLinear", wd.clone(), vec![wq, ws, wz], wd.clone(), axis));
    n.input[1] = wd;
    if let Some(b) = original.input.get(2).filter(|b| !b.is_empty()).and_then(|b| facts.float_initializer(b)) {
        let bias = float_data(b)?;
        if channels > 1 && bias.len() != channels {
            return Err(OptimizeError::Unsupported(format!(
                "bias {} has {} values for {channels} channels",
                b.name,
                bias.len()
            )));
        }
        let bias_scales: Vec<f32> = scales.iter().map(|s| (s * input_scale).max(1e-12)).collect();
        let bq: Vec<u8> = bias
            .iter()
            .enumerate()
            .flat_map(|(k, v)| {
                let s = bias_scales[if channels > 1 { k } else { 0 }];
                ((v / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32).to_le_bytes()
            })
            .collect();
        let base = format!("{}/{i}", b.name);
        let (bqn, bs, bz) = (format!("{base}/quantized"), format!("{base}/scale"), format!("{base}/zero_point"));
        initializers.push(initializer(bqn.clone(), b.dims.clone(), DataType::Int32, bq));
        initializers.push(initializer(bs.clone(), scale_dims.clone(), DataType::Float, f32_bytes(&bias_scales)));
        initializers.push(initializer(bz.clone(), scale_dims, DataType::Int32, vec![0; channels * 4]));
        let bd = format!("{base}/dequantized");
        nodes.push(node("DequantizeLinear", bd.clone(), vec![bqn, bs, bz], bd.clone(), axis));
        n.input[2] = bd;
    }
    Ok(data.len())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Float weights the quantised graph no longer reads are left out of the file.
fn drop_unused_initializers(graph: &mut GraphProto) {
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    let dropped: HashSet<String> =
        graph.initializer.iter().filter(|t| !used.contains(&t.name)).map(|t| t.name.clone()).collect();
    graph.initializer.retain(|t| !dropped.contains(&t.name));
    // Old exporters list weights as graph inputs too: a dropped weight must not become an input.
    graph.input.retain(|i| !dropped.contains(&i.name));
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use strix_core::Tensor;
    use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
    use tract_onnx::pb::{OperatorSetIdProto, TensorShapeProto, TypeProto};

    use super::*;

    fn weight(name: &str, dims: &[i64], seed: u32) -> TensorProto {
        let n: i64 = dims.iter().product();
        // Deterministic values in [-1, 1) of varied size per channel.
        let data: Vec<f32> =
            (0..n as u32).map(|i| ((i * 7919 + seed * 104_729) % 2000) as f32 / 1000.0 - 1.0).collect();
        initializer(name.into(), dims.to_vec(), DataType::Float, f32_bytes(&data))
    }

    fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&d| Dimension { value: Some(dimension::Value::DimValue(d)), ..Default::default() })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(TensorType {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn op(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
    }

    /// x -> Conv -> Clip(0, 6) -> Add(itself) -> GlobalAveragePool -> Flatten -> Gemm -> logits.
    fn tiny_model(opset: i64) -> ModelProto {
        let mut init = vec![weight("w", &[3, 2, 3, 3], 1), weight("b", &[3], 2), weight("fc_w", &[4, 3], 3)];
        init.push(weight("fc_b", &[4], 4));
        init.push(initializer("lo".into(), vec![], DataType::Float, 0f32.to_le_bytes().to_vec()));
        init.push(initializer("hi".into(), vec![], DataType::Float, 6f32.to_le_bytes().to_vec()));
        let trans_b =
            AttributeProto { name: "transB".into(), r#type: AttributeType::Int as i32, i: 1, ..Default::default() };
        let nodes = vec![
            op("Conv", &["x", "w", "b"], "conv", vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])]),
            op("Clip", &["conv", "lo", "hi"], "clip", vec![]),
            op("Add", &["clip", "clip"], "add", vec![]),
            op("GlobalAveragePool", &["add"], "gap", vec![]),
            op("Flatten", &["gap"], "flat", vec![]),
            op("Gemm", &["flat", "fc_w", "fc_b"], "logits", vec![trans_b]),
        ];
        ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
            graph: Some(GraphProto {
                node: nodes,
                initializer: init,
                input: vec![value("x", &[1, 2, 6, 6])],
                output: vec![value("logits", &[1, 4])],
                name: "tiny".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn input(seed: u32) -> Tensor {
        let data = (0..72u32).map(|i| ((i * 31 + seed * 17) % 97) as f32 / 24.0 - 1.5).collect();
        Tensor::from_f32(vec![1, 2, 6, 6], data).unwrap()
    }

    #[test]
    fn the_plan_quantises_op_inputs_and_puts_a_clip_inside_the_conv() {
        let plan = plan(&tiny_model(13)).unwrap();
        assert_eq!(plan.tensors, ["x", "clip", "add", "gap", "flat"]);
        assert_eq!(plan.weight_nodes, [0, 5]);
        let old = plan_error(&tiny_model(11));
        assert!(old.contains("opset is 11") && old.contains("opset 13"), "{old}");
    }

    fn plan_error(model: &ModelProto) -> String {
        plan(model).unwrap_err().to_string()
    }

    #[test]
    fn the_quantised_graph_runs_and_stays_close_to_the_float_one() {
        let runtime = strix_runtime::open(strix_runtime::Backend::Tract, &Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(13);
        let plan = plan(&model).unwrap();
        let inputs: Vec<Tensor> = (0..8).map(input).collect();
        let ranges = crate::calibrate::ranges(
            runtime.as_ref(),
            &model,
            &plan,
            &inputs,
            crate::Method::MinMax,
            dir.path(),
            &strix_core::NoProgress,
        )
        .unwrap();
        assert_eq!(ranges["clip"].lo, 0.0);
        assert!(ranges["clip"].hi <= 6.0 && ranges["x"].lo < -1.0, "{ranges:?}");
        let (q, rewrite) = quantize(&model, &plan, &ranges).unwrap();
        assert_eq!(rewrite, Rewrite { activations: 5, weight_nodes: 2, weights: 3 * 2 * 9 + 12 });
        let g = q.graph.as_ref().unwrap();
        // The float weights are gone; the 8-bit ones (uint8 around 128) carry one scale per
        // output channel.
        assert!(!g.initializer.iter().any(|t| t.name == "w" || t.name == "fc_w"));
        let w = g.initializer.iter().find(|t| t.name == "w/0/quantized").unwrap();
        assert_eq!((w.data_type, w.raw_data.len()), (DataType::Uint8 as i32, 54));
        assert!(w.raw_data.iter().all(|&v| v >= 1), "symmetric: 128 +- 127");
        let zero = g.initializer.iter().find(|t| t.name == "w/0/zero_point").unwrap();
        assert_eq!((zero.data_type, zero.raw_data.as_slice()), (DataType::Uint8 as i32, &[128u8, 128, 128][..]));
        assert_eq!(g.initializer.iter().find(|t| t.name == "w/0/scale").unwrap().dims, [3]);
        let float_file = dir.path().join("float.onnx");
        let int8_file = dir.path().join("int8.onnx");
        std::fs::write(&float_file, model.encode_to_vec()).unwrap();
        std::fs::write(&int8_file, q.encode_to_vec()).unwrap();
        let float = runtime.load(&float_file).unwrap();
        let int8 = runtime.load(&int8_file).unwrap();
        for seed in [0, 3, 11] {
            let a = float.run(&[input(seed)]).unwrap()[0].to_f32_vec();
            let b = int8.run(&[input(seed)]).unwrap()[0].to_f32_vec();
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            // uint8 activations and int8 weights: about 1% of the output's scale.
            assert!(diff < 0.03 * scale && diff > 0.0, "seed {seed}: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_zero_pad_before_a_conv_is_folded_into_its_pads_and_computes_the_same() {
        let mut model = tiny_model(13);
        let g = model.graph.as_mut().unwrap();
        let pads = [0i64, 0, 1, 2, 0, 0, 0, 1];
        g.initializer.push(initializer(
            "pads".into(),
            vec![8],
            DataType::Int64,
            pads.iter().flat_map(|p| p.to_le_bytes()).collect(),
        ));
        g.node.insert(0, op("Pad", &["x", "pads"], "padded", vec![]));
        g.node[1].input[0] = "padded".into();
        let folded = fold_pads(&model);
        let fg = folded.graph.as_ref().unwrap();
        assert_eq!(fg.node.len(), 6, "the Pad is gone");
        assert_eq!(fg.node[0].input[0], "x");
        let conv_pads = fg.node[0].attribute.iter().find(|a| a.name == "pads").unwrap();
        assert_eq!(conv_pads.ints, [2, 3, 1, 2], "top/left/bottom/right added to the Conv's own 1s");
        assert!(!fg.initializer.iter().any(|t| t.name == "pads"));
        let runtime = strix_runtime::open(strix_runtime::Backend::Tract, &Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = |m: &ModelProto, name: &str| {
            let file = dir.path().join(name);
            std::fs::write(&file, m.encode_to_vec()).unwrap();
            runtime.load(&file).unwrap().run(&[input(5)]).unwrap()[0].to_f32_vec()
        };
        let (a, b) = (run(&model, "padded.onnx"), run(&folded, "folded.onnx"));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5), "{a:?} vs {b:?}");
        // A reflecting pad is not a zero pad: left alone.
        model.graph.as_mut().unwrap().node[0].attribute.push(AttributeProto {
            name: "mode".into(),
            r#type: AttributeType::String as i32,
            s: b"reflect".to_vec(),
            ..Default::default()
        });
        assert_eq!(fold_pads(&model).graph.unwrap().node.len(), 7);
    }

    #[test]
    fn a_model_with_nothing_to_quantise_or_quantised_already_is_refused() {
        let mut model = tiny_model(13);
        let g = model.graph.as_mut().unwrap();
        g.node.retain(|n| n.op_type != "Conv" && n.op_type != "Gemm");
        assert!(plan_error(&model).contains("nothing worth quantising"));
        let twice = {
            let model = tiny_model(13);
            let p = plan(&model).unwrap();
            let ranges = p.tensors.iter().map(|t| (t.clone(), Range { lo: -1.0, hi: 1.0 })).collect();
            quantize(&model, &p, &ranges).unwrap().0
        };
        assert!(plan_error(&twice).contains("quantised already"));
    }
}
