//! Where frames come from: video files, network streams and cameras decoded by FFmpeg, or a
//! folder of images.
//!
//! FFmpeg runs as a child process writing PPM frames to a pipe rather than through a binding
//! crate: the binary is in every distribution (no -dev packages, bindgen or libclang to build
//! Strix), a decoder crash on a hostile stream kills the child and not us, and the pipe costs
//! little (bench/stream.py measures decode-to-pipe against decode-to-null). PPM rather than
//! raw video because each frame carries its own size, so a stream that changes resolution
//! mid-way stays readable.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strix_vision::{DecodeLimits, RgbImage, decode_file, is_image_path};

use crate::error::StreamError;

/// Network schemes handed to FFmpeg.
const NETWORK_SCHEMES: [&str; 10] = ["rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp"];
/// Largest frame accepted from a source (a corrupt header must not allocate gigabytes).
const MAX_FRAME_PIXELS: u64 = 8192 * 8192;

/// A source as the user named it.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    /// A video file (anything FFmpeg reads).
    File(PathBuf),
    /// Images in a folder, in name order.
    Folder(PathBuf),
    /// An RTSP / HTTP / RTMP / UDP... URL.
    Network(String),
    /// A V4L2 camera device such as /dev/video0.
    Camera(PathBuf),
}

impl SourceKind {
    /// Parse a source argument; files and folders must exist.
    pub fn parse(s: &str) -> Result<SourceKind, StreamError> {
        if let Some((scheme, rest)) = s.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme == "file" {
                return SourceKind::parse(rest);
            }
            if NETWORK_SCHEMES.contains(&scheme.as_str()) {
                return Ok(SourceKind::Network(s.to_string()));
            }
            return Err(StreamError::source(
                s,
                format!("unsupported scheme {scheme}:// (use one of {})", NETWORK_SCHEMES.join(", ")),
            ));
        }
        let path = PathBuf::from(s);
        if s.starts_with("/dev/video") {
            return Ok(SourceKind::Camera(path));
        }
        let meta = std::fs::metadata(&path).map_err(|_| StreamError::Missing(path.clone()))?;
        if meta.is_dir() {
            return Ok(SourceKind::Folder(path));
        }
        // Opening it now turns a permission problem into a clear error before FFmpeg starts.
        std::fs::File::open(&path).map_err(|e| StreamError::source(s, format!("cannot read: {e}")))?;
        Ok(SourceKind::File(path))
    }

    /// Live sources produce frames whether or not we keep up; files and folders wait for us.
    pub fn is_live(&self) -> bool {
        matches!(self, SourceKind::Network(_) | SourceKind::Camera(_))
    }

    /// Short name for logs, events and the page.
    pub fn name(&self) -> String {
        match self {
            SourceKind::File(p) | SourceKind::Folder(p) | SourceKind::Camera(p) => p.display().to_string(),
            SourceKind::Network(url) => strix_core::redact(url),
        }
    }
}

/// How to read a source.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Play files at their own frame rate (FFmpeg's `-re`), as a camera would deliver them.
    pub realtime: bool,
    /// Start a file again at its end, forever (soak tests, demos).
    pub loop_file: bool,
    /// Reconnect attempts after a network source drops; a frame read resets the count.
    pub reconnect: u32,
    /// First wait before reconnecting; doubles each attempt up to 10 s.
    pub backoff: Duration,
    /// Give up on a network source that sends nothing for this long.
    pub read_timeout: Duration,
    /// Frame rate assumed for folders of images (their timestamps are index / fps).
    pub folder_fps: f64,
    /// The `ffmpeg` program.
    pub ffmpeg: PathBuf,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            realtime: false,
            loop_file: false,
            reconnect: 5,
            backoff: Duration::from_millis(500),
            read_timeout: Duration::from_secs(10),
            folder_fps: 10.0,
            ffmpeg: PathBuf::from("ffmpeg"),
        }
    }
}

/// What is known about a source before reading it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceInfo {
    /// Frames per second, when the container says.
    pub fps: Option<f64>,
    /// Frames in a file or folder, when known.
    pub frames: Option<u64>,
}

/// One decoded frame and when it arrived.
#[derive(Debug)]
pub struct RawFrame {
    pub image: RgbImage,
    /// Seconds into the source: the frame's position for files, time since start for live ones.
    pub time_s: f64,
    pub arrived: Instant,
}

/// Something a source tells the run besides frames.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceNotice {
    /// The connection dropped; `attempt` of the allowed reconnects starts after `wait`.
    Lost {
        reason: String,
        attempt: u32,
        wait: Duration,
    },
    Reconnected,
}

/// Reads frames from one source, reconnecting network sources with backoff.
pub struct Source {
    kind: SourceKind,
    options: SourceOptions,
    info: SourceInfo,
    reader: Option<Reader>,
    started: Instant,
    index: u64,
    stop: Arc<AtomicBool>,
    /// The FFmpeg child, shared so [`SourceStopper::stop`] can kill it while a read blocks.
    child: Arc<Mutex<Option<Child>>>,
}

/// Stops a [`Source`] from another thread, unblocking a read in progress.
#[derive(Clone)]
pub struct SourceStopper {
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
}

impl SourceStopper {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = child.kill();
        }
    }
}

enum Reader {
    Ffmpeg { stdout: BufReader<ChildStdout>, stderr: Arc<Mutex<VecDeque<String>>> },
    Folder { files: Vec<PathBuf>, next: usize },
}

impl Source {
    /// Check the source and learn what can be known up front (frame rate and count of files).
    pub fn open(kind: SourceKind, options: SourceOptions) -> Result<Source, StreamError> {
        let info = match &kind {
            SourceKind::File(path) => probe(path, &options)?,
            SourceKind::Folder(dir) => {
                let files = folder_images(dir)?;
                SourceInfo { fps: Some(options.folder_fps), frames: Some(files.len() as u64) }
            }
            _ => SourceInfo::default(),
        };
        Ok(Source {
            kind,
            options,
            info,
            reader: None,
            started: Instant::now(),
            index: 0,
            stop: Arc::new(AtomicBool::new(false)),
            child: Arc::new(Mutex::new(None)),
        })
    }

    pub fn kind(&self) -> &SourceKind {
        &self.kind
    }

    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    pub fn stopper(&self) -> SourceStopper {
        SourceStopper { stop: self.stop.clone(), child: self.child.clone() }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The next frame; `None` at the end (or once stopped). Network sources that drop are
    /// reconnected (each try reported through `notice`) until the attempts run out.
    pub fn next_frame(&mut self, notice: &mut dyn FnMut(SourceNotice)) -> Result<Option<RawFrame>, StreamError> {
        let mut attempt = 0u32;
        loop {
            if self.stopped() {
                return Ok(None);
            }
            if self.reader.is_none() {
                self.reader = Some(self.start()?);
            }
            match self.read_one() {
                Ok(Some(image)) => {
                    if attempt > 0 {
                        notice(SourceNotice::Reconnected);
                    }
                    let time_s = match (&self.kind, self.info.fps) {
                        (SourceKind::File(_) | SourceKind::Folder(_), Some(fps)) if fps > 0.0 => {
                            self.index as f64 / fps
                        }
                        _ => self.started.elapsed().as_secs_f64(),
                    };
                    self.index += 1;
                    return Ok(Some(RawFrame { image, time_s, arrived: Instant::now() }));
                }
                Ok(None) if !self.kind.is_live() => return Ok(None),
                Ok(None) if self.stopped() => return Ok(None),
                // A stop kills FFmpeg, which may cut a frame in half: not an error.
                _ if self.stopped() => return Ok(None),
                result => {
                    // Reasons reach events, webhooks, MQTT and the page: no passwords in them.
                    let reason = strix_core::redact(&match result {
                        Err(StreamError::Source { message, .. }) => message,
                        Err(e) => e.to_string(),
                        _ => "the stream ended".to_string(),
                    });
                    if !self.kind.is_live() || attempt >= self.options.reconnect {
                        let tries = if self.kind.is_live() {
                            format!(" (after {attempt} reconnect attempts)")
                        } else {
                            String::new()
                        };
                        return Err(StreamError::source(&self.kind.name(), format!("{reason}{tries}")));
                    }
                    attempt += 1;
                    let wait = (self.options.backoff * 2u32.saturating_pow(attempt - 1)).min(Duration::from_secs(10));
                    notice(SourceNotice::Lost { reason, attempt, wait });
                    self.sleep(wait);
                }
            }
        }
    }

    /// Sleep, waking early when stopped.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
        }
    }

    fn start(&mut self) -> Result<Reader, StreamError> {
        if let SourceKind::Folder(dir) = &self.kind {
            return Ok(Reader::Folder { files: folder_images(dir)?, next: 0 });
        }
        let mut cmd = Command::new(&self.options.ffmpeg);
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
        match &self.kind {
            SourceKind::File(path) => {
                if self.options.loop_file {
                    cmd.args(["-stream_loop", "-1"]);
                }
                if self.options.realtime {
                    cmd.arg("-re");
                }
                cmd.arg("-i").arg(path);
            }
            SourceKind::Network(url) => {
                let micros = self.options.read_timeout.as_micros().to_string();
                if url.starts_with("rtsp") {
                    // TCP: no lost packets smearing frames; `timeout` bounds a dead server.
                    cmd.args(["-rtsp_transport", "tcp", "-timeout", &micros]);
                } else {
                    cmd.args(["-rw_timeout", &micros]);
                }
                // FFmpeg probes 5 s of a live stream before its first frame by default.
                cmd.args(["-analyzeduration", "500000", "-i", url]);
            }
            SourceKind::Camera(dev) => {
                cmd.args(["-f", "v4l2", "-i"]).arg(dev);
            }
            SourceKind::Folder(_) => unreachable!("handled above"),
        }
        // Every decoded frame, unaltered in number (no duplication to a constant rate;
        // `-fps_mode` needs FFmpeg 5.1 or later).
        cmd.args(["-map", "0:v:0", "-fps_mode", "passthrough", "-f", "image2pipe", "-c:v", "ppm", "-"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|error| StreamError::Spawn { program: self.options.ffmpeg.display().to_string(), error })?;
        let stdout =
            child.stdout.take().ok_or_else(|| StreamError::source(&self.kind.name(), "no pipe from ffmpeg"))?;
        let stderr_pipe = child.stderr.take();
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = stderr_pipe {
            let tail = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == 8 {
                        t.pop_front();
                    }
                    // FFmpeg repeats the URL, password included, in its messages.
                    t.push_back(strix_core::redact(&line));
                }
            });
        }
        let mut slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut old) = slot.replace(child) {
            let _ = old.kill();
            let _ = old.wait();
        }
        if self.stopped()
            && let Some(c) = slot.as_mut()
        {
            let _ = c.kill();
        }
        Ok(Reader::Ffmpeg { stdout: BufReader::with_capacity(1 << 20, stdout), stderr })
    }

    /// One frame from the current reader; `Ok(None)` at a clean end. A failure drops the
    /// reader so the next call starts afresh.
    fn read_one(&mut self) -> Result<Option<RgbImage>, StreamError> {
        let name = self.kind.name();
        let result = match self.reader.as_mut() {
            Some(Reader::Folder { files, next }) => {
                let Some(path) = files.get(*next) else { return Ok(None) };
                *next += 1;
                decode_file(path, &DecodeLimits::default()).map(Some).map_err(StreamError::from)
            }
            Some(Reader::Ffmpeg { stdout, .. }) => read_ppm(stdout).map_err(|e| StreamError::source(&name, e)),
            None => return Ok(None),
        };
        match result {
            Ok(Some(img)) => Ok(Some(img)),
            Ok(None) => {
                // The pipe ended: a clean end only if FFmpeg says so.
                let failure = self.finish_child();
                self.reader = None;
                match failure {
                    Some(message) if !self.stopped() => Err(StreamError::source(&name, message)),
                    _ => Ok(None),
                }
            }
            Err(e) => {
                let detail = self.finish_child();
                self.reader = None;
                Err(match detail {
                    Some(message) => StreamError::source(&name, message),
                    None => e,
                })
            }
        }
    }

    /// Reap the FFmpeg child; what went wrong if it failed.
    fn finish_child(&mut self) -> Option<String> {
        let stderr = match &self.reader {
            Some(Reader::Ffmpeg { stderr, .. }) => stderr.clone(),
            _ => return None,
        };
        let mut slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let mut child = slot.take()?;
        drop(slot);
        // FFmpeg closes its output just before it exits; give it a moment to say how it ended,
        // and stop one that keeps running without sending more.
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    break child.wait().ok()?;
                }
            }
        };
        if status.success() {
            return None;
        }
        // The stderr reader may still be draining the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let lines: Vec<String> = stderr.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        let said = lines.iter().rev().find(|l| !l.trim().is_empty()).cloned();
        Some(match said {
            Some(line) => format!("ffmpeg could not read it: {}", line.trim()),
            None => format!("ffmpeg stopped ({status})"),
        })
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The images of a folder in name order (not recursive).
fn folder_images(dir: &Path) -> Result<Vec<PathBuf>, StreamError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StreamError::source(&dir.display().to_string(), e.to_string()))?;
    let mut files: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_image_path(p)).collect();
    files.sort();
    if files.is_empty() {
        return Err(StreamError::source(&dir.display().to_string(), "no images in this folder"));
    }
    Ok(files)
}

/// Frame rate and count of a file, from ffprobe beside ffmpeg; an error if it has no video.
fn probe(path: &Path, options: &SourceOptions) -> Result<SourceInfo, StreamError> {
    let ffprobe = options.ffmpeg.with_file_name(
        options.ffmpeg.file_name().map(|n| n.to_string_lossy().replace("ffmpeg", "ffprobe")).unwrap_or_default(),
    );
    let out = Command::new(&ffprobe)
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=avg_frame_rate,r_frame_rate,nb_frames",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| StreamError::Spawn { program: ffprobe.display().to_string(), error })?;
    let name = path.display().to_string();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("not a video");
        return Err(StreamError::source(&name, format!("not a readable video: {}", line.trim())));
    }
    if text.trim().is_empty() {
        return Err(StreamError::source(&name, "not a video: it has no video stream"));
    }
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::trim));
    let rate = |s: &str| {
        let (n, d) = s.split_once('/').unwrap_or((s, "1"));
        let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
        (n > 0.0 && d > 0.0).then(|| n / d)
    };
    let fps = field("avg_frame_rate").and_then(rate).or_else(|| field("r_frame_rate").and_then(rate));
    let frames = field("nb_frames").and_then(|s| s.parse().ok());
    Ok(SourceInfo { fps, frames })
}

/// One binary PPM (P6, maxval 255) from FFmpeg's pipe; `Ok(None)` at end of stream.
pub fn read_ppm(r: &mut impl BufRead) -> Result<Option<RgbImage>, String> {
    if r.fill_buf().map_err(|e| e.to_string())?.is_empty() {
        return Ok(None);
    }
    let mut fields = [0u64; 3];
    let mut magic = [0u8; 2];
    r.read_exact(&mut magic).map_err(|e| format!("truncated frame header: {e}"))?;
    if &magic != b"P6" {
        return Err("unexpected data from ffmpeg (not a PPM frame)".into());
    }
    for f in &mut fields {
        *f = ppm_number(r)?;
    }
    let [w, h, maxval] = fields;
    if maxval != 255 {
        return Err(format!("unexpected PPM depth {maxval}"));
    }
    // Checked: two header numbers of 11 digits each overflow a u64 product.
    if w == 0 || h == 0 || w.checked_mul(h).is_none_or(|n| n > MAX_FRAME_PIXELS) {
        return Err(format!("frame of {w}x{h} pixels is out of range"));
    }
    let mut data = vec![0u8; (w * h * 3) as usize];
    r.read_exact(&mut data).map_err(|e| format!("truncated frame: {e}"))?;
    RgbImage::from_raw(w as u32, h as u32, data).map(Some).ok_or_else(|| "bad frame size".to_string())
}

/// A decimal header field: leading whitespace, digits, then exactly one whitespace byte.
fn ppm_number(r: &mut impl BufRead) -> Result<u64, String> {
    let mut byte = [0u8; 1];
    let mut value: Option<u64> = None;
    loop {
        r.read_exact(&mut byte).map_err(|e| format!("truncated frame header: {e}"))?;
        let b = byte[0];
        if b.is_ascii_digit() {
            let v = value.unwrap_or(0).checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0')));
            value = Some(v.ok_or("frame header number too large")?);
        } else if b.is_ascii_whitespace() {
            if let Some(v) = value {
                return Ok(v);
            }
        } else {
            return Err(format!("bad byte {b:#x} in a frame header"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(w: u32, h: u32, fill: u8) -> Vec<u8> {
        let mut v = format!("P6\n{w} {h}\n255\n").into_bytes();
        v.extend(std::iter::repeat_n(fill, (w * h * 3) as usize));
        v
    }

    /// Issue 36 (the PPM fuzz target): sizes whose product overflows were a panic (an
    /// overflow in debug builds, a wrapped product passing the check in release).
    #[test]
    fn a_frame_header_whose_size_overflows_is_refused() {
        for header in ["P6\n99999999999 99999999999\n255\n", "P6 4294967296 4294967297 255 "] {
            let mut r = std::io::BufReader::new(header.as_bytes());
            let e = read_ppm(&mut r).unwrap_err();
            assert!(e.contains("out of range"), "{header:?}: {e}");
        }
    }

    #[test]
    fn reads_successive_ppm_frames_of_changing_size() {
        let mut data = ppm(4, 2, 7);
        data.extend(ppm(2, 3, 9));
        let mut r = BufReader::new(&data[..]);
        let a = read_ppm(&mut r).unwrap().unwrap();
        assert_eq!((a.width(), a.height(), a.get_pixel(3, 1)[2]), (4, 2, 7));
        let b = read_ppm(&mut r).unwrap().unwrap();
        assert_eq!((b.width(), b.height(), b.get_pixel(1, 2)[0]), (2, 3, 9));
        assert!(read_ppm(&mut r).unwrap().is_none());
    }

    #[test]
    fn refuses_truncated_and_absurd_frames() {
        let data = ppm(4, 2, 7);
        assert!(read_ppm(&mut BufReader::new(&data[..data.len() - 1])).unwrap_err().contains("truncated"));
        let huge = b"P6\n100000 100000\n255\n".to_vec();
        assert!(read_ppm(&mut BufReader::new(&huge[..])).unwrap_err().contains("out of range"));
        assert!(read_ppm(&mut BufReader::new(&b"GIF89a"[..])).is_err());
    }

    #[test]
    fn parses_sources_and_redacts_passwords() {
        assert_eq!(
            SourceKind::parse("rtsp://cam.local/live").unwrap(),
            SourceKind::Network("rtsp://cam.local/live".into())
        );
        assert_eq!(SourceKind::parse("/dev/video0").unwrap(), SourceKind::Camera("/dev/video0".into()));
        assert!(matches!(SourceKind::parse("/no/such/file.mp4"), Err(StreamError::Missing(_))));
        assert!(SourceKind::parse("gopher://x").unwrap_err().to_string().contains("unsupported scheme"));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(SourceKind::parse(dir.path().to_str().unwrap()).unwrap(), SourceKind::Folder(_)));
        assert_eq!(
            SourceKind::parse("rtsp://admin:hunter2@10.0.0.5:554/s").unwrap().name(),
            "rtsp://admin:***@10.0.0.5:554/s"
        );
    }
}
