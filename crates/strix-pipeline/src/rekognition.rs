//! Answers in the shapes Amazon Rekognition users know (`DetectLabels`), so scripts and clients
//! written for it read ours. Shared by `strix predict --json` and the HTTP server.

use serde::Serialize;

use strix_vision::VisionError;

use crate::{PipelineError, Prediction};

/// One label of a `DetectLabels` answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Label {
    pub name: String,
    /// 0 to 100, as Rekognition gives it.
    pub confidence: f32,
    /// Index of the class in the model's label list (a Strix addition).
    pub class_id: usize,
}

/// The body of a `DetectLabels` answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DetectLabels {
    pub labels: Vec<Label>,
    /// The model that answered.
    pub label_model_version: String,
}

impl DetectLabels {
    pub fn from_prediction(prediction: &Prediction, model: &str) -> Self {
        let labels = match prediction {
            Prediction::Labels { classes } => classes
                .iter()
                .map(|c| Label {
                    name: c.label.clone(),
                    confidence: c.score * 100.0,
                    class_id: c.class_id,
                })
                .collect(),
        };
        DetectLabels {
            labels,
            label_model_version: model.to_string(),
        }
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
        ErrorBody {
            code: error_code(error),
            message: error.to_string(),
        }
    }
}

/// The Rekognition exception name closest to an error, so clients can branch on it.
pub fn error_code(error: &PipelineError) -> &'static str {
    match error {
        PipelineError::Vision(
            VisionError::TooManyPixels { .. } | VisionError::FileTooLarge { .. },
        ) => "ImageTooLargeException",
        PipelineError::Vision(
            VisionError::UnknownFormat { .. } | VisionError::Corrupt { .. } | VisionError::Empty,
        ) => "InvalidImageFormatException",
        PipelineError::Vision(
            VisionError::NotFound | VisionError::NotAFile | VisionError::Io(_),
        ) => "InvalidParameterException",
        _ => "InternalServerError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strix_vision::Class;

    #[test]
    fn confidence_is_a_percentage_and_keys_are_pascal_case() {
        let p = Prediction::Labels {
            classes: vec![Class {
                class_id: 2,
                label: "landfill".into(),
                score: 0.25,
            }],
        };
        let json = serde_json::to_string(&DetectLabels::from_prediction(&p, "trash")).unwrap();
        assert_eq!(
            json,
            r#"{"Labels":[{"Name":"landfill","Confidence":25.0,"ClassId":2}],"LabelModelVersion":"trash"}"#
        );
    }
}
