//! What an ONNX file holds, read from its protobuf without building a session: enough to
//! write a model spec for it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use strix_core::{DType, Dim, TensorInfo};
use tract_onnx::pb::{self, tensor_shape_proto::dimension, type_proto};
use tract_onnx::prelude::Framework;

use crate::RuntimeError;

/// Summary of an ONNX model file.
#[derive(Clone, Debug, Serialize)]
pub struct OnnxInfo {
    pub ir_version: i64,
    pub producer: String,
    /// Operator-set versions by domain (`""` is the default ONNX domain, shown as `ai.onnx`).
    pub opsets: BTreeMap<String, i64>,
    /// Graph inputs that are not initializers (the ones a caller feeds).
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// Number of nodes per operator type, subgraphs included.
    pub ops: BTreeMap<String, usize>,
    /// Weights: initializer tensors and `Constant` nodes (some exporters store weights that
    /// way), and their total element count.
    pub initializers: usize,
    pub parameters: u64,
    /// Free-form metadata the exporter stored (class names, strides...).
    pub metadata: BTreeMap<String, String>,
}

/// Read the ONNX file at `path`.
pub fn inspect(path: &Path) -> Result<OnnxInfo, RuntimeError> {
    if !path.is_file() {
        return Err(RuntimeError::ModelMissing { path: path.to_path_buf() });
    }
    let proto = tract_onnx::onnx().proto_model_for_path(path).map_err(|e| RuntimeError::Load {
        path: path.to_path_buf(),
        backend: crate::Backend::Tract,
        source: e.context("not a readable ONNX file").into(),
    })?;
    let graph = proto.graph.clone().unwrap_or_default();
    let initialized: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut ops = BTreeMap::new();
    count_ops(&graph, &mut ops);
    let constants: Vec<&pb::TensorProto> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .flat_map(|n| n.attribute.iter().filter_map(|a| a.t.as_ref()))
        .collect();
    let size = |t: &pb::TensorProto| t.dims.iter().product::<i64>().max(0) as u64;
    Ok(OnnxInfo {
        ir_version: proto.ir_version,
        producer: format!("{} {}", proto.producer_name, proto.producer_version).trim().to_string(),
        opsets: proto
            .opset_import
            .iter()
            .map(|o| (if o.domain.is_empty() { "ai.onnx".to_string() } else { o.domain.clone() }, o.version))
            .collect(),
        inputs: graph.input.iter().filter(|i| !initialized.contains(i.name.as_str())).map(describe).collect(),
        outputs: graph.output.iter().map(describe).collect(),
        ops,
        initializers: graph.initializer.len() + constants.len(),
        parameters: graph.initializer.iter().map(size).sum::<u64>() + constants.iter().map(|t| size(t)).sum::<u64>(),
        metadata: proto.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect(),
    })
}

fn count_ops(graph: &pb::GraphProto, ops: &mut BTreeMap<String, usize>) {
    for node in &graph.node {
        *ops.entry(node.op_type.clone()).or_insert(0) += 1;
        for attr in &node.attribute {
            if let Some(g) = &attr.g {
                count_ops(g, ops);
            }
        }
    }
}

fn describe(v: &pb::ValueInfoProto) -> TensorInfo {
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            let shape = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(dimension::Value::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                            Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                            _ => Dim::Symbolic("?".into()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (onnx_dtype(t.elem_type), shape)
        }
        _ => (DType::Other, vec![]),
    };
    TensorInfo { name: v.name.clone(), dtype, shape }
}

/// ONNX `TensorProto.DataType` codes.
fn onnx_dtype(code: i32) -> DType {
    match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        _ => DType::Other,
    }
}
