//! What turns a decoded image into an answer: one preprocessed network and a decoder, or a
//! cascade running several networks itself.

use std::collections::BTreeMap;

use strix_core::{Dim, Tensor};
use strix_runtime::Session;
use strix_vision::{Cascade, Decode, Layout, Networks, Preprocessor, VisionError};
use strix_zoo::{DecoderSpec, Head, MAIN, ResolvedModel};

use crate::PipelineError;

/// Decoders of models that take one preprocessed image.
pub(crate) enum Engine {
    Single {
        preprocessor: Preprocessor,
        /// The session's batch dimension when the model fixes it (many exports fix it at 1).
        fixed_batch: Option<usize>,
        /// The spec's decoder, a [`Decode`] ([`DecoderSpec::head`]).
        decoder: DecoderSpec,
    },
    /// A [`Cascade`].
    Cascade(DecoderSpec),
}

impl Engine {
    /// Build the engine for a model and check its graphs against the spec.
    pub(crate) fn new(
        model: &ResolvedModel,
        sessions: &BTreeMap<String, Box<dyn Session>>,
    ) -> Result<Self, PipelineError> {
        let spec = &model.spec;
        let mismatch = |message: String| PipelineError::SpecMismatch { model: model.origin.clone(), message };
        let main = sessions.get(MAIN).ok_or_else(|| mismatch("no main network".into()))?;
        let labels = model.labels.clone();
        let decoder = match spec.decoder.head() {
            Head::Cascade(c) => {
                if c.needs_labels() && labels.is_empty() {
                    return Err(mismatch(format!("{} needs the recogniser's characters as [labels]", spec.name)));
                }
                return Ok(Engine::Cascade(spec.decoder.clone()));
            }
            Head::Single(d) => d,
        };
        let (Some(input_spec), Some(pre)) = (&spec.input, &spec.preprocess) else {
            return Err(mismatch("[input] and [preprocess] are needed for this decoder".into()));
        };
        let preprocessor = Preprocessor::new(input_spec, pre)?;
        let inputs = main.inputs();
        if inputs.len() != 1 {
            return Err(mismatch(format!(
                "the ONNX graph has {} inputs ({}); image models take one",
                inputs.len(),
                inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let input = &inputs[0];
        if let Some(name) = &input_spec.name
            && *name != input.name
        {
            return Err(mismatch(format!("input.name is {name:?} but the graph's input is {:?}", input.name)));
        }
        if input.dtype != input_spec.dtype.dtype() {
            return Err(mismatch(format!(
                "input.dtype is {} but the graph takes {}",
                input_spec.dtype.dtype(),
                input.describe()
            )));
        }
        let wanted = preprocessor.shape(1);
        let fits = input.shape.len() == 4
            && input.shape[1..].iter().zip(&wanted[1..]).all(|(d, &n)| d.fixed().is_none_or(|f| f == n));
        if !fits {
            let layout = match input_spec.layout {
                Layout::Nchw => "NCHW",
                Layout::Nhwc => "NHWC",
            };
            return Err(mismatch(format!(
                "the spec describes {}x{} {layout} input {:?} but the graph takes {}",
                input_spec.width,
                input_spec.height,
                wanted,
                input.describe()
            )));
        }
        let fixed_batch = match &input.shape[0] {
            Dim::Fixed(n) => Some((*n).max(1)),
            Dim::Symbolic(_) => None,
        };
        let available: Vec<&str> = main.outputs().iter().map(|o| o.name.as_str()).collect();
        if available.is_empty() {
            return Err(mismatch("the graph has no outputs".into()));
        }
        for name in decoder.outputs() {
            if !available.contains(&name) {
                return Err(mismatch(format!(
                    "the decoder reads output {name:?}, which the graph does not have (outputs: {})",
                    available.join(", ")
                )));
            }
        }
        Ok(Engine::Single { preprocessor, fixed_batch, decoder: spec.decoder.clone() })
    }
}

impl Engine {
    /// The decoder of a single-network model.
    pub(crate) fn decoder(spec: &DecoderSpec) -> Result<&dyn Decode, PipelineError> {
        match spec.head() {
            Head::Single(d) => Ok(d),
            Head::Cascade(_) => Err(PipelineError::Internal("a cascade has no single decoder".into())),
        }
    }

    /// The cascade of a cascade model.
    pub(crate) fn cascade(spec: &DecoderSpec) -> Result<&dyn Cascade, PipelineError> {
        match spec.head() {
            Head::Cascade(c) => Ok(c),
            Head::Single(_) => Err(PipelineError::Internal("not a cascade".into())),
        }
    }
}

/// A model's sessions as the cascades see them, each run on `threads` threads.
pub(crate) struct SessionNets<'a> {
    pub sessions: &'a BTreeMap<String, Box<dyn Session>>,
    pub threads: usize,
}

impl Networks for SessionNets<'_> {
    fn run(&self, network: &str, input: Tensor) -> Result<Vec<Tensor>, VisionError> {
        let session = self.sessions.get(network).ok_or_else(|| VisionError::MissingOutput {
            name: format!("network {network}"),
            available: self.sessions.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        session.run_with_threads(&[input], self.threads).map_err(|e| VisionError::Inference(e.into()))
    }
}
