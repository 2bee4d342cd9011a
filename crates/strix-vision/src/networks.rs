//! How cascades (MTCNN, PP-OCR) run their networks without this crate knowing the runtime.

use strix_core::Tensor;

use crate::VisionError;

/// Runs one of a model's networks by name (`pnet`, `rec`...). The pipeline implements it
/// over runtime sessions; outputs come in the network's declared order.
pub trait Networks: Sync {
    fn run(&self, network: &str, input: Tensor) -> Result<Vec<Tensor>, VisionError>;
}
