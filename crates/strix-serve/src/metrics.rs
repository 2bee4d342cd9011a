//! Prometheus metrics (`GET /metrics`): requests by model and status, latency and batch-size
//! histograms per model, images per batch worker, queue depth, decodes by scale, and what the
//! capture tap dropped.

use std::borrow::Cow;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    model: String,
    /// `swapped`, `refused` (a new version that did not load or answer) or `failed` (the
    /// registry could not be asked).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecodeLabels {
    model: String,
    /// The share of each side decoded: `1`, or `1/2`, `1/4`, `1/8` with `--fast-decode`.
    scale: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    /// The worker's index among its model's batch workers.
    pub worker: usize,
}

/// Images each of a model's batch workers ran, counted by the workers themselves.
pub type WorkerImages = Family<WorkerLabels, Counter>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TapLabels {
    /// Why the tap skipped samples it had picked (`busy`, `full`, `failed`).
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    model: String,
    feature: String,
}

/// A gauge of floats (drift statistics, p-values).
type Float = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The drift monitors' numbers, per model and feature (`--monitor`).
#[derive(Debug, Default)]
struct MonitorFamilies {
    statistic: Family<FeatureLabels, Float>,
    p_value: Family<FeatureLabels, Float>,
    drift: Family<FeatureLabels, Gauge>,
    violations: Family<FeatureLabels, Gauge>,
    answers: Family<ModelLabels, Gauge>,
    tests: Family<ModelLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Batch sizes 1, 2, 4, ... 256.
pub fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<ModelLabels, Histogram, fn() -> Histogram>,
    queue: Family<ModelLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    decodes: Family<DecodeLabels, Counter>,
    tap_dropped: Family<TapLabels, Gauge>,
    monitors: MonitorFamilies,
}

impl Metrics {
    /// Metrics for the served models, each with its batch-size histogram and its images per
    /// worker (which its batch workers fill).
    pub fn new(models: &[(String, Histogram, WorkerImages)]) -> Metrics {
        let mut registry = Registry::with_prefix("strix");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests answered, by model and HTTP status", requests.clone());
        let latency = Family::<ModelLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to answer (decode, queue, inference), by model",
            latency.clone(),
        );
        let queue = Family::<ModelLabels, Gauge>::default();
        registry.register("queue_depth", "Requests waiting for a batch, by model", queue.clone());
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "model_reloads",
            "New versions of followed models: swapped in, refused, or registry checks that failed",
            reloads.clone(),
        );
        let decodes = Family::<DecodeLabels, Counter>::default();
        registry.register("decodes", "Images decoded, by model and the share of each side decoded", decodes.clone());
        let tap_dropped = Family::<TapLabels, Gauge>::default();
        registry.register(
            "capture_dropped",
            "Samples the capture picked but did not keep (writer behind, project full, write failed)",
            tap_dropped.clone(),
        );
        let monitors = MonitorFamilies::default();
        registry.register(
            "monitor_statistic",
            "The latest drift test's statistic (KS D, chi-squared, distance, MMD squared), by model and feature",
            monitors.statistic.clone(),
        );
        registry.register(
            "monitor_p_value",
            "The latest drift test's p-value, by model and feature",
            monitors.p_value.clone(),
        );
        registry.register(
            "monitor_drift",
            "1 if the latest test found drift, by model and feature",
            monitors.drift.clone(),
        );
        registry.register(
            "monitor_violations",
            "Drift tests that found drift so far, by model and feature",
            monitors.violations.clone(),
        );
        registry.register("monitor_answers", "Answers the monitor has taken, by model", monitors.answers.clone());
        registry.register("monitor_tests", "Drift tests run, by model", monitors.tests.clone());
        for (model, histogram, workers) in models {
            let per_model = registry.sub_registry_with_label((Cow::Borrowed("model"), Cow::Owned(model.clone())));
            per_model.register("batch_size", "Images per inference", histogram.clone());
            per_model.register("worker_images", "Images each batch worker ran, by worker", workers.clone());
        }
        Metrics { registry, requests, latency, queue, reloads, decodes, tap_dropped, monitors }
    }

    /// Count an answer. `model` is `None` for requests that named no served model (so
    /// arbitrary names cannot grow the label set).
    pub fn request(&self, model: Option<&str>, status: u16, took: Duration) {
        let model = model.unwrap_or("-").to_string();
        self.requests.get_or_create(&RequestLabels { model: model.clone(), status }).inc();
        if status < 400 {
            self.latency.get_or_create(&ModelLabels { model }).observe(took.as_secs_f64());
        }
    }

    /// Count what a follower's check did (`swapped`, `refused` or `failed`).
    pub fn reload(&self, model: &str, outcome: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { model: model.to_string(), outcome }).inc();
    }

    /// Count a decode of `model`'s input at 1/`denominator` of each side (1: whole).
    pub fn decode(&self, model: &str, denominator: u32) {
        let scale = match denominator {
            0 | 1 => "1",
            2 => "1/2",
            3 | 4 => "1/4",
            _ => "1/8",
        };
        self.decodes.get_or_create(&DecodeLabels { model: model.to_string(), scale }).inc();
    }

    /// Set the monitor gauges from a monitor's status.
    pub fn monitor(&self, status: &strix_monitor::MonitorStatus) {
        let m = &self.monitors;
        let model = ModelLabels { model: status.model.clone() };
        m.answers.get_or_create(&model).set(i64::try_from(status.answers).unwrap_or(i64::MAX));
        m.tests.get_or_create(&model).set(i64::try_from(status.tests).unwrap_or(i64::MAX));
        for c in &status.last {
            let labels = FeatureLabels { model: status.model.clone(), feature: c.feature.clone() };
            m.statistic.get_or_create(&labels).set(if c.statistic.is_finite() { c.statistic } else { f64::MAX });
            if let Some(p) = c.p_value {
                m.p_value.get_or_create(&labels).set(p);
            }
            m.drift.get_or_create(&labels).set(i64::from(c.drift));
            let count = status.violations_by_feature.get(&c.feature).copied().unwrap_or(0);
            m.violations.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition, with queue depths and the tap's drops as they are now.
    pub fn render(&self, depths: impl Iterator<Item = (String, usize)>, tap_dropped: &[(&'static str, u64)]) -> String {
        for (model, depth) in depths {
            self.queue.get_or_create(&ModelLabels { model }).set(depth as i64);
        }
        for &(reason, count) in tap_dropped {
            self.tap_dropped.get_or_create(&TapLabels { reason }).set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let batch = batch_histogram();
        let workers = WorkerImages::default();
        let m = Metrics::new(&[("trash".into(), batch.clone(), workers.clone())]);
        batch.observe(4.0);
        workers.get_or_create(&WorkerLabels { worker: 1 }).inc_by(5);
        m.request(Some("trash"), 200, Duration::from_millis(12));
        m.request(None, 404, Duration::from_millis(1));
        m.reload("trash", "refused");
        m.decode("trash", 1);
        m.decode("trash", 4);
        let text = m.render([("trash".to_string(), 3)].into_iter(), &[("busy", 2)]);
        for want in [
            "strix_requests_total{model=\"trash\",status=\"200\"} 1",
            "strix_requests_total{model=\"-\",status=\"404\"} 1",
            "strix_request_duration_seconds_count{model=\"trash\"} 1",
            "strix_queue_depth{model=\"trash\"} 3",
            "strix_batch_size_count{model=\"trash\"} 1",
            "strix_worker_images_total{model=\"trash\",worker=\"1\"} 5",
            "strix_model_reloads_total{model=\"trash\",outcome=\"refused\"} 1",
            "strix_decodes_total{model=\"trash\",scale=\"1\"} 1",
            "strix_decodes_total{model=\"trash\",scale=\"1/4\"} 1",
            "strix_capture_dropped{reason=\"busy\"} 2",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
