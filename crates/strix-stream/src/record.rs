//! Recording the project stream to a video file through an FFmpeg child (H.264 for .mp4,
//! .mkv and .mov; FFmpeg picks the container from the name).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use image::RgbImage;

use crate::error::StreamError;
use crate::source::SourceKind;

pub struct Recorder {
    path: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    size: (u32, u32),
    stderr: std::thread::JoinHandle<Vec<String>>,
    frames: u64,
}

/// Refuse recordings that would destroy data: a path that is one of the run's own sources
/// (even with `overwrite`: FFmpeg would truncate the file it is reading), or an existing file
/// without `overwrite`.
pub fn check_recordings(paths: &[PathBuf], sources: &[SourceKind], overwrite: bool) -> Result<(), StreamError> {
    let real = |p: &Path| p.canonicalize().ok();
    for path in paths {
        let what = path.display().to_string();
        let target = real(path);
        for s in sources {
            if let SourceKind::File(src) = s
                && target.is_some()
                && real(src) == target
            {
                return Err(StreamError::output(&what, "is also a source of this run; record to another file"));
            }
        }
        if !overwrite && std::fs::symlink_metadata(path).is_ok() {
            return Err(StreamError::output(&what, "already exists; pass --force to overwrite it"));
        }
    }
    Ok(())
}

impl Recorder {
    /// Start an encoder for `width`x`height` frames at `fps`; an existing file is only
    /// replaced with `overwrite`.
    pub fn start(
        ffmpeg: &Path,
        path: &Path,
        (width, height): (u32, u32),
        fps: f64,
        overwrite: bool,
    ) -> Result<Self, StreamError> {
        let what = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(StreamError::output(&what, format!("folder {} does not exist", dir.display())));
        }
        // x264 wants even sizes with 4:2:0; the pad filter adds a pixel where needed.
        let mut cmd = Command::new(ffmpeg);
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", if overwrite { "-y" } else { "-n" }])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-s", &format!("{width}x{height}"), "-r", &format!("{fps:.3}"), "-i", "-"])
            .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]);
        let codec: &[&str] = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("mp4" | "mkv" | "mov") => &["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"],
            Some("avi") => &["-c:v", "mjpeg", "-q:v", "3"],
            _ => return Err(StreamError::output(&what, "record to a .mp4, .mkv, .mov or .avi file")),
        };
        cmd.args(codec);
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("mp4")) {
            cmd.args(["-movflags", "+faststart"]);
        }
        cmd.arg(path).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child =
            cmd.spawn().map_err(|error| StreamError::Spawn { program: ffmpeg.display().to_string(), error })?;
        let stdin = child.stdin.take();
        let pipe = child.stderr.take();
        let stderr = std::thread::spawn(move || match pipe {
            Some(p) => BufReader::new(p).lines().map_while(Result::ok).collect(),
            None => Vec::new(),
        });
        Ok(Recorder { path: path.to_path_buf(), child, stdin, size: (width, height), stderr, frames: 0 })
    }

    /// Append a frame (resized to the recording's size if the source changed size).
    pub fn write(&mut self, img: &RgbImage) -> Result<(), StreamError> {
        let Some(stdin) = self.stdin.as_mut() else { return Ok(()) };
        let resized;
        let frame = if img.dimensions() == self.size {
            img
        } else {
            resized = image::imageops::resize(img, self.size.0, self.size.1, image::imageops::FilterType::Triangle);
            &resized
        };
        if let Err(e) = stdin.write_all(frame.as_raw()) {
            self.stdin = None;
            return Err(StreamError::output(&self.path.display().to_string(), format!("the encoder stopped: {e}")));
        }
        self.frames += 1;
        Ok(())
    }

    /// Close the file; the frames written.
    pub fn finish(mut self) -> Result<u64, StreamError> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        let said = self.stderr.join().unwrap_or_default();
        if !status.success() {
            let last = said.iter().rev().find(|l| !l.trim().is_empty()).cloned().unwrap_or_else(|| status.to_string());
            return Err(StreamError::output(&self.path.display().to_string(), format!("ffmpeg failed: {last}")));
        }
        Ok(self.frames)
    }
}
