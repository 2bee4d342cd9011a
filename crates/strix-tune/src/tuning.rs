//! A tuning job: a [`Study`] whose trials are training runs, `parallel` at a time in this
//! process, each in its own folder (`trial-000`, ...) and its own share of the threads. After
//! every epoch a trial reports its objective to the study, and the pruner may stop it there.
//!
//! The job's state (`tuning.json`: settings, base config, study, what each run did) is saved
//! after every epoch and every trial, atomically: a killed job resumes with [`run`] on the
//! saved state, its unfinished trials continued from their runs' checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use strix_train::files::{CHECKPOINT_FILE, METRICS_FILE};
use strix_train::observe::{Control, EpochEnd, Metrics, Observer};
use strix_train::{RunSummary, TrainConfig};

use crate::pruner::Pruner;
use crate::sampler::Sampler;
use crate::space::Params;
use crate::study::Outcome;
use crate::training::{TuneSettings, trial_config};
use crate::trial::TrialState;
use crate::{TuneError, error_chain};

pub use crate::report::REPORT_FILE;
pub use crate::state::{STATE_FILE, TrialRun, Tuning, trial_dir_name};

/// Hears how a tuning job goes; the CLI draws its bar from it. Called from the trials' threads.
pub trait TuningObserver: Sync {
    fn trial_started(&self, id: u64, params: &Params);
    /// Trial `id` finished `epoch` of `epochs` with this objective reading.
    fn trial_epoch(&self, id: u64, epoch: usize, epochs: usize, objective: f64);
    /// Trial `id` ended; `tuning` holds its outcome.
    fn trial_ended(&self, tuning: &Tuning, id: u64);
}

/// Where a trial's run is trained: in this process ([`InProcess`]) or elsewhere (a job queue).
pub trait Trainer: Sync {
    /// Train the run `cfg` describes (its `run_dir` set), or continue it from the checkpoint
    /// its folder holds, telling `observer` of each epoch as the one training loop does. A run
    /// the observer stopped may end in an error (a cancelled job): its trial counts as stopped.
    fn train(&self, cfg: TrainConfig, observer: &(dyn Observer + Sync)) -> Result<RunSummary, TuneError>;
}

/// Trains trials here, each on a pool of `threads`.
#[derive(Debug, Clone, Copy)]
pub struct InProcess {
    pub threads: usize,
}

impl Trainer for InProcess {
    fn train(&self, cfg: TrainConfig, observer: &(dyn Observer + Sync)) -> Result<RunSummary, TuneError> {
        let run_dir = cfg.run_dir.clone().unwrap_or_default();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .build()
            .map_err(|e| TuneError::InvalidSetting { what: "threads", reason: e.to_string() })?;
        let trained = pool.install(|| match run_dir.join(CHECKPOINT_FILE).exists() {
            true => strix_train::train::resume(&run_dir, observer),
            false => strix_train::train::train(cfg, observer),
        });
        trained.map_err(|e| TuneError::Train { what: format!("training {}", run_dir.display()), source: Box::new(e) })
    }
}

/// What the trials share: the job under a lock, the sampler, the pruner.
struct Shared<'a> {
    folder: &'a Path,
    state: Mutex<Tuning>,
    sampler: Mutex<Box<dyn Sampler>>,
    pruner: Box<dyn Pruner>,
    /// A mistake that dooms every trial (an objective the task does not measure): all stop.
    fatal: Mutex<Option<TuneError>>,
    observer: &'a dyn TuningObserver,
}

impl Shared<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tuning> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn doomed(&self) -> bool {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn fail(&self, e: TuneError) {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }

    /// Saves the state and the report; a failure to save ends the job.
    fn save(&self, tuning: &Tuning) {
        let saved = tuning.save(self.folder).and_then(|()| crate::report::write(self.folder, tuning));
        if let Err(e) = saved {
            self.fail(e);
        }
    }

    /// The next trial to train: one a killed job left running, else a new one while the study
    /// wants more; with whether it is resumed.
    fn next(&self, resumed: &Mutex<Vec<u64>>) -> Result<Option<(u64, Params, bool)>, TuneError> {
        if self.doomed() {
            return Ok(None);
        }
        let mut tuning = self.lock();
        if let Some(id) = resumed.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            let params = tuning.study.trial(id).map(|t| t.params.clone()).unwrap_or_default();
            return Ok(Some((id, params, true)));
        }
        if tuning.study.trials().len() >= tuning.settings.trials {
            return Ok(None);
        }
        let mut sampler = self.sampler.lock().unwrap_or_else(|p| p.into_inner());
        let (id, params) = tuning.study.ask(sampler.as_mut())?;
        self.save(&tuning);
        Ok(Some((id, params, false)))
    }
}

/// Runs the job in `folder` until the study has all its trials, each trained here on its
/// share of the threads; the job as it ended. Trials the state holds as running (a killed
/// job's) are continued first.
pub fn run(folder: &Path, tuning: Tuning, observer: &dyn TuningObserver) -> Result<Tuning, TuneError> {
    let threads = (tuning.settings.threads / tuning.settings.parallel).max(1);
    run_with(folder, tuning, &InProcess { threads }, observer)
}

/// [`run`] with the trials trained by `trainer`.
pub fn run_with(
    folder: &Path,
    tuning: Tuning,
    trainer: &dyn Trainer,
    observer: &dyn TuningObserver,
) -> Result<Tuning, TuneError> {
    std::fs::create_dir_all(folder).map_err(TuneError::io(folder))?;
    let running: Vec<u64> =
        tuning.study.trials().iter().filter(|t| t.state == TrialState::Running).map(|t| t.id).rev().collect();
    let shared = Shared {
        folder,
        sampler: Mutex::new(tuning.settings.sampler()?),
        pruner: tuning.settings.pruner()?,
        state: Mutex::new(tuning),
        fatal: Mutex::new(None),
        observer,
    };
    shared.save(&shared.lock());
    let resumed = Mutex::new(running);
    let parallel = shared.lock().settings.parallel;
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| {
                loop {
                    match shared.next(&resumed) {
                        Ok(Some((id, params, resume))) => run_trial(&shared, id, &params, resume, trainer),
                        Ok(None) => break,
                        Err(e) => {
                            shared.fail(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = shared.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    Ok(shared.state.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Trains trial `id` with `trainer` and tells the study how it ended.
fn run_trial(shared: &Shared<'_>, id: u64, params: &Params, resume: bool, trainer: &dyn Trainer) {
    shared.observer.trial_started(id, params);
    let dir_name = trial_dir_name(id);
    let run_dir = shared.folder.join(&dir_name);
    let started = Instant::now();
    let objective = shared.lock().settings.objective.clone();
    let observer = TrialObserver { shared, id, objective, stopped: Mutex::new(None) };
    let trained = train_trial(shared, &run_dir, params, resume, trainer, &observer);
    let mut run = TrialRun { dir: dir_name, seconds: started.elapsed().as_secs_f64(), ..Default::default() };
    let mut tuning = shared.lock();
    let mut pruned = observer.stopped.lock().unwrap_or_else(|p| p.into_inner()).take();
    // A run the pruner stopped before a kill, read back finished: only the tuner stops trials.
    if let Ok(RunSummary { stopped: strix_train::summary::Stopped::Observer { reason }, .. }) = &trained {
        pruned = pruned.or(Some(reason.clone()));
    }
    let outcome = match (pruned, trained) {
        // Stopped by the pruner: how its run ended (a cancelled job) does not matter.
        (Some(reason), trained) => {
            run.epochs =
                trained.map_or_else(|_| tuning.study.trial(id).map_or(0, |t| t.intermediate.len()), |s| s.epochs_run);
            run.stopped = Some(reason);
            Outcome::Pruned
        }
        (None, Ok(summary)) => {
            run.epochs = summary.epochs_run;
            run.stopped = summary.stopped_note();
            match best_reading(&run_dir, &tuning.settings) {
                Ok(Some(best)) => Outcome::Complete(tuning.settings.to_study(best)),
                Ok(None) => {
                    run.error = Some(format!("no epoch measured {}", tuning.settings.objective));
                    Outcome::Failed
                }
                Err(e) => {
                    run.error = Some(error_chain(&e));
                    Outcome::Failed
                }
            }
        }
        (None, Err(e)) => {
            run.error = Some(error_chain(&e));
            Outcome::Failed
        }
    };
    if let Err(e) = tuning.study.tell(id, outcome) {
        shared.fail(e);
    }
    tuning.runs.insert(id, run);
    shared.save(&tuning);
    shared.observer.trial_ended(&tuning, id);
}

/// The trial's training run: started, continued from its checkpoint, or (finished before a
/// kill) read back.
fn train_trial(
    shared: &Shared<'_>,
    run_dir: &Path,
    params: &Params,
    resume: bool,
    trainer: &dyn Trainer,
    observer: &TrialObserver<'_>,
) -> Result<RunSummary, TuneError> {
    if resume {
        let finished = RunSummary::read_if_finished(run_dir)
            .map_err(|e| TuneError::Train { what: "the finished run".into(), source: Box::new(e) })?;
        if let Some(summary) = finished {
            return Ok(summary);
        }
        if !run_dir.join(CHECKPOINT_FILE).exists() && run_dir.exists() {
            // Killed before its first checkpoint: nothing to keep.
            std::fs::remove_dir_all(run_dir).map_err(TuneError::io(run_dir))?;
        }
    }
    let cfg = trial_config(&shared.lock().base, params, run_dir)?;
    trainer.train(cfg, observer)
}

/// The best objective reading over the epochs the run recorded (`metrics.jsonl`).
fn best_reading(run_dir: &Path, settings: &TuneSettings) -> Result<Option<f64>, TuneError> {
    let path = run_dir.join(METRICS_FILE);
    let text = std::fs::read_to_string(&path).map_err(TuneError::io(&path))?;
    let mut best: Option<f64> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let record: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TuneError::InvalidState { path: path.clone(), reason: e.to_string() })?;
        let Some(v) = Metrics::of_record(&record).get(&settings.objective).filter(|v| v.is_finite()) else { continue };
        let better = best.is_none_or(|b| settings.to_study(v) < settings.to_study(b));
        if better {
            best = Some(v);
        }
    }
    Ok(best)
}

/// Reports each epoch's objective to the study, and stops the run when the pruner says so.
struct TrialObserver<'a> {
    shared: &'a Shared<'a>,
    id: u64,
    objective: String,
    /// Why the pruner stopped the trial.
    stopped: Mutex<Option<String>>,
}

impl Observer for TrialObserver<'_> {
    fn epoch_start(&self, _: usize, _: usize, _: usize, _: usize) {}
    fn batch(&self, _: usize, _: f64, _: Option<f64>) {}
    fn phase(&self, _: &str) {}

    fn epoch_end(&self, end: &EpochEnd<'_>) -> Control {
        if self.shared.doomed() {
            return Control::Stop("the tuning job is stopping".into());
        }
        let Some(value) = end.metrics.get(&self.objective) else {
            let names: Vec<&str> = end.metrics.names().collect();
            self.shared.fail(TuneError::InvalidSetting {
                what: "objective",
                reason: format!(
                    "{:?} is not measured by this task's epochs; they give {}",
                    self.objective,
                    names.join(", ")
                ),
            });
            return Control::Stop("the objective is not measured".into());
        };
        let mut tuning = self.shared.lock();
        let settings = tuning.settings.clone();
        let Some(trial) = tuning.study.trial(self.id) else { return Control::Continue };
        let step = end.epoch as u64;
        // A continued run repeats the epoch it was killed in before its checkpoint.
        if trial.intermediate.last_key_value().is_some_and(|(&last, _)| last >= step) {
            return Control::Continue;
        }
        let stop = if value.is_finite() {
            match tuning.study.report(self.id, step, settings.to_study(value), self.shared.pruner.as_ref()) {
                Ok(stop) => stop,
                Err(e) => {
                    self.shared.fail(e);
                    return Control::Stop("the study refused the report".into());
                }
            }
        } else {
            true
        };
        self.shared.save(&tuning);
        drop(tuning);
        self.shared.observer.trial_epoch(self.id, end.epoch, end.epochs, value);
        if stop && end.epoch < end.epochs {
            let reason = format!(
                "stopped early by {} at epoch {}: {} {value:.4}",
                settings.early_stopping.name(),
                end.epoch,
                self.objective
            );
            *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
            return Control::Stop(reason);
        }
        Control::Continue
    }
}

/// The folder's trial run of the best trial.
pub fn best_run_dir(folder: &Path, tuning: &Tuning) -> Option<PathBuf> {
    let (best, _) = tuning.best()?;
    Some(folder.join(trial_dir_name(best.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::SearchSpace;
    use crate::training::{EarlyStopping, Strategy};
    use strix_core::Task;

    /// Two colours of real PNG files, a class each.
    fn two_colours(dir: &Path) {
        for (class, rgb) in [("red", [200u8, 30, 30]), ("blue", [30, 30, 200])] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in 0..8u8 {
                let px = image::Rgb([rgb[0].saturating_add(i * 3), rgb[1], rgb[2].saturating_sub(i * 2)]);
                image::RgbImage::from_pixel(12, 12, px).save(dir.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
    }

    /// Keeps what it heard, in order.
    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl TuningObserver for Heard {
        fn trial_started(&self, id: u64, _: &Params) {
            self.0.lock().unwrap().push(format!("start {id}"));
        }
        fn trial_epoch(&self, id: u64, epoch: usize, _: usize, _: f64) {
            self.0.lock().unwrap().push(format!("epoch {id} {epoch}"));
        }
        fn trial_ended(&self, _: &Tuning, id: u64) {
            self.0.lock().unwrap().push(format!("end {id}"));
        }
    }

    fn job(data: &Path, objective: &str, trials: usize) -> Tuning {
        let base: toml::Table = toml::from_str(&format!(
            "data = {data:?}\nmodel = \"small-cnn\"\nepochs = 3\nbatch_size = 4\n\
             val_fraction = 0.25\ntest = false\nhflip = false\n"
        ))
        .unwrap();
        let space: SearchSpace = toml::from_str(
            "[lr]\ntype = \"float\"\nlow = 1e-4\nhigh = 0.3\nlog = true\n\
             [batch_size]\ntype = \"categorical\"\nchoices = [2, 4]\n",
        )
        .unwrap();
        let settings = TuneSettings {
            objective: objective.into(),
            maximize: TuneSettings::maximizes(objective),
            trials,
            parallel: 2,
            threads: 2,
            strategy: Strategy::Random,
            early_stopping: EarlyStopping::Asha,
            seed: 3,
        };
        Tuning::new("jtest-000001".into(), Task::Classify, settings, base, space).unwrap()
    }

    /// Real trials through the one training loop, two at a time: every epoch reported, each
    /// trial in its own run folder, the state and report saved; a job killed with a trial
    /// running goes on from the saved state, and asking for more trials adds them.
    #[test]
    fn trials_train_two_at_a_time_and_a_killed_job_goes_on_from_its_state() {
        let tmp = tempfile::tempdir().unwrap();
        two_colours(&tmp.path().join("data"));
        let folder = tmp.path().join("tune");
        let heard = Heard::default();
        let done = run(&folder, job(&tmp.path().join("data"), "val_loss", 4), &heard).unwrap();
        let (complete, pruned, failed) = done.counts();
        assert_eq!(complete + pruned + failed, 4, "{:?}", done.study.trials());
        assert!(complete >= 1, "{:?}", done.runs);
        for t in done.study.trials() {
            let run = &done.runs[&t.id];
            assert_eq!(run.dir, trial_dir_name(t.id));
            assert!(folder.join(&run.dir).join(METRICS_FILE).is_file(), "{run:?}");
            if t.state == TrialState::Pruned {
                assert!(run.stopped.as_deref().unwrap_or_default().contains("stopped early by asha"), "{run:?}");
                assert!(run.epochs < 3);
            }
            // The trial's value is its best epoch's reading.
            if t.state == TrialState::Complete {
                let best = t.intermediate.values().copied().fold(f64::INFINITY, f64::min);
                assert!((t.value.unwrap() - best).abs() < 1e-12, "{t:?}");
            }
        }
        let heard = heard.0.into_inner().unwrap();
        assert_eq!(heard.iter().filter(|l| l.starts_with("start")).count(), 4, "{heard:?}");
        assert!(heard.iter().any(|l| l.starts_with("epoch 0 1")), "{heard:?}");
        assert_eq!(Tuning::load(&folder).unwrap(), done);
        // The best run's folder comes from its trial's id, not from what the state file says:
        // an edited tuning.json cannot point the export and registration elsewhere.
        let mut tampered = done.clone();
        for r in tampered.runs.values_mut() {
            r.dir = "../../elsewhere".into();
        }
        let best = best_run_dir(&folder, &tampered).unwrap();
        assert_eq!(Some(&best), best_run_dir(&folder, &done).as_ref());
        assert_eq!(best.parent(), Some(folder.as_path()));
        let report = std::fs::read_to_string(folder.join(REPORT_FILE)).unwrap();
        assert!(report.contains("<svg") && report.contains("trial-003") && report.contains("lr against val_loss"));

        // A kill while trial 3 ran: its state says running, its run folder is finished.
        let mut killed = done.clone();
        let mut state: serde_json::Value = serde_json::to_value(&killed.study).unwrap();
        state["trials"][3]["state"] = "running".into();
        state["trials"][3]["value"] = serde_json::Value::Null;
        killed.study = serde_json::from_value(state).unwrap();
        killed.runs.remove(&3);
        killed.settings.trials = 5;
        let again = run(&folder, killed, &Heard::default()).unwrap();
        assert_eq!(again.study.trials().len(), 5);
        assert_eq!(again.study.trial(3).unwrap().state, done.study.trial(3).unwrap().state);
        assert!(again.study.trials().iter().all(|t| t.state != TrialState::Running));
        assert!(folder.join("trial-004").join(METRICS_FILE).is_file());
    }

    #[test]
    fn an_objective_the_task_does_not_measure_stops_the_job_with_the_names_it_has() {
        let tmp = tempfile::tempdir().unwrap();
        two_colours(&tmp.path().join("data"));
        let mut j = job(&tmp.path().join("data"), "val_f1", 2);
        j.settings.parallel = 1;
        let e = run(&tmp.path().join("tune"), j, &Heard::default()).unwrap_err().to_string();
        assert!(e.contains("val_f1") && e.contains("val_accuracy"), "{e}");
    }
}
