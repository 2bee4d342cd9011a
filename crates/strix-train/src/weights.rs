//! Named pretrained tensors (safetensors with PyTorch names, or the zoo's inference ONNX of
//! EfficientNet-Lite0) and the one place where layers get their parameters: from those tensors
//! when given, from a seeded random init otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use strix_runtime::initializer::float_tensor;

use crate::TrainError;

/// Every float tensor of a weights file, by PyTorch name.
#[derive(Debug)]
pub struct Weights {
    pub path: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// The batch norms were folded into the convolutions (an inference export): each stands
    /// here as a plain per-channel bias (scale 1, mean 0, variance `1 - eps`), and its
    /// statistics must be measured on real images ([`crate::layers::restat`]) before training
    /// with batch statistics can start from what the network computed.
    pub folded: bool,
}

impl Weights {
    pub(crate) fn open_safetensors(path: &Path) -> Result<Weights, TrainError> {
        let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
        let bad = |reason: String| TrainError::Weights { path: path.into(), reason };
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => {
                    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
                }
                safetensors::Dtype::F64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                    .collect(),
                // Integer buffers (BN's num_batches_tracked) carry no weights.
                _ => continue,
            };
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        Ok(Weights { path: path.into(), tensors, folded: false })
    }

    /// An inference ONNX whose `Conv` nodes, in graph order, are `layers` (`(conv, batch
    /// norm)` names) with each batch norm folded into its conv, and whose `Gemm`, if any, is
    /// the linear layer `fc`.
    pub(crate) fn open_folded_onnx(
        path: &Path,
        layers: &[(String, String)],
        fc: &str,
        epsilon: f64,
    ) -> Result<Weights, TrainError> {
        use prost::Message;
        let bad = |reason: String| TrainError::Weights { path: path.into(), reason };
        let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
        let model =
            tract_onnx::pb::ModelProto::decode(bytes.as_slice()).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
        let graph = model.graph.ok_or_else(|| bad("the ONNX model has no graph".into()))?;
        let inits: HashMap<&str, &tract_onnx::pb::TensorProto> =
            graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let init = |name: &str| -> Result<(Vec<usize>, Vec<f32>), TrainError> {
            let t = inits.get(name).ok_or_else(|| bad(format!("'{name}' is not an initializer")))?;
            float_tensor(t).map(|t| (t.shape, t.data)).map_err(|e| bad(e.to_string()))
        };
        let convs: Vec<_> = graph.node.iter().filter(|n| n.op_type == "Conv").collect();
        if convs.len() != layers.len() {
            return Err(bad(format!(
                "{} convolutions where EfficientNet-Lite0 has {}: not the zoo's efficientnet_lite0",
                convs.len(),
                layers.len()
            )));
        }
        let mut tensors = HashMap::new();
        for (node, (conv, bn)) in convs.iter().zip(layers) {
            let weight = init(node.input.get(1).map_or("", String::as_str))?;
            let c_out = weight.0.first().copied().unwrap_or(0);
            let bias = match node.input.get(2) {
                Some(b) => init(b)?,
                None => (vec![c_out], vec![0.0; c_out]),
            };
            tensors.insert(format!("{conv}.weight"), weight);
            tensors.insert(format!("{bn}.bias"), bias);
            tensors.insert(format!("{bn}.weight"), (vec![c_out], vec![1.0; c_out]));
            tensors.insert(format!("{bn}.running_mean"), (vec![c_out], vec![0.0; c_out]));
            tensors.insert(format!("{bn}.running_var"), (vec![c_out], vec![(1.0 - epsilon) as f32; c_out]));
        }
        if let Some(gemm) = graph.node.iter().find(|n| n.op_type == "Gemm") {
            let (shape, data) = init(gemm.input.get(1).map_or("", String::as_str))?;
            let trans_b = gemm.attribute.iter().any(|a| a.name == "transB" && a.i == 1);
            // Stored as PyTorch's `[out, in]`.
            let weight = match (trans_b, shape.as_slice()) {
                (true, _) => (shape, data),
                (false, &[d_in, d_out]) => {
                    let t: Vec<f32> = (0..d_out * d_in).map(|k| data[(k % d_in) * d_out + k / d_in]).collect();
                    (vec![d_out, d_in], t)
                }
                (false, s) => return Err(bad(format!("Gemm weight of shape {s:?}"))),
            };
            tensors.insert(format!("{fc}.weight"), weight);
            if let Some(b) = gemm.input.get(2) {
                tensors.insert(format!("{fc}.bias"), init(b)?);
            }
        }
        Ok(Weights { path: path.into(), tensors, folded: true })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.0.as_slice())
    }

    /// Tensor `name`, which must have exactly `shape`.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>, TrainError> {
        let bad = |reason: String| TrainError::Weights { path: self.path.clone(), reason };
        let (s, data) = self.tensors.get(name).ok_or_else(|| bad(format!("no tensor '{name}'")))?;
        if s.as_slice() != shape {
            return Err(bad(format!("tensor '{name}' has shape {s:?}, the model needs {shape:?}")));
        }
        Ok(Tensor::from_data(TensorData::new(data.clone(), shape), device))
    }
}

/// Where layers take their parameters from while a model is built.
pub struct Init<'a> {
    pub weights: Option<&'a Weights>,
    pub device: Device,
}

impl Init<'_> {
    /// Random init on `device` (seed the device first for a repeatable model).
    pub fn random(device: &Device) -> Init<'static> {
        Init { weights: None, device: device.clone() }
    }

    /// The same device, random parameters: for a new head on a pretrained body.
    pub fn fresh(&self) -> Init<'static> {
        Init { weights: None, device: self.device.clone() }
    }

    /// Conv weight `[out, in/groups, k, k]`: He-normal (fan-out) as torchvision when random.
    pub fn conv_weight(&self, name: &str, shape: [usize; 4]) -> Result<Param<Tensor<4>>, TrainError> {
        let t = match self.weights {
            Some(w) => w.tensor(&format!("{name}.weight"), shape, &self.device)?,
            None => {
                let fan_out = (shape[0] * shape[2] * shape[3]) as f64;
                Tensor::random(shape, Distribution::Normal(0.0, (2.0 / fan_out).sqrt()), &self.device)
            }
        };
        Ok(Param::from_tensor(t))
    }

    pub fn conv_bias(&self, name: &str, n: usize) -> Result<Param<Tensor<1>>, TrainError> {
        let t = match self.weights {
            Some(w) => w.tensor(&format!("{name}.bias"), [n], &self.device)?,
            None => Tensor::zeros([n], &self.device),
        };
        Ok(Param::from_tensor(t))
    }

    /// Batch norm with PyTorch names (`weight`, `bias`, `running_mean`, `running_var`).
    pub fn batch_norm(&self, name: &str, n: usize, epsilon: f64) -> Result<BatchNorm, TrainError> {
        let mut bn = BatchNormConfig::new(n).with_epsilon(epsilon).init(&self.device);
        if let Some(w) = self.weights {
            let t = |k: &str| w.tensor(&format!("{name}.{k}"), [n], &self.device);
            bn.gamma = Param::from_tensor(t("weight")?);
            bn.beta = Param::from_tensor(t("bias")?);
            bn.running_mean = RunningState::new(t("running_mean")?);
            bn.running_var = RunningState::new(t("running_var")?);
        }
        Ok(bn)
    }

    /// Linear layer from a PyTorch `[out, in]` weight (burn keeps `[in, out]`).
    pub fn linear(&self, name: &str, d_in: usize, d_out: usize) -> Result<Linear, TrainError> {
        let mut l = LinearConfig::new(d_in, d_out).init(&self.device);
        if let Some(w) = self.weights {
            l.weight =
                Param::from_tensor(w.tensor(&format!("{name}.weight"), [d_out, d_in], &self.device)?.transpose());
            l.bias = Some(Param::from_tensor(w.tensor(&format!("{name}.bias"), [d_out], &self.device)?));
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use tract_onnx::pb::tensor_proto::DataLocation;
    use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

    use super::*;

    /// An ONNX file with one `Conv` whose weight is `weight` (2 output channels, no bias).
    fn one_conv(dir: &Path, weight: TensorProto) -> PathBuf {
        let conv = NodeProto {
            op_type: "Conv".into(),
            input: vec!["x".into(), weight.name.clone()],
            output: vec!["y".into()],
            ..Default::default()
        };
        let graph = GraphProto { node: vec![conv], initializer: vec![weight], ..Default::default() };
        let path = dir.join("one_conv.onnx");
        std::fs::write(&path, ModelProto { graph: Some(graph), ..Default::default() }.encode_to_vec()).unwrap();
        path
    }

    fn weight() -> TensorProto {
        TensorProto {
            name: "w".into(),
            dims: vec![2, 1, 1, 1],
            data_type: 1,
            raw_data: [0.5f32, -1.5].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_folded_conv_is_read_and_external_weights_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = [("conv".to_string(), "bn".to_string())];
        let w = Weights::open_folded_onnx(&one_conv(tmp.path(), weight()), &layers, "fc", 1e-3).unwrap();
        assert_eq!(w.tensors["conv.weight"], (vec![2, 1, 1, 1], vec![0.5, -1.5]));
        assert_eq!(w.tensors["bn.bias"], (vec![2], vec![0.0, 0.0]));

        // Raw bytes may be left in place beside an external reference; they must not be read.
        let external = TensorProto { data_location: Some(DataLocation::External as i32), ..weight() };
        let err = Weights::open_folded_onnx(&one_conv(tmp.path(), external), &layers, "fc", 1e-3).unwrap_err();
        assert!(err.to_string().contains("stored outside the ONNX file"), "{err}");
    }
}
