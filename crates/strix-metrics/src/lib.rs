//! Evaluation metrics, defined as the reference tools define them so numbers can be compared
//! with published ones:
//!
//! - [`coco`]: detection and keypoint AP/AR exactly as pycocotools' `COCOeval` computes them
//!   (greedy matching by score, crowd regions, area ranges, 101-point interpolated precision),
//!   with the one adapter from Strix's detections and poses to COCO results
//!   ([`coco::Result::from_detection`], [`coco::Result::from_pose`]);
//! - [`classify`]: top-k accuracy, confusion matrix, per-class precision/recall/F1;
//! - [`segment`]: per-class IoU, mean IoU and pixel accuracy from a pixel confusion matrix.

pub mod classify;
pub mod coco;
pub mod segment;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}
