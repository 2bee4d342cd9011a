//! What turns a decoded image into an answer: one preprocessed network and a decoder, or a
//! cascade running several networks itself.

use std::collections::BTreeMap;

use strix_core::{Dim, Tensor};
use strix_runtime::Session;
use strix_vision::detect::{CenterNet, NanoDet, Ssd, Yolo};
use strix_vision::face::{BlazeFace, Mtcnn};
use strix_vision::ocr::PpOcr;
use strix_vision::pose::MoveNet;
use strix_vision::segment::MaskDecoder;
use strix_vision::{Classifier, Geometry, Layout, Networks, Outputs, Preprocessor, RgbImage, VisionError};
use strix_zoo::{DecoderSpec, MAIN, ResolvedModel};

use crate::{Answer, PipelineError};

/// Decoders of models that take one preprocessed image.
pub(crate) enum Decoder {
    Classify { classifier: Classifier, output: Option<String> },
    NanoDet(NanoDet),
    Yolo(Yolo),
    Ssd(Ssd),
    CenterNet(CenterNet),
    MoveNet(MoveNet),
    Mask(MaskDecoder),
    BlazeFace(BlazeFace),
}

/// Models that run their own networks on the image.
pub(crate) enum Cascade {
    Mtcnn(Mtcnn),
    PpOcr(PpOcr),
}

pub(crate) enum Engine {
    Single {
        preprocessor: Preprocessor,
        /// The session's batch dimension when the model fixes it (many exports fix it at 1).
        fixed_batch: Option<usize>,
        decoder: Decoder,
    },
    Cascade(Cascade),
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
        let decoder = match &spec.decoder {
            DecoderSpec::Mtcnn(m) => return Ok(Engine::Cascade(Cascade::Mtcnn(m.clone()))),
            DecoderSpec::Ppocr(p) => {
                if labels.is_empty() {
                    return Err(mismatch("ppocr needs the recogniser's characters as [labels]".into()));
                }
                return Ok(Engine::Cascade(Cascade::PpOcr(p.clone())));
            }
            DecoderSpec::Classify { softmax, output } => {
                Decoder::Classify { classifier: Classifier { softmax: *softmax, labels }, output: output.clone() }
            }
            DecoderSpec::Nanodet(d) => Decoder::NanoDet(d.clone()),
            DecoderSpec::Yolo(d) => Decoder::Yolo(d.clone()),
            DecoderSpec::Ssd(d) => Decoder::Ssd(d.clone()),
            DecoderSpec::Centernet(d) => Decoder::CenterNet(d.clone()),
            DecoderSpec::Movenet(d) => Decoder::MoveNet(d.clone()),
            DecoderSpec::Mask(d) => Decoder::Mask(d.clone()),
            DecoderSpec::Blazeface(d) => Decoder::BlazeFace(d.clone()),
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
        for name in decoder.output_names() {
            if !available.contains(&name) {
                return Err(mismatch(format!(
                    "the decoder reads output {name:?}, which the graph does not have (outputs: {})",
                    available.join(", ")
                )));
            }
        }
        Ok(Engine::Single { preprocessor, fixed_batch, decoder })
    }
}

impl Decoder {
    /// Output names the decoder reads (the first output needs no name).
    fn output_names(&self) -> Vec<&str> {
        match self {
            Decoder::Classify { output, .. } => output.iter().map(String::as_str).collect(),
            Decoder::NanoDet(d) => d.score_outputs.iter().chain(&d.box_outputs).map(String::as_str).collect(),
            Decoder::Yolo(d) => d.output.iter().map(String::as_str).collect(),
            Decoder::Ssd(d) => vec![d.boxes_output.as_str(), d.scores_output.as_str()],
            Decoder::CenterNet(d) => {
                [Some(d.heatmap_output.as_str()), Some(d.size_output.as_str()), d.offset_output.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            Decoder::MoveNet(d) => d.output.iter().map(String::as_str).collect(),
            Decoder::Mask(d) => d.output.iter().map(String::as_str).collect(),
            Decoder::BlazeFace(d) => d.score_outputs.iter().chain(&d.box_outputs).map(String::as_str).collect(),
        }
    }

    /// One answer per image of the batch.
    pub(crate) fn decode(
        &self,
        outputs: &Outputs,
        geometries: &[Geometry],
        input: (u32, u32),
        labels: &[String],
        top_k: usize,
    ) -> Result<Vec<Answer>, VisionError> {
        fn each<T>(v: Vec<T>, f: impl Fn(T) -> Answer) -> Vec<Answer> {
            v.into_iter().map(f).collect()
        }
        Ok(match self {
            Decoder::Classify { classifier, output } => {
                let (name, t) = outputs.get(output.as_deref())?;
                each(classifier.decode(t, name, top_k)?, |classes| Answer::Labels { classes })
            }
            Decoder::NanoDet(d) => {
                each(d.decode(outputs, geometries, input, labels)?, |objects| Answer::Objects { objects })
            }
            Decoder::Yolo(d) => {
                each(d.decode(outputs, geometries, input, labels)?, |objects| Answer::Objects { objects })
            }
            Decoder::Ssd(d) => {
                each(d.decode(outputs, geometries, input, labels)?, |objects| Answer::Objects { objects })
            }
            Decoder::CenterNet(d) => {
                each(d.decode(outputs, geometries, input, labels)?, |objects| Answer::Objects { objects })
            }
            Decoder::MoveNet(d) => {
                each(d.decode(outputs, geometries, input, labels)?, |people| Answer::People { people })
            }
            Decoder::Mask(d) => each(d.decode(outputs, geometries, input, labels)?, |mask| Answer::Mask { mask }),
            Decoder::BlazeFace(d) => each(d.decode(outputs, geometries, input)?, |faces| Answer::Faces { faces }),
        })
    }
}

impl Cascade {
    pub(crate) fn run(&self, img: &RgbImage, nets: &dyn Networks, labels: &[String]) -> Result<Answer, VisionError> {
        Ok(match self {
            Cascade::Mtcnn(m) => Answer::Faces { faces: m.detect(img, nets)? },
            Cascade::PpOcr(p) => Answer::Text { lines: p.read(img, nets, labels)? },
        })
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
        session.run_with_threads(&[input], self.threads).map_err(|e| VisionError::Inference(e.to_string()))
    }
}
