//! Domain types shared by every Strix crate: dense tensors and their descriptions, and the
//! progress-reporting trait that libraries use instead of drawing bars themselves, tasks, model
//! names and versions, content digests, and the redaction of secrets from text that leaves the process.
//!
//! ```
//! use strix_core::{Tensor, DType};
//! let t = Tensor::from_f32(vec![1, 3], vec![0.1, 0.7, 0.2]).unwrap();
//! assert_eq!(t.shape(), &[1, 3]);
//! assert_eq!(t.dtype(), DType::F32);
//! ```

mod answer;
pub mod digest;
mod error;
pub mod fs;
pub mod html;
mod model;
mod progress;
mod redact;
mod tensor;

pub use answer::{Answer, BBox, Class, Detection, Face, FaceDescription, Keypoint, Pose, SegMask, TextLine};
pub use error::{CoreError, error_chain};
pub use model::{ModelVersion, Task, check_name, is_name_char};
pub use progress::{NoProgress, Progress, ProgressUnit};
pub use redact::{MASK, redact};
pub use tensor::{DType, Dim, Tensor, TensorData, TensorDataRef, TensorInfo, TensorView};
