//! Which tasks Strix trains: the one place a task is registered. Each arm names a
//! [`TrainTask`]; everything else about a run is the lifecycle's.

use std::path::Path;

use strix_core::Task;

use crate::lifecycle::{self, TrainTask};
use crate::observe::Observer;
use crate::summary::RunSummary;
use crate::{TrainConfig, TrainError, classify::Classify, detect::Detect};

/// The tasks `strix train` takes.
pub const TASKS: [Task; 2] = [Task::Classify, Task::Detect];

fn unsupported(task: Task) -> TrainError {
    let names: Vec<&str> = TASKS.iter().map(|t| t.as_str()).collect();
    TrainError::Config(format!("strix trains {} models, not {}", names.join(" and "), task.as_str()))
}

/// Start a new run of the config's task.
pub fn train(cfg: TrainConfig, observer: &dyn Observer) -> Result<RunSummary, TrainError> {
    match cfg.task {
        Task::Classify => lifecycle::start::<Classify>(cfg, observer),
        Task::Detect => lifecycle::start::<Detect>(cfg, observer),
        other => Err(unsupported(other)),
    }
}

/// Continue the run in `run_dir` from its last checkpoint.
pub fn resume(run_dir: &Path, observer: &dyn Observer) -> Result<RunSummary, TrainError> {
    match crate::files::saved_config(run_dir)?.task {
        Task::Classify => lifecycle::resume::<Classify>(run_dir, observer),
        Task::Detect => lifecycle::resume::<Detect>(run_dir, observer),
        other => Err(unsupported(other)),
    }
}

/// Settings whose default differs by task, as a layer under the config file and the flags.
pub fn task_defaults(task: Task) -> Result<toml::Table, TrainError> {
    match task {
        Task::Classify => Ok(Classify::defaults()),
        Task::Detect => Ok(Detect::defaults()),
        other => Err(unsupported(other)),
    }
}

/// The zoo model a run of `task` starts from when it names no weights.
pub fn default_pretrained(task: Task) -> Option<&'static str> {
    match task {
        Task::Classify => Classify::DEFAULT_PRETRAINED,
        Task::Detect => Detect::DEFAULT_PRETRAINED,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::METRICS_FILE;
    use crate::observe::{Control, EpochEnd, Metrics};
    use crate::summary::{Scores, Stopped};

    #[test]
    fn every_registered_task_has_defaults_and_others_are_refused() {
        for t in TASKS {
            assert!(task_defaults(t).is_ok());
        }
        assert_eq!(task_defaults(Task::Detect).unwrap()["image_size"].as_integer(), Some(320));
        let e = task_defaults(Task::Pose).unwrap_err().to_string();
        assert!(e.contains("classify and detect") && e.contains("pose"), "{e}");
    }

    /// Two colours of real PNG files, a class each.
    fn two_colours(dir: &Path) {
        for (class, rgb) in [("red", [200u8, 30, 30]), ("blue", [30, 30, 200])] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in 0..8u8 {
                let px = image::Rgb([rgb[0].saturating_add(i * 3), rgb[1], rgb[2].saturating_sub(i * 2)]);
                image::RgbImage::from_pixel(20, 20, px).save(dir.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
    }

    /// Stops after the epoch it is told, and keeps what it saw.
    struct StopAfter(usize, std::sync::Mutex<Vec<Metrics>>);

    impl Observer for StopAfter {
        fn epoch_start(&self, _: usize, _: usize, _: usize, _: usize) {}
        fn batch(&self, _: usize, _: f64, _: Option<f64>) {}
        fn epoch_end(&self, end: &EpochEnd<'_>) -> Control {
            self.1.lock().unwrap().push(end.metrics.clone());
            if end.epoch >= self.0 {
                Control::Stop(format!("told to stop after epoch {}", self.0))
            } else {
                Control::Continue
            }
        }
        fn phase(&self, _: &str) {}
    }

    /// Interrupts the run after `0` batches, counting the checkpoints it is told of.
    struct InterruptAfter(usize, std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize);

    impl Observer for InterruptAfter {
        fn epoch_start(&self, _: usize, _: usize, _: usize, _: usize) {}
        fn batch(&self, _: usize, _: f64, _: Option<f64>) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn epoch_end(&self, _: &EpochEnd<'_>) -> Control {
            Control::Continue
        }
        fn phase(&self, _: &str) {}
        fn interrupted(&self) -> bool {
            self.1.load(std::sync::atomic::Ordering::Relaxed) >= self.0
        }
        fn checkpoint_saved(&self) {
            self.2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// An observer that says "interrupted" ends the run at once with its checkpoint saved (what
    /// a worker handing its task back relies on); resuming finishes it.
    #[test]
    fn an_interrupted_run_keeps_its_checkpoint_and_resumes() {
        let tmp = tempfile::tempdir().unwrap();
        two_colours(&tmp.path().join("data"));
        let run = tmp.path().join("run");
        let text = format!(
            "data = {:?}\nrun_dir = {run:?}\nmodel = \"small-cnn\"\nepochs = 2\nbatch_size = 4\nval_fraction = 0.25\ntest = false\n",
            tmp.path().join("data"),
        );
        let cfg = TrainConfig::from_toml(&text, Path::new("t.toml")).unwrap();
        // 12 training images in batches of 4: 3 per epoch; stop inside the second epoch.
        let observer = InterruptAfter(4, Default::default(), Default::default());
        let e = train(cfg, &observer).unwrap_err();
        assert!(matches!(e, TrainError::Interrupted { epoch: 2, .. }), "{e}");
        // Epoch 1's end and the interruption.
        assert_eq!(observer.2.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(run.join(crate::files::CHECKPOINT_FILE).is_file() && !run.join(crate::files::SUMMARY_FILE).exists());
        let summary = resume(&run, &crate::observe::Quiet).unwrap();
        assert_eq!((summary.epochs_run, summary.stopped.clone()), (2, Stopped::Completed));
    }

    /// The observer's answer ends a real run: the best model so far is evaluated, and the
    /// summary says who stopped it. What a tuner stopping a trial relies on.
    #[test]
    fn an_observer_stops_a_run_and_the_summary_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        two_colours(&tmp.path().join("data"));
        let text = format!(
            "data = {:?}\nrun_dir = {:?}\nmodel = \"small-cnn\"\nepochs = 5\nbatch_size = 4\nval_fraction = 0.25\ntest = false\n",
            tmp.path().join("data"),
            tmp.path().join("run")
        );
        let cfg = TrainConfig::from_toml(&text, Path::new("t.toml")).unwrap();
        let observer = StopAfter(2, std::sync::Mutex::new(Vec::new()));
        let summary = train(cfg, &observer).unwrap();
        assert_eq!(summary.epochs_run, 2);
        assert_eq!(summary.stopped, Stopped::Observer { reason: "told to stop after epoch 2".into() });
        assert!(matches!(summary.val, Scores::Classify { images: 4, .. }), "{:?}", summary.val);
        let seen = observer.1.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for name in ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_top5", "lr"] {
            assert!(seen[1].get(name).is_some_and(f64::is_finite), "{name} in {:?}", seen[1]);
        }
        assert_eq!(RunSummary::read(&tmp.path().join("run")).unwrap(), summary);
        let metrics = std::fs::read_to_string(tmp.path().join("run").join(METRICS_FILE)).unwrap();
        assert_eq!(metrics.lines().count(), 2);
        // A finished run is not started again over itself.
        let again = TrainConfig::from_toml(&text, Path::new("t.toml")).unwrap();
        let e = train(again, &crate::observe::Quiet).unwrap_err().to_string();
        assert!(e.contains("already holds a run"), "{e}");
    }
}
