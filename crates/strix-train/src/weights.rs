//! Named pretrained tensors (safetensors, PyTorch names) and the one place where layers get
//! their parameters: from those tensors when given, from a seeded random init otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::TrainError;

/// Every float tensor of a safetensors file, by name.
#[derive(Debug)]
pub struct Weights {
    pub path: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    pub fn open(path: &Path) -> Result<Weights, TrainError> {
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
        Ok(Weights { path: path.into(), tensors })
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
