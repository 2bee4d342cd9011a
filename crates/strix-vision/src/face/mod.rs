//! Face detection: BlazeFace (single shot, anchors) and MTCNN (three-stage cascade).

mod blazeface;
mod mtcnn;

pub use blazeface::BlazeFace;
pub use mtcnn::Mtcnn;
