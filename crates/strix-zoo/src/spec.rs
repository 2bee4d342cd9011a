//! The typed model spec: everything needed to turn an image into an answer with one ONNX file.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use strix_vision::detect;
use strix_vision::face::{BlazeFace, FaceDescriber, Mtcnn};
use strix_vision::ocr::PpOcr;
use strix_vision::pose::{MoveNet, MoveNetMulti};
use strix_vision::segment::MaskDecoder;
use strix_vision::{Cascade, ClassifyHead, Decode, EmbedHead, InputSpec, Preprocess, Preprocessor};

use crate::ZooError;
pub use strix_core::{Task, check_name, is_name_char};

/// A file a model needs, found by relative path and checked by digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Path relative to the spec's folder (a spec file), or to the model search path and hub
    /// (a zoo entry), e.g. `classify/efficientnet_lite0.onnx`.
    pub file: String,
    /// Lower-case hex SHA-256 of the file; required to download it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where to download it from, when not from the hub (`STRIX_HUB_URL` + `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Size in bytes, when known: shown before a download and enforced during it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Class names: a file (one per line, line i = class i) or a list in the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsSpec {
    /// Path of the labels file, resolved like the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The class names themselves, for a spec that carries them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

impl LabelsSpec {
    /// The labels file as an artifact to resolve, when the labels live in a file.
    pub fn artifact(&self) -> Option<Artifact> {
        self.file.as_ref().map(|file| Artifact {
            file: file.clone(),
            sha256: self.sha256.clone(),
            url: self.url.clone(),
            size: None,
        })
    }
}

/// How the raw outputs become an answer; `kind` picks the decoder, the other keys are its
/// parameters (see docs/model-spec.md for an example of each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DecoderSpec {
    /// Top-k classes from a `[N, classes]` output.
    Classify(ClassifyHead),
    /// A unit-length vector per image from a `[N, D]` output, which may be inside the graph.
    Embed(EmbedHead),
    /// NanoDet / GFL heads: per-stride class scores and distance distributions.
    Nanodet(detect::NanoDet),
    /// YOLO-family rows or columns: box, optional objectness, class scores.
    Yolo(detect::Yolo),
    /// SSD-style decoded boxes beside per-class scores.
    Ssd(detect::Ssd),
    /// CenterNet-style class heat map with size (and offset) maps.
    Centernet(detect::CenterNet),
    /// MoveNet single-person keypoints.
    Movenet(MoveNet),
    /// MoveNet MultiPose: up to six people, each keypoints and a box.
    MovenetMultipose(MoveNetMulti),
    /// Semantic segmentation: foreground probability or class scores per pixel.
    Mask(MaskDecoder),
    /// BlazeFace anchors, landmarks, weighted NMS.
    Blazeface(BlazeFace),
    /// MTCNN three-stage face cascade (networks `main` = P-Net, `rnet`, `onet`).
    Mtcnn(Mtcnn),
    /// PP-OCR text reading (networks `main` = detector, `rec`, optional `cls`); the labels are
    /// the recogniser's characters.
    Ppocr(PpOcr),
}

/// A spec's decoder as the pipeline runs it.
#[derive(Clone, Copy, Debug)]
pub enum Head<'a> {
    /// Answers from one preprocessed batch.
    Single(&'a dyn Decode),
    /// Runs its own networks on the whole image.
    Cascade(&'a dyn Cascade),
}

impl DecoderSpec {
    /// The box filtering of a detector's decoder (`None` for other tasks), to change it for one
    /// use (`strix eval detect --score-threshold` wants the low-confidence tail for mAP).
    pub fn nms_mut(&mut self) -> Option<&mut strix_vision::detect::Nms> {
        match self {
            DecoderSpec::Nanodet(d) => Some(&mut d.nms),
            DecoderSpec::Yolo(d) => Some(&mut d.nms),
            DecoderSpec::Ssd(d) => Some(&mut d.nms),
            DecoderSpec::Centernet(d) => Some(&mut d.nms),
            _ => None,
        }
    }

    /// The one registration: each kind of decoder to its implementation in strix-vision.
    pub fn head(&self) -> Head<'_> {
        match self {
            DecoderSpec::Classify(d) => Head::Single(d),
            DecoderSpec::Embed(d) => Head::Single(d),
            DecoderSpec::Nanodet(d) => Head::Single(d),
            DecoderSpec::Yolo(d) => Head::Single(d),
            DecoderSpec::Ssd(d) => Head::Single(d),
            DecoderSpec::Centernet(d) => Head::Single(d),
            DecoderSpec::Movenet(d) => Head::Single(d),
            DecoderSpec::MovenetMultipose(d) => Head::Single(d),
            DecoderSpec::Mask(d) => Head::Single(d),
            DecoderSpec::Blazeface(d) => Head::Single(d),
            DecoderSpec::Mtcnn(d) => Head::Cascade(d),
            DecoderSpec::Ppocr(d) => Head::Cascade(d),
        }
    }

    pub fn task(&self) -> Task {
        match self.head() {
            Head::Single(d) => d.task(),
            Head::Cascade(c) => c.task(),
        }
    }

    /// Whether the model takes one preprocessed image (`[input]` and `[preprocess]` needed);
    /// cascades size and normalise their own inputs.
    pub fn uses_preprocessing(&self) -> bool {
        matches!(self.head(), Head::Single(_))
    }

    /// The networks besides `main` that the decoder runs.
    pub fn networks(&self) -> Vec<&str> {
        match self.head() {
            Head::Single(_) => vec![MAIN],
            Head::Cascade(c) => c.networks(),
        }
    }

    /// Parameter checks of the decoder itself.
    fn check(&self) -> Result<(), String> {
        match self.head() {
            Head::Single(d) => d.check(),
            Head::Cascade(c) => c.check(),
        }
    }
}

/// The name of the network a spec's `weights` holds.
pub const MAIN: &str = "main";

/// A model: weights, labels, input, preprocessing and decoder. Written as TOML beside the
/// weights (`model.toml` next to `model.onnx`) or built into the zoo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub task: Task,
    #[serde(default)]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Where the weights come from (provenance), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The model's (first) network, called `main`.
    pub weights: Artifact,
    /// Further networks of a cascade, by name (`rnet`, `rec`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelsSpec>,
    /// The model input; needed unless the decoder is a cascade (mtcnn, ppocr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<Preprocess>,
    pub decoder: DecoderSpec,
    /// A face description network run on every face the decoder finds (faces models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub describe: Option<FaceDescriber>,
}

impl ModelSpec {
    /// Parse and validate a spec; `origin` names it in errors (a path, or `zoo:NAME`).
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ZooError> {
        let spec: ModelSpec = toml::from_str(text).map_err(|e| ZooError::SpecParse {
            origin: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        spec.validate().map_err(|message| ZooError::SpecInvalid { origin: origin.to_string(), message })?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render spec: {e}\n"))
    }

    /// Checks serde cannot express: names and paths that are safe to use, agreeing fields.
    fn validate(&self) -> Result<(), String> {
        check_name(&self.name)?;
        if self.decoder.task() != self.task {
            return Err(format!("task is {} but the decoder is a {} decoder", self.task, self.decoder.task()));
        }
        check_artifact("weights", &self.weights)?;
        for (name, artifact) in &self.networks {
            check_name(name).map_err(|e| format!("networks: {e}"))?;
            if name == MAIN {
                return Err(format!("networks.{MAIN} is the spec's `weights`; give other networks other names"));
            }
            check_artifact(&format!("networks.{name}"), artifact)?;
        }
        for needed in self.decoder.networks() {
            if needed != MAIN && !self.networks.contains_key(needed) {
                return Err(format!("the {} decoder runs network `{needed}`: add [networks.{needed}]", self.task));
            }
        }
        self.decoder.check()?;
        if let Some(describe) = &self.describe {
            if self.task != Task::Faces {
                return Err(format!("[describe] describes faces, but this is a {} model", self.task));
            }
            if !self.networks.contains_key(&describe.network) {
                let net = &describe.network;
                return Err(format!("[describe] runs network `{net}`: add [networks.{net}]"));
            }
            describe.check()?;
        }
        if let Some(labels) = &self.labels {
            match (labels.artifact(), labels.names.is_empty()) {
                (Some(file), true) => check_artifact("labels", &file)?,
                (None, false) => {}
                (Some(_), false) => {
                    return Err("labels: give either `file` or `names`, not both".into());
                }
                (None, true) => {
                    return Err("labels: give `file` or a non-empty `names` list".into());
                }
            }
            if labels.file.is_none() && (labels.sha256.is_some() || labels.url.is_some()) {
                return Err("labels: `sha256` and `url` describe a labels `file`, which is missing".into());
            }
        }
        match (&self.input, &self.preprocess) {
            (Some(input), Some(pre)) => {
                Preprocessor::new(input, pre).map_err(|e| e.to_string())?;
            }
            (None, None) if !self.decoder.uses_preprocessing() => {}
            _ if !self.decoder.uses_preprocessing() => {
                return Err(
                    "this decoder sizes and normalises its own inputs: leave out [input] and [preprocess]".into()
                );
            }
            _ => return Err("[input] and [preprocess] are both needed for this decoder".into()),
        }
        Ok(())
    }
}

fn check_artifact(what: &str, a: &Artifact) -> Result<(), String> {
    let path = Path::new(&a.file);
    let inside =
        !a.file.is_empty() && !a.file.contains('\\') && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !inside {
        return Err(format!(
            "{what}.file {:?} must be a relative path inside the model folder (no '..', no leading '/')",
            a.file
        ));
    }
    if let Some(sha) = &a.sha256
        && !(sha.len() == 64 && sha.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
    {
        return Err(format!("{what}.sha256 must be 64 lower-case hex digits, got {sha:?}"));
    }
    if let Some(url) = &a.url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(format!("{what}.url must be an http(s) URL, got {url:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = include_str!("../zoo/efficientnet_lite0.toml");

    #[test]
    fn zoo_spec_round_trips() {
        let spec = ModelSpec::from_toml(SPEC, "test").unwrap();
        let again = ModelSpec::from_toml(&spec.to_toml(), "again").unwrap();
        assert_eq!(spec, again);
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let text = SPEC.replace("channels = \"rgb\"", "channels = \"rgb\"\nnormalise = true");
        let err = ModelSpec::from_toml(&text, "my.toml").unwrap_err().to_string();
        assert!(err.starts_with("my.toml: "), "{err}");
        assert!(err.contains("unknown field `normalise`"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn path_tricks_and_bad_digests_are_refused() {
        for file in ["../../etc/passwd", "/etc/passwd", "a/../../b.onnx", ""] {
            let text = SPEC.replace("classify/efficientnet_lite0.onnx", file);
            let err = ModelSpec::from_toml(&text, "x").unwrap_err().to_string();
            assert!(err.contains("relative path inside"), "{file}: {err}");
        }
        let text = SPEC.replace("feec595e", "FEEC595E");
        assert!(ModelSpec::from_toml(&text, "x").unwrap_err().to_string().contains("sha256"));
        let text = SPEC.replace("name = \"efficientnet_lite0\"", "name = \"../evil\"");
        assert!(ModelSpec::from_toml(&text, "x").unwrap_err().to_string().contains("invalid model name"));
    }

    #[test]
    fn decoder_parameters_reject_typos_too() {
        let nanodet = include_str!("../zoo/nanodet_m_416.toml");
        let text = nanodet.replace("reg_max = 10", "reg_max = 10\nscore_treshold = 0.2");
        let err = ModelSpec::from_toml(&text, "x").unwrap_err().to_string();
        assert!(err.contains("unknown field `score_treshold`"), "{err}");
        let text = nanodet.replace("iou_threshold = 0.5", "iou = 0.5");
        assert!(ModelSpec::from_toml(&text, "x").unwrap_err().to_string().contains("unknown field `iou`"));
        let text = nanodet.replace("kind = \"nanodet\"", "kind = \"retinanet\"");
        let err = ModelSpec::from_toml(&text, "x").unwrap_err().to_string();
        assert!(err.contains("retinanet") && err.contains("yolo"), "{err}");
    }

    #[test]
    fn cascades_need_their_networks_and_no_preprocessing() {
        let mtcnn = include_str!("../zoo/mtcnn.toml");
        let start = mtcnn.find("[networks.onet]").unwrap();
        let end = mtcnn.find("[decoder]").unwrap();
        let text = format!("{}{}", &mtcnn[..start], &mtcnn[end..]);
        let err = ModelSpec::from_toml(&text, "x").unwrap_err().to_string();
        assert!(err.contains("[networks.onet]"), "{err}");
        let text = format!("{mtcnn}\n[input]\nlayout = \"nhwc\"\nwidth = 1\nheight = 1\n");
        assert!(ModelSpec::from_toml(&text, "x").unwrap_err().to_string().contains("leave out [input]"));
        let nanodet = include_str!("../zoo/nanodet_m_416.toml");
        let start = nanodet.find("[preprocess]").unwrap();
        let end = nanodet.find("[decoder]").unwrap();
        let text = format!("{}{}", &nanodet[..start], &nanodet[end..]);
        assert!(ModelSpec::from_toml(&text, "x").unwrap_err().to_string().contains("both needed"));
    }

    #[test]
    fn task_and_decoder_must_agree() {
        let text = SPEC.replace("task = \"classify\"", "task = \"detect\"");
        let err = ModelSpec::from_toml(&text, "x").unwrap_err().to_string();
        assert!(err.contains("task is detect"), "{err}");
    }

    #[test]
    fn inline_labels() {
        let start = SPEC.find("[labels]").unwrap();
        let end = SPEC.find("[input]").unwrap();
        let text = format!(
            "{}[labels]\nnames = [\"compost\", \"recycling\", \"landfill\"]\n\n{}",
            &SPEC[..start],
            &SPEC[end..]
        );
        let spec = ModelSpec::from_toml(&text, "x").unwrap();
        assert_eq!(spec.labels.unwrap().names.len(), 3);
    }
}
