//! Prometheus metrics (`GET /metrics`): requests by model and status, latency and batch-size
//! histograms per model, queue depth.

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
}

impl Metrics {
    /// Metrics for the served models, each with its batch-size histogram (which its batcher
    /// fills).
    pub fn new(batch_sizes: &[(String, Histogram)]) -> Metrics {
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
        for (model, histogram) in batch_sizes {
            registry.sub_registry_with_label((Cow::Borrowed("model"), Cow::Owned(model.clone()))).register(
                "batch_size",
                "Images per inference",
                histogram.clone(),
            );
        }
        Metrics { registry, requests, latency, queue, reloads }
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

    /// The text exposition, with queue depths as they are now.
    pub fn render(&self, depths: impl Iterator<Item = (String, usize)>) -> String {
        for (model, depth) in depths {
            self.queue.get_or_create(&ModelLabels { model }).set(depth as i64);
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
        let m = Metrics::new(&[("trash".into(), batch.clone())]);
        batch.observe(4.0);
        m.request(Some("trash"), 200, Duration::from_millis(12));
        m.request(None, 404, Duration::from_millis(1));
        m.reload("trash", "refused");
        let text = m.render([("trash".to_string(), 3)].into_iter());
        for want in [
            "strix_requests_total{model=\"trash\",status=\"200\"} 1",
            "strix_requests_total{model=\"-\",status=\"404\"} 1",
            "strix_request_duration_seconds_count{model=\"trash\"} 1",
            "strix_queue_depth{model=\"trash\"} 3",
            "strix_batch_size_count{model=\"trash\"} 1",
            "strix_model_reloads_total{model=\"trash\",outcome=\"refused\"} 1",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
