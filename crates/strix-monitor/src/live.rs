//! Monitoring while a model serves or streams: each answer (with its image) goes into a rolling
//! window on the monitor's own thread, and the window is tested against the baseline every
//! `every` answers. The caller's path only copies and queues; a full queue drops the answer
//! (counted), so a monitor never slows a request or a frame.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::RgbImage;
use serde::Serialize;
use strix_core::Answer;

use crate::baseline::{Baseline, Observation};
use crate::drift::{Check, check_window};

/// How the window is kept and tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveSettings {
    /// Answers in the window.
    pub window: usize,
    /// Answers between two tests (once the window holds that many).
    pub every: usize,
    /// Seed of the MMD permutations.
    pub seed: u64,
}

/// The embedding of an image, when the baseline has embeddings (the binary runs the model).
pub type Embedder = Box<dyn Fn(&RgbImage) -> Option<Vec<f32>> + Send>;
/// Told after each test: the status, and the checks that found drift (may be empty).
pub type OnCheck = Box<dyn Fn(&MonitorStatus, &[Check]) + Send>;

/// What the monitor knows now.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MonitorStatus {
    pub model: String,
    pub baseline: String,
    pub window_size: usize,
    /// Answers in the window now.
    pub window: usize,
    pub answers: u64,
    /// Answers not taken: the queue was full, or the image did not decode for the monitor.
    pub dropped: u64,
    pub tests: u64,
    pub violations_total: u64,
    pub violations_by_feature: BTreeMap<String, u64>,
    /// The latest test's checks (all features), and when it ran (Unix milliseconds).
    pub last: Vec<Check>,
    pub last_at_ms: Option<i64>,
}

enum Item {
    Encoded(Vec<u8>, Answer, u32, u32),
    Frame(RgbImage, Answer, u32, u32),
}

/// A running monitor of one model.
pub struct LiveMonitor {
    model: String,
    tx: Mutex<Option<SyncSender<Item>>>,
    status: Arc<Mutex<MonitorStatus>>,
    dropped: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LiveMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveMonitor").field("model", &self.model).finish()
    }
}

/// Answers waiting for the monitor's thread.
const QUEUE: usize = 64;

impl LiveMonitor {
    /// Start watching `model`'s answers against `baseline` (named `baseline_name` in status).
    pub fn start(
        model: &str,
        baseline: Baseline,
        baseline_name: &str,
        settings: LiveSettings,
        embedder: Option<Embedder>,
        on_check: OnCheck,
    ) -> LiveMonitor {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let status = Arc::new(Mutex::new(MonitorStatus {
            model: model.to_string(),
            baseline: baseline_name.to_string(),
            window_size: settings.window.max(1),
            ..MonitorStatus::default()
        }));
        let dropped = Arc::new(AtomicU64::new(0));
        let worker =
            Worker { baseline, settings, embedder, on_check, status: status.clone(), dropped: dropped.clone() };
        let thread = std::thread::Builder::new().name("strix-monitor".into()).spawn(move || worker.run(rx)).ok();
        LiveMonitor { model: model.to_string(), tx: Mutex::new(Some(tx)), status, dropped, thread: Mutex::new(thread) }
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The status as of now.
    pub fn status(&self) -> MonitorStatus {
        let mut s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        s.dropped = self.dropped.load(Ordering::Relaxed);
        s
    }

    fn offer(&self, item: Item) {
        let Ok(tx) = self.tx.lock() else { return };
        // Closed (after close()): nothing is taken, nothing counted.
        if let Some(tx) = tx.as_ref()
            && tx.try_send(item).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An answer to an encoded image (a request body).
    pub fn encoded(&self, bytes: &[u8], answer: &Answer, width: u32, height: u32) {
        self.offer(Item::Encoded(bytes.to_vec(), answer.clone(), width, height));
    }

    /// An answer to a decoded frame.
    pub fn frame(&self, image: &RgbImage, answer: &Answer) {
        self.offer(Item::Frame(image.clone(), answer.clone(), image.width(), image.height()));
    }

    /// Stop taking answers, let the thread finish what is queued, and give the last status.
    pub fn close(&self) -> MonitorStatus {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
        self.status()
    }
}

struct Worker {
    baseline: Baseline,
    settings: LiveSettings,
    embedder: Option<Embedder>,
    on_check: OnCheck,
    status: Arc<Mutex<MonitorStatus>>,
    dropped: Arc<AtomicU64>,
}

impl Worker {
    fn run(self, rx: Receiver<Item>) {
        let mut window: VecDeque<Observation> = VecDeque::new();
        let size = self.settings.window.max(1);
        let every = self.settings.every.max(1) as u64;
        let limits = strix_vision::DecodeLimits::default();
        let mut answers = 0u64;
        for item in rx {
            let (img, answer, w, h) = match item {
                Item::Encoded(bytes, answer, w, h) => match strix_vision::decode_bytes(&bytes, &limits) {
                    Ok(img) => (img, answer, w, h),
                    Err(_) => {
                        // The model answered it, so it decoded there: a limit of ours, not drift.
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                },
                Item::Frame(img, answer, w, h) => (img, answer, w, h),
            };
            let mut o = Observation::of_image(&img).with_answer(&answer, w, h);
            if self.baseline.statistics.embeddings.is_some() {
                o.embedding = self.embedder.as_ref().and_then(|e| e(&img));
            }
            window.push_back(o);
            while window.len() > size {
                window.pop_front();
            }
            answers += 1;
            let due = answers.is_multiple_of(every) && window.len() as u64 >= every.min(size as u64);
            if let Ok(mut s) = self.status.lock() {
                s.answers = answers;
                s.window = window.len();
            }
            if due {
                self.test(window.make_contiguous(), answers);
            }
        }
    }

    fn test(&self, window: &[Observation], answers: u64) {
        let checks = check_window(&self.baseline, window, self.settings.seed.wrapping_add(answers));
        let drifted: Vec<Check> = checks.iter().filter(|c| c.drift).cloned().collect();
        let snapshot = {
            let Ok(mut s) = self.status.lock() else { return };
            s.tests += 1;
            s.violations_total += drifted.len() as u64;
            for c in &drifted {
                *s.violations_by_feature.entry(c.feature.clone()).or_default() += 1;
            }
            s.last = checks;
            s.last_at_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as i64);
            s.dropped = self.dropped.load(Ordering::Relaxed);
            s.clone()
        };
        (self.on_check)(&snapshot, &drifted);
    }
}

impl strix_pipeline::Tap for LiveMonitor {
    fn encoded(&self, bytes: &[u8], _model: &str, prediction: &strix_pipeline::Prediction) {
        LiveMonitor::encoded(self, bytes, &prediction.answer, prediction.width, prediction.height);
    }

    fn frame(&self, image: &RgbImage, _model: &str, prediction: &strix_pipeline::Prediction) {
        LiveMonitor::frame(self, image, &prediction.answer);
    }

    fn dropped(&self) -> Vec<(&'static str, u64)> {
        vec![("monitor_busy", self.dropped.load(Ordering::Relaxed))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{BaselineBuilder, Constraints};

    fn grey(level: u8) -> RgbImage {
        RgbImage::from_fn(32, 24, |x, y| image::Rgb([level.saturating_add(((x * 7 + y * 3) % 40) as u8); 3]))
    }

    fn labels(class: &str) -> Answer {
        Answer::Labels { classes: vec![strix_core::Class { label: class.into(), score: 0.9, class_id: 0 }] }
    }

    #[test]
    fn a_window_of_darker_images_is_a_violation_and_the_status_says_so() {
        let mut b = BaselineBuilder::new(500, 1);
        for i in 0..200u32 {
            let img = grey(100 + (i % 20) as u8);
            let o = Observation::of_image(&img).with_answer(&labels(["a", "b"][i as usize % 2]), 32, 24);
            b.add(&o).unwrap();
        }
        let (statistics, embeddings) = b.finish("m", "classify", None);
        let baseline = Baseline { statistics, constraints: Constraints::default(), embeddings };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let settings = LiveSettings { window: 40, every: 20, seed: 1 };
        let on_check: OnCheck = Box::new(move |_, drifted| {
            record.lock().unwrap().push(drifted.iter().map(|c| c.feature.clone()).collect::<Vec<_>>())
        });
        let monitor = LiveMonitor::start("m", baseline, "base", settings, None, on_check);
        for i in 0..40u32 {
            // Offered slower than the thread takes them: nothing is dropped.
            while monitor.status().answers < u64::from(i) {
                std::thread::yield_now();
            }
            monitor.frame(&grey(100 + (i % 20) as u8), &labels(["a", "b"][i as usize % 2]));
        }
        for i in 0..40u32 {
            while monitor.status().answers < u64::from(40 + i) {
                std::thread::yield_now();
            }
            monitor.frame(&grey(40 + (i % 20) as u8), &labels(["a", "b"][i as usize % 2]));
        }
        let status = monitor.close();
        let seen = seen.lock().unwrap();
        assert_eq!((status.answers, status.tests, status.dropped), (80, 4, 0), "{status:?}");
        assert!(seen[..2].iter().all(Vec::is_empty), "{seen:?}");
        assert!(seen[3].contains(&"brightness".to_string()), "{seen:?}");
        assert!(!seen[3].contains(&"predicted_class".to_string()), "{seen:?}");
        assert!(status.violations_by_feature.get("brightness").copied().unwrap_or(0) >= 1, "{status:?}");
    }
}
