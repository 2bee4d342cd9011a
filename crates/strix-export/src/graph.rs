//! A small ONNX graph builder over the protobuf types: nodes, named weights, one input with a
//! symbolic batch dimension, one output.

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto::{self, Tensor as TensorType};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The opset the exporter writes: every op it uses is in the default domain at this version.
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13.
const IR_VERSION: i64 = 7;
/// Name of the symbolic batch dimension.
pub const BATCH: &str = "N";

#[derive(Debug, Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    outputs: usize,
}

impl Graph {
    /// A float weight named `name` (names are unique: the caller uses parameter paths).
    pub fn weight(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        self.initializers.push(TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.to_string()
    }

    /// A float scalar weight, created once per name.
    pub fn scalar(&mut self, name: &str, value: f32) -> String {
        if !self.initializers.iter().any(|t| t.name == name) {
            self.weight(name, &[], &[value]);
        }
        name.to_string()
    }

    /// An int64 constant (shapes, axes) named `name`, created once per name.
    pub fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        if !self.initializers.iter().any(|t| t.name == name) {
            self.initializers.push(TensorProto {
                name: name.to_string(),
                dims: vec![values.len() as i64],
                data_type: DataType::Int64 as i32,
                raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            });
        }
        name.to_string()
    }

    /// Add `op` reading `inputs`; returns the name of its one output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.outputs += 1;
        let output = format!("{}_{}", op.to_ascii_lowercase(), self.outputs);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op.to_string(),
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// The finished model: float input `input` of shape `[N, dims...]`, the node that made
    /// `last` renamed to `output`, `metadata` as the model's metadata properties.
    pub fn into_model(
        self,
        input: &str,
        input_dims: &[usize],
        last: &str,
        output: &str,
        output_dims: &[usize],
        metadata: &[(String, String)],
    ) -> ModelProto {
        self.into_model_outputs(
            input,
            input_dims,
            &[(last.to_string(), output.to_string(), output_dims.to_vec())],
            metadata,
        )
    }

    /// As [`Graph::into_model`] with several outputs: `(last node output, name, dims after N)`.
    pub fn into_model_outputs(
        mut self,
        input: &str,
        input_dims: &[usize],
        outputs: &[(String, String, Vec<usize>)],
        metadata: &[(String, String)],
    ) -> ModelProto {
        for node in &mut self.nodes {
            for name in node.output.iter_mut().chain(node.input.iter_mut()) {
                if let Some((_, out, _)) = outputs.iter().find(|(last, _, _)| last == name) {
                    *name = out.clone();
                }
            }
        }
        let graph = GraphProto {
            name: "strix".into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(input, input_dims)],
            output: outputs.iter().map(|(_, name, dims)| value_info(name, dims)).collect(),
            ..Default::default()
        };
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "strix".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() })
                .collect(),
            ..Default::default()
        }
    }
}

/// A float tensor `[N, dims...]`.
pub(crate) fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let batch = Dimension { value: Some(dimension::Value::DimParam(BATCH.into())), ..Default::default() };
    let fixed =
        dims.iter().map(|&d| Dimension { value: Some(dimension::Value::DimValue(d as i64)), ..Default::default() });
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorType {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim: std::iter::once(batch).chain(fixed).collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

pub fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: value, ..Default::default() }
}
