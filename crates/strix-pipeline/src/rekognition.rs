//! Answers in the shapes Amazon Rekognition users know (`DetectLabels`, `DetectFaces`,
//! `DetectText`, and in the same style for poses and segmentation), so scripts and clients
//! written for it read ours. Boxes and points are fractions of the image size; confidences
//! are 0-100. Shared by `strix predict --json` and the HTTP server.

use serde::Serialize;
use strix_core::BBox;
use strix_vision::VisionError;

use crate::{Answer, PipelineError, Prediction};

/// `{"Width", "Height", "Left", "Top"}` as fractions of the image.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BoundingBox {
    pub width: f32,
    pub height: f32,
    pub left: f32,
    pub top: f32,
}

impl BoundingBox {
    /// `b` (pixels) as fractions of a `w` x `h` image.
    pub fn of(b: &BBox, w: u32, h: u32) -> Self {
        let (w, h) = (w.max(1) as f32, h.max(1) as f32);
        BoundingBox { width: b.width() / w, height: b.height() / h, left: b.x1 / w, top: b.y1 / h }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// One object of a label.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Instance {
    pub bounding_box: BoundingBox,
    pub confidence: f32,
}

/// One label of a `DetectLabels` answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Label {
    pub name: String,
    /// 0 to 100: the class probability, or for detections the best instance's score.
    pub confidence: f32,
    /// Index of the class in the model's label list (a Strix addition).
    pub class_id: usize,
    /// Where the objects are (detection models only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<Instance>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Landmark {
    #[serde(rename = "Type")]
    pub kind: String,
    pub x: f32,
    pub y: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FaceDetail {
    pub bounding_box: BoundingBox,
    pub confidence: f32,
    pub landmarks: Vec<Landmark>,
    /// From a face description model (faceres); absent for detectors alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_range: Option<AgeRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<Gender>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgeRange {
    pub low: u32,
    pub high: u32,
}

/// `Male` or `Female` with a confidence of 50-100, as Rekognition gives it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Gender {
    pub value: &'static str,
    pub confidence: f32,
}

impl Gender {
    /// From P(male).
    pub fn of(male: f32) -> Gender {
        let value = if male >= 0.5 { "Male" } else { "Female" };
        Gender { value, confidence: 100.0 * male.max(1.0 - male) }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Geometry {
    pub bounding_box: BoundingBox,
    pub polygon: Vec<Point>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TextDetection {
    pub detected_text: String,
    /// `LINE` (Strix reads whole lines).
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub id: usize,
    pub confidence: f32,
    pub geometry: Geometry,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BodyKeypoint {
    #[serde(rename = "Type")]
    pub kind: String,
    pub x: f32,
    pub y: f32,
    pub confidence: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Person {
    pub bounding_box: BoundingBox,
    pub confidence: f32,
    pub keypoints: Vec<BodyKeypoint>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClassCoverage {
    pub name: String,
    /// Fraction of the image's pixels, 0 to 1.
    pub coverage: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Segmentation {
    pub width: u32,
    pub height: u32,
    pub classes: Vec<ClassCoverage>,
    /// Where the mask PNG was written, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_file: Option<String>,
}

/// The body of an answer, one shape per task.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Response {
    #[serde(rename_all = "PascalCase")]
    Labels { labels: Vec<Label>, label_model_version: String },
    #[serde(rename_all = "PascalCase")]
    Faces { face_details: Vec<FaceDetail>, face_model_version: String },
    #[serde(rename_all = "PascalCase")]
    Text { text_detections: Vec<TextDetection>, text_model_version: String },
    #[serde(rename_all = "PascalCase")]
    Persons { persons: Vec<Person>, pose_model_version: String },
    #[serde(rename_all = "PascalCase")]
    Segmentation { segmentation: Segmentation, segmentation_model_version: String },
    /// Not a Rekognition shape (its face vectors stay inside collections): the vector itself,
    /// unit length, and its size.
    #[serde(rename_all = "PascalCase")]
    Embedding { embedding: Vec<f32>, dimensions: usize, embedding_model_version: String },
}

impl Response {
    /// The answer for `prediction` from the model called `model`.
    pub fn from_prediction(prediction: &Prediction, model: &str) -> Self {
        let (w, h) = (prediction.width, prediction.height);
        let (fw, fh) = (w.max(1) as f32, h.max(1) as f32);
        let model = model.to_string();
        match &prediction.answer {
            Answer::Labels { classes } => Response::Labels {
                labels: classes
                    .iter()
                    .map(|c| Label {
                        name: c.label.clone(),
                        confidence: c.score * 100.0,
                        class_id: c.class_id,
                        instances: vec![],
                    })
                    .collect(),
                label_model_version: model,
            },
            Answer::Objects { objects } => {
                // One label per class, its instances best first, labels by their best instance.
                let mut labels: Vec<Label> = Vec::new();
                for d in objects {
                    let instance =
                        Instance { bounding_box: BoundingBox::of(&d.bbox, w, h), confidence: d.score * 100.0 };
                    match labels.iter_mut().find(|l| l.class_id == d.class_id) {
                        Some(l) => {
                            l.confidence = l.confidence.max(instance.confidence);
                            l.instances.push(instance);
                        }
                        None => labels.push(Label {
                            name: d.label.clone(),
                            confidence: instance.confidence,
                            class_id: d.class_id,
                            instances: vec![instance],
                        }),
                    }
                }
                for l in &mut labels {
                    l.instances.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
                }
                labels.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
                Response::Labels { labels, label_model_version: model }
            }
            Answer::Faces { faces } => Response::Faces {
                face_details: faces
                    .iter()
                    .map(|f| FaceDetail {
                        bounding_box: BoundingBox::of(&f.bbox, w, h),
                        confidence: f.score * 100.0,
                        landmarks: f
                            .landmarks
                            .iter()
                            .map(|k| Landmark { kind: k.name.clone(), x: k.x / fw, y: k.y / fh })
                            .collect(),
                        age_range: f
                            .description
                            .as_ref()
                            .and_then(|d| d.age_range)
                            .map(|[low, high]| AgeRange { low, high }),
                        gender: f.description.as_ref().and_then(|d| d.male).map(Gender::of),
                    })
                    .collect(),
                face_model_version: model,
            },
            Answer::Text { lines } => Response::Text {
                text_detections: lines
                    .iter()
                    .enumerate()
                    .map(|(id, l)| TextDetection {
                        detected_text: l.text.clone(),
                        kind: "LINE",
                        id,
                        confidence: l.score * 100.0,
                        geometry: Geometry {
                            bounding_box: BoundingBox::of(&l.bbox(), w, h),
                            polygon: l.quad.iter().map(|p| Point { x: p[0] / fw, y: p[1] / fh }).collect(),
                        },
                    })
                    .collect(),
                text_model_version: model,
            },
            Answer::People { people } => Response::Persons {
                persons: people
                    .iter()
                    .map(|p| Person {
                        bounding_box: BoundingBox::of(&p.bbox, w, h),
                        confidence: p.score * 100.0,
                        keypoints: p
                            .keypoints
                            .iter()
                            .map(|k| BodyKeypoint {
                                kind: k.name.clone(),
                                x: k.x / fw,
                                y: k.y / fh,
                                confidence: k.score * 100.0,
                            })
                            .collect(),
                    })
                    .collect(),
                pose_model_version: model,
            },
            Answer::Mask { mask } => Response::Segmentation {
                segmentation: Segmentation {
                    width: mask.width,
                    height: mask.height,
                    classes: mask
                        .classes
                        .iter()
                        .zip(mask.coverage())
                        .map(|(name, coverage)| ClassCoverage { name: name.clone(), coverage })
                        .collect(),
                    mask_file: None,
                },
                segmentation_model_version: model,
            },
            Answer::Embedding { vector } => Response::Embedding {
                dimensions: vector.len(),
                embedding: vector.clone(),
                embedding_model_version: model,
            },
        }
    }
}

/// One line of `strix predict --json` and of a batch transform's output: the image's name
/// with its answer, or with the error that stopped it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JsonLine {
    pub image: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl JsonLine {
    /// `image`'s answer, or its error, from `model`.
    pub fn new(image: &str, result: Result<&Prediction, &PipelineError>, model: &str) -> JsonLine {
        let (response, error) = match result {
            Ok(p) => (Some(Response::from_prediction(p, model)), None),
            Err(e) => (None, Some(ErrorBody::from_error(e))),
        };
        JsonLine { image: image.to_string(), response, error }
    }

    /// The line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"Error\":\"{e}\"}}"));
        s.push('\n');
        s
    }
}

/// A Rekognition-style error: `{"Code": ..., "Message": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
}

impl ErrorBody {
    pub fn from_error(error: &PipelineError) -> Self {
        ErrorBody { code: error_code(error), message: error.to_string() }
    }
}

/// The Rekognition exception name closest to an error, so clients can branch on it.
pub fn error_code(error: &PipelineError) -> &'static str {
    match error {
        PipelineError::Vision(VisionError::TooManyPixels { .. } | VisionError::FileTooLarge { .. }) => {
            "ImageTooLargeException"
        }
        PipelineError::Vision(VisionError::UnknownFormat { .. } | VisionError::Corrupt { .. } | VisionError::Empty) => {
            "InvalidImageFormatException"
        }
        PipelineError::Vision(VisionError::NotFound | VisionError::NotAFile | VisionError::Io(_)) => {
            "InvalidParameterException"
        }
        _ => "InternalServerError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strix_core::{Detection, Face, Keypoint, TextLine};
    use strix_vision::Class;

    fn json(answer: Answer) -> String {
        serde_json::to_string(&Response::from_prediction(&Prediction { width: 200, height: 100, answer }, "m")).unwrap()
    }

    #[test]
    fn labels_have_percent_confidence_and_pascal_case_keys() {
        let j = json(Answer::Labels { classes: vec![Class { class_id: 2, label: "landfill".into(), score: 0.25 }] });
        assert_eq!(j, r#"{"Labels":[{"Name":"landfill","Confidence":25.0,"ClassId":2}],"LabelModelVersion":"m"}"#);
    }

    #[test]
    fn detections_group_into_labels_with_ratio_boxes() {
        let d = |x: f32, s: f32, c: usize, l: &str| Detection {
            bbox: BBox::new(x, 10.0, x + 50.0, 60.0),
            score: s,
            class_id: c,
            label: l.into(),
        };
        let j: serde_json::Value = serde_json::from_str(&json(Answer::Objects {
            objects: vec![d(0.0, 0.5, 0, "person"), d(100.0, 0.9, 1, "dog"), d(20.0, 0.7, 0, "person")],
        }))
        .unwrap();
        assert_eq!(j["Labels"][0]["Name"], "dog");
        let person = &j["Labels"][1];
        assert_eq!(person["Instances"].as_array().unwrap().len(), 2);
        assert_eq!(person["Instances"][0]["BoundingBox"]["Left"], 0.1);
        assert_eq!(person["Instances"][0]["BoundingBox"]["Width"], 0.25);
        assert_eq!(person["Instances"][0]["BoundingBox"]["Height"], 0.5);
        assert!((person["Confidence"].as_f64().unwrap() - 70.0).abs() < 1e-4);
    }

    #[test]
    fn faces_and_text_shapes() {
        let f = Face {
            bbox: BBox::new(20.0, 10.0, 60.0, 50.0),
            score: 1.0,
            landmarks: vec![Keypoint { name: "nose".into(), x: 40.0, y: 30.0, score: 1.0 }],
            description: None,
        };
        let j: serde_json::Value = serde_json::from_str(&json(Answer::Faces { faces: vec![f] })).unwrap();
        assert_eq!(j["FaceDetails"][0]["Landmarks"][0]["Type"], "nose");
        assert_eq!(j["FaceDetails"][0]["Landmarks"][0]["X"], 0.2);
        let t =
            TextLine { quad: [[0.0, 0.0], [100.0, 0.0], [100.0, 20.0], [0.0, 20.0]], text: "hi".into(), score: 0.9 };
        let j: serde_json::Value = serde_json::from_str(&json(Answer::Text { lines: vec![t] })).unwrap();
        assert_eq!(j["TextDetections"][0]["DetectedText"], "hi");
        assert_eq!(j["TextDetections"][0]["Type"], "LINE");
        assert_eq!(j["TextDetections"][0]["Geometry"]["Polygon"].as_array().unwrap().len(), 4);
        assert_eq!(j["TextDetections"][0]["Geometry"]["BoundingBox"]["Width"], 0.5);
    }
}
