//! Face detection: BlazeFace (single shot, anchors) and MTCNN (three-stage cascade); face
//! description (descriptor, age, gender) on the faces either finds.

mod blazeface;
mod describe;
mod mtcnn;

pub use blazeface::BlazeFace;
pub use describe::FaceDescriber;
pub use mtcnn::Mtcnn;
