//! Tensors inside a graph read out as outputs: a classifier's pooled features become an
//! embedding without new weights, and int8 calibration reads every activation in one run.

use std::collections::HashSet;
use std::path::Path;

use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto::{self, Tensor as TensorType};
use tract_onnx::pb::{ModelProto, TypeProto, ValueInfoProto};

use crate::{Backend, RuntimeError};

/// `model` with float `tensors` added as outputs after its own (those already outputs or inputs
/// are left as they are: an output named like an input confuses engines).
pub fn with_outputs(model: &ModelProto, tensors: &[String]) -> ModelProto {
    let mut model = model.clone();
    if let Some(graph) = model.graph.as_mut() {
        let existing: HashSet<String> = graph.output.iter().chain(&graph.input).map(|o| o.name.clone()).collect();
        for name in tensors.iter().filter(|t| !existing.contains(*t)) {
            graph.output.push(ValueInfoProto {
                name: name.clone(),
                r#type: Some(TypeProto {
                    value: Some(type_proto::Value::TensorType(TensorType {
                        elem_type: DataType::Float as i32,
                        shape: None,
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    model
}

/// The model file `path` with `tensors` (each made by some node of its graph) added as
/// outputs, encoded; a name the graph does not make is refused by name.
pub(crate) fn file_with_outputs(path: &Path, tensors: &[String], backend: Backend) -> Result<Vec<u8>, RuntimeError> {
    let load_err = |source: crate::error::Cause| RuntimeError::Load { path: path.to_path_buf(), backend, source };
    if !path.is_file() {
        return Err(RuntimeError::ModelMissing { path: path.to_path_buf() });
    }
    let bytes = std::fs::read(path).map_err(|e| load_err(e.into()))?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| load_err(e.into()))?;
    let graph = model.graph.as_ref().ok_or_else(|| load_err("the file holds no graph".into()))?;
    for t in tensors {
        let made = graph.node.iter().any(|n| n.output.contains(t)) || graph.output.iter().any(|o| &o.name == t);
        if !made {
            return Err(load_err(format!("the graph has no tensor named {t:?} to read out").into()));
        }
    }
    Ok(with_outputs(&model, tensors).encode_to_vec())
}
