//! The model spec written beside an export: what `strix predict` and the server need to turn an
//! image into the exported model's input, the way training evaluated it.

use std::path::Path;

use strix_data::eval_crop_fraction;
use strix_train::classify::SavedModel;
use strix_vision::{ChannelOrder, InputSpec, InputType, Layout, Preprocess, Resize};
use strix_zoo::{Artifact, DecoderSpec, LabelsSpec, ModelSpec, Task, check_name, is_name_char};

use crate::{ExportError, arch};

/// A spec name from a run folder's name: characters a model name may not hold become `-`.
pub fn name_from_dir(run_dir: &Path) -> String {
    let raw = run_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let name: String = raw.chars().map(|c| if is_name_char(c) { c } else { '-' }).collect();
    let name = name.trim_start_matches('.').to_string();
    if check_name(&name).is_ok() { name } else { "model".into() }
}

/// The spec of an exported classifier: evaluation preprocessing (centre crop of `val_crop` of
/// the shorter side, resized to the input; the architecture's normalisation), the class names,
/// a softmax classifier decoder.
pub fn model_spec(name: &str, saved: &SavedModel, onnx: &Path) -> Result<ModelSpec, ExportError> {
    check_name(name).map_err(ExportError::Spec)?;
    let size = saved.shape.image_size as u32;
    // Training's eval view crops `val_crop` of the shorter side and resizes it to `size`: the
    // same as resizing the shorter side to `size / val_crop` and cutting the centre.
    let shorter_side = ((size as f32 / eval_crop_fraction(saved.val_crop)).round() as u32).max(size);
    let channels = if saved.shape.channels == 1 { ChannelOrder::Gray } else { ChannelOrder::Rgb };
    let (sha256, size_bytes) = strix_core::digest::sha256_file(onnx).map_err(ExportError::io(onnx))?;
    let spec = ModelSpec {
        name: name.to_string(),
        task: Task::Classify,
        summary: format!("{} trained by strix on {} classes", saved.shape.arch, saved.classes.len()),
        license: None,
        source: Some(format!("strix {} export", env!("CARGO_PKG_VERSION"))),
        weights: Artifact { file: crate::ONNX_FILE.into(), sha256: Some(sha256), url: None, size: Some(size_bytes) },
        networks: Default::default(),
        labels: Some(LabelsSpec { file: None, sha256: None, url: None, names: saved.classes.clone() }),
        input: Some(InputSpec {
            name: Some(arch::INPUT.into()),
            layout: Layout::Nchw,
            dtype: InputType::F32,
            width: size,
            height: size,
        }),
        preprocess: Some(Preprocess {
            resize: Resize::ShorterSideCrop { shorter_side },
            channels,
            mean: saved.normalize.mean,
            std: saved.normalize.std,
        }),
        decoder: DecoderSpec::Classify(strix_vision::ClassifyHead { softmax: true, output: Some(arch::OUTPUT.into()) }),
        describe: None,
    };
    // The same checks a spec file gets when it is read back.
    ModelSpec::from_toml(&spec.to_toml(), name).map_err(|e| ExportError::Spec(e.to_string()))
}

/// The embed spec of an exported classifier: the same file and preprocessing, its second output
/// (the pooled features) read as a unit vector. `strix index create --model` and
/// `strix train --model knn --embedding` take it.
pub fn embed_spec(classifier: &ModelSpec) -> Result<ModelSpec, ExportError> {
    let mut spec = classifier.clone();
    spec.name = format!("{}_embed", classifier.name);
    spec.task = Task::Embed;
    spec.summary = format!("the pooled features of {}", classifier.summary);
    spec.labels = None;
    spec.decoder = DecoderSpec::Embed(strix_vision::EmbedHead { output: Some(arch::EMBEDDING.into()) });
    ModelSpec::from_toml(&spec.to_toml(), &spec.name).map_err(|e| ExportError::Spec(e.to_string()))
}
