//! Evaluation of a detector exactly as its export will run: strix-vision's preprocessing from
//! the export's own spec, the `nanodet` decoder, and COCO mAP from strix-metrics (the code
//! behind `strix eval detect`), so the trainer's numbers are the export's.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use strix_core::Detection;
use strix_data::detection::DetectionSet;
use strix_metrics::coco;
use strix_vision::detect::{NanoDet, Nms};
use strix_vision::{DecodeLimits, Geometry, InputSpec, Layout, Outputs, Preprocess, Preprocessor, Resize};

use super::model::{Detector, DetectorShape, STRIDES};
use crate::TrainError;

/// `model.json` of a detection run: how to rebuild, feed and decode the trained detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedDetector {
    pub shape: DetectorShape,
    pub classes: Vec<String>,
    /// Preprocessing of evaluation and of the export's spec.
    pub preprocess: Preprocess,
    /// Filtering of the export's spec (what `predict`, `serve` and `stream` keep); evaluation
    /// lowers its score threshold to [`EVAL_SCORE_THRESHOLD`].
    pub nms: Nms,
}

/// Names of the exported outputs, per stride.
pub fn output_names(stride: usize) -> (String, String) {
    (format!("cls_pred_stride_{stride}"), format!("dis_pred_stride_{stride}"))
}

impl SavedDetector {
    pub fn input_spec(&self) -> InputSpec {
        InputSpec {
            name: Some("input".into()),
            layout: Layout::Nchw,
            dtype: strix_vision::InputType::F32,
            width: self.shape.input.0 as u32,
            height: self.shape.input.1 as u32,
        }
    }

    /// The decoder of the export's spec.
    /// The export's decoder with evaluation's score threshold.
    pub fn eval_decoder(&self) -> NanoDet {
        let mut d = self.decoder();
        d.nms.score_threshold = EVAL_SCORE_THRESHOLD;
        d
    }

    pub fn decoder(&self) -> NanoDet {
        let (scores, boxes) = STRIDES.iter().map(|&s| output_names(s)).unzip();
        NanoDet {
            strides: STRIDES.iter().map(|&s| s as u32).collect(),
            reg_max: self.shape.reg_max,
            score_outputs: scores,
            box_outputs: boxes,
            nms: self.nms,
        }
    }

    /// The evaluation (and export) preprocessing of `mode`.
    pub fn preprocess(mode: crate::config::ResizeMode, fill: u8, mean: [f32; 3], std: [f32; 3]) -> Preprocess {
        let resize = match mode {
            crate::config::ResizeMode::Letterbox => Resize::Letterbox { fill },
            crate::config::ResizeMode::Stretch => Resize::Stretch {},
        };
        Preprocess { resize, channels: strix_vision::ChannelOrder::Rgb, mean, std }
    }
}

/// The score threshold of mAP evaluation: COCO's AP counts the low-confidence tail
/// (`strix eval detect --score-threshold 0.05` reproduces the trainer's numbers).
pub const EVAL_SCORE_THRESHOLD: f32 = 0.05;

/// The export's filtering: a deployment threshold, NMS at IoU 0.6, at most 100 boxes.
pub fn deploy_nms() -> Nms {
    Nms { score_threshold: 0.35, iou_threshold: 0.6, max_detections: 100, class_agnostic: false }
}

/// A detector's answers over a dataset and their COCO scores.
#[derive(Clone, Debug, Serialize)]
pub struct DetEvaluation {
    pub images: usize,
    /// COCO's 12 numbers, by name (AP, AP50, AP75, APs, ...).
    pub stats: Vec<(String, f64)>,
    pub map: f64,
    pub map50: f64,
    pub per_class: Vec<coco::ClassAp>,
    /// Detections per image, in the set's order (empty for unreadable images).
    #[serde(skip)]
    pub detections: Vec<Vec<Detection>>,
    pub unreadable: Vec<(String, String)>,
}

/// `set` as COCO ground truth: images numbered from 1 in order, categories 1..=n.
pub fn ground_truth(set: &DetectionSet) -> coco::Dataset {
    let mut annotations = Vec::new();
    for (i, im) in set.images.iter().enumerate() {
        for b in &im.boxes {
            annotations.push(coco::Annotation {
                id: annotations.len() as u64 + 1,
                image_id: i as u64 + 1,
                category_id: b.class as u64 + 1,
                bbox: b.bbox.map(f64::from),
                area: f64::from(b.bbox[2] * b.bbox[3]),
                iscrowd: u8::from(b.iscrowd),
                keypoints: None,
                num_keypoints: None,
            });
        }
    }
    coco::Dataset {
        images: (0..set.images.len())
            .map(|i| coco::Image { id: i as u64 + 1, file_name: Some(set.images[i].path.to_string_lossy().into()) })
            .collect(),
        annotations,
        categories: set
            .classes
            .iter()
            .enumerate()
            .map(|(i, n)| coco::Category { id: i as u64 + 1, name: n.clone() })
            .collect(),
    }
}

/// Raw outputs of a batch as the export names them: per stride, sigmoid scores
/// `[n, cells, classes]` and distance logits `[n, cells, 4 * bins]`.
pub fn named_outputs(
    levels: Vec<Tensor<4>>,
    classes: usize,
) -> Result<(Vec<String>, Vec<strix_core::Tensor>), TrainError> {
    let mut names = Vec::new();
    let mut tensors = Vec::new();
    for (t, &stride) in levels.into_iter().zip(&STRIDES) {
        let [n, k, h, w] = t.dims();
        let flat = t.reshape([n, k, h * w]).swap_dims(1, 2);
        let scores = sigmoid(flat.clone().narrow(2, 0, classes));
        let dist = flat.narrow(2, classes, k - classes);
        let (sn, dn) = output_names(stride);
        for (name, t, width) in [(sn, scores, classes), (dn, dist, k - classes)] {
            let data = t
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| TrainError::Invalid(format!("cannot read {name} back: {e:?}")))?;
            let t = strix_core::Tensor::new(vec![n, h * w, width], strix_core::TensorData::F32(data))
                .map_err(|e| TrainError::Invalid(e.to_string()))?;
            names.push(name);
            tensors.push(t);
        }
    }
    Ok((names, tensors))
}

/// One image preprocessed (pixels and where they came from), or why it could not be read.
type Prepared = Result<(Vec<f32>, Geometry), String>;

/// The export-named outputs of `model` (evaluation mode) for `n` preprocessed images
/// (`[n, 3, h, w]` floats, as the spec's preprocessing writes them).
pub fn run_batch(
    model: &Detector,
    saved: &SavedDetector,
    pixels: Vec<f32>,
    n: usize,
    device: &Device,
) -> Result<(Vec<String>, Vec<strix_core::Tensor>), TrainError> {
    let (w, h) = saved.shape.input;
    let x = Tensor::<4>::from_data(TensorData::new(pixels, [n, 3, h, w]), device);
    named_outputs(model.valid().forward(x), saved.shape.classes)
}

/// Run `model` over `set` (in evaluation mode) and score it.
pub fn evaluate(
    model: &Detector,
    saved: &SavedDetector,
    set: &DetectionSet,
    batch_size: usize,
    device: &Device,
) -> Result<DetEvaluation, TrainError> {
    // `run_batch` puts the model in evaluation mode.
    let pre =
        Preprocessor::new(&saved.input_spec(), &saved.preprocess).map_err(|e| TrainError::Config(e.to_string()))?;
    let decoder = saved.eval_decoder();
    let (w, h) = saved.shape.input;
    let limits = DecodeLimits::default();
    let mut detections: Vec<Vec<Detection>> = vec![Vec::new(); set.images.len()];
    let mut unreadable = Vec::new();
    let order: Vec<usize> = (0..set.images.len()).collect();
    for chunk in order.chunks(batch_size.max(1)) {
        let prepared: Vec<(usize, Prepared)> = chunk
            .par_iter()
            .map(|&i| {
                let r = strix_vision::decode_file(&set.images[i].path, &limits).map_err(|e| e.to_string()).map(|img| {
                    let mut px = vec![0f32; pre.sample_len()];
                    let g = pre.run(&img, &mut px);
                    (px, g)
                });
                (i, r)
            })
            .collect();
        let (mut pixels, mut geometries, mut items) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in prepared {
            match r {
                Ok((px, g)) => {
                    pixels.extend(px);
                    geometries.push(g);
                    items.push(i);
                }
                Err(e) => unreadable.push((set.images[i].path.display().to_string(), e)),
            }
        }
        if items.is_empty() {
            continue;
        }
        let (names, tensors) = run_batch(model, saved, pixels, items.len(), device)?;
        let decoded = decoder
            .decode(&Outputs::new(&names, &tensors), &geometries, (w as u32, h as u32), &saved.classes)
            .map_err(|e| TrainError::Invalid(format!("decoding the detector's outputs: {e}")))?;
        for (i, d) in items.into_iter().zip(decoded) {
            detections[i] = d;
        }
    }
    score(set, detections, unreadable)
}

/// COCO scores of `detections` (per image of `set`).
pub fn score(
    set: &DetectionSet,
    detections: Vec<Vec<Detection>>,
    unreadable: Vec<(String, String)>,
) -> Result<DetEvaluation, TrainError> {
    let gt = ground_truth(set);
    let results: Vec<coco::Result> = detections
        .iter()
        .enumerate()
        // Images and categories numbered from 1, as `ground_truth` numbers them.
        .flat_map(|(i, ds)| {
            let image_id = i as u64 + 1;
            ds.iter().map(move |d| coco::Result::from_detection(image_id, d.class_id as u64 + 1, d))
        })
        .collect();
    let summary = coco::evaluate(&gt, &results, coco::IouType::Bbox)
        .map_err(|e| TrainError::Invalid(format!("COCO evaluation: {e}")))?;
    let get = |n: &str| summary.get(n).unwrap_or(-1.0).max(0.0);
    Ok(DetEvaluation {
        images: set.images.len(),
        map: get("AP"),
        map50: get("AP50"),
        stats: summary.stats.clone(),
        per_class: summary.per_class,
        detections,
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use strix_core::BBox;
    use strix_data::detection::{DetBox, DetImage};

    use super::*;

    fn image(name: &str, class: usize, bbox: [f32; 4]) -> DetImage {
        let boxes = vec![DetBox { class, bbox, iscrowd: false }];
        DetImage { path: PathBuf::from(name), width: 320, height: 240, boxes }
    }

    fn found(class_id: usize, [x, y, w, h]: [f32; 4]) -> Detection {
        Detection { bbox: BBox::new(x, y, x + w, y + h), score: 0.9, class_id, label: String::new() }
    }

    #[test]
    fn detections_on_their_boxes_score_full_map_with_images_and_classes_matched_by_index() {
        let (a, b) = ([10.0, 10.0, 50.0, 40.0], [100.0, 50.0, 80.0, 60.0]);
        let set = DetectionSet {
            classes: vec!["a".into(), "b".into()],
            images: vec![image("0.png", 0, a), image("1.png", 1, b)],
            ..Default::default()
        };
        let perfect = score(&set, vec![vec![found(0, a)], vec![found(1, b)]], Vec::new()).unwrap();
        assert!((perfect.map - 1.0).abs() < 1e-9 && (perfect.map50 - 1.0).abs() < 1e-9, "{perfect:?}");
        assert_eq!(perfect.per_class.len(), 2);
        // The same boxes under the other class score nothing: classes are not ignored.
        let swapped = score(&set, vec![vec![found(1, a)], vec![found(0, b)]], Vec::new()).unwrap();
        assert_eq!((swapped.map, swapped.map50), (0.0, 0.0));
    }
}
