//! Pixels in, answers out: image decoding with limits, preprocessing exactly as a model spec
//! says, and the task decoders that turn raw model outputs into labels. Independent of the
//! runtime: inputs are made as [`strix_core::Tensor`]s, and decoders read outputs as
//! [`strix_core::TensorView`]s (an engine's buffers in place, or a tensor's).
//!
//! ```
//! use strix_vision::{InputSpec, Layout, InputType, Preprocess, Preprocessor, Resize, ChannelOrder};
//! let input = InputSpec { name: None, layout: Layout::Nchw, dtype: InputType::F32, width: 224, height: 224 };
//! let pre = Preprocess {
//!     resize: Resize::ShorterSideCrop { shorter_side: 256 },
//!     channels: ChannelOrder::Rgb,
//!     mean: [127.0; 3],
//!     std: [128.0; 3],
//! };
//! let p = Preprocessor::new(&input, &pre).unwrap();
//! let img = image::RgbImage::new(640, 480);
//! let mut buf = vec![0.0; p.sample_len()];
//! p.run(&img, &mut buf);
//! let tensor = p.into_tensor(buf, 1);
//! assert_eq!(tensor.shape(), &[1, 3, 224, 224]);
//! ```

pub mod classify;
mod decode;
pub mod detect;
pub mod draw;
mod encode;
mod error;
pub mod face;
mod heads;
mod networks;
pub mod ocr;
mod outputs;
pub mod pose;
mod preprocess;
mod resize;
pub mod segment;

pub use classify::{Class, Classifier};
pub use decode::{
    DecodeLimits, IMAGE_EXTENSIONS, Reduced, decode_bytes, decode_bytes_reduced, decode_file, is_image_path, read_file,
};
pub use encode::encode_jpeg;
pub use error::VisionError;
pub use heads::{Cascade, ClassifyHead, Decode, EmbedHead, l2_normalised};
pub use image::RgbImage;
pub use networks::Networks;
pub use outputs::Outputs;
pub use preprocess::{ChannelOrder, Geometry, InputSpec, InputType, Layout, Preprocess, Preprocessor, Resize};
