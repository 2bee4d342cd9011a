//! Per-source numbers: frames, rate, lag, drops, reconnects and counts; bounded however long a
//! stream runs (lag goes into a fixed histogram, the rate into a short window).

use std::collections::VecDeque;
use std::time::Instant;

use serde::Serialize;

use crate::analytics::Counts;
use crate::queue::FramePolicy;

/// Lag histogram: 1 ms buckets up to 10 s, the last one catching anything longer.
const LAG_BUCKETS: usize = 10_001;

/// Lag from a frame's arrival from the decoder to its answer, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LagSummary {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

#[derive(Clone, Debug)]
pub struct LagHistogram {
    buckets: Vec<u32>,
    count: u64,
    sum_ms: f64,
    max_ms: f64,
}

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram { buckets: vec![0; LAG_BUCKETS], count: 0, sum_ms: 0.0, max_ms: 0.0 }
    }
}

impl LagHistogram {
    pub fn record(&mut self, ms: f64) {
        let i = (ms.max(0.0).round() as usize).min(LAG_BUCKETS - 1);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.count += 1;
        self.sum_ms += ms;
        self.max_ms = self.max_ms.max(ms);
    }

    fn quantile(&self, q: f64) -> f64 {
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= target {
                return i as f64;
            }
        }
        self.max_ms
    }

    pub fn summary(&self) -> LagSummary {
        if self.count == 0 {
            return LagSummary::default();
        }
        LagSummary {
            mean: (self.sum_ms / self.count as f64 * 10.0).round() / 10.0,
            p50: self.quantile(0.5),
            p95: self.quantile(0.95),
            max: (self.max_ms * 10.0).round() / 10.0,
        }
    }
}

/// What the page and the summary show for one source.
#[derive(Clone, Debug, Serialize)]
pub struct SourceStats {
    pub source: String,
    pub live: bool,
    pub policy: FramePolicy,
    pub width: u32,
    pub height: u32,
    /// Frames that came out of the decoder.
    pub frames_read: u64,
    /// Frames that went through the model.
    pub frames_processed: u64,
    /// Frames the `latest` policy dropped because newer ones arrived first.
    pub dropped: u64,
    /// Processed frames per second over the last couple of seconds (whole run in the summary).
    pub fps: f64,
    /// Filled in by [`Meter::snapshot`].
    pub lag_ms: LagSummary,
    pub reconnects: u64,
    pub tracks_now: usize,
    pub counts: Counts,
    pub finished: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The live numbers of one source, updated by its threads.
#[derive(Debug)]
pub struct Meter {
    pub stats: SourceStats,
    pub lag: LagHistogram,
    recent: VecDeque<Instant>,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

impl Meter {
    pub fn new(source: String, live: bool, policy: FramePolicy) -> Self {
        Meter {
            stats: SourceStats {
                source,
                live,
                policy,
                width: 0,
                height: 0,
                frames_read: 0,
                frames_processed: 0,
                dropped: 0,
                fps: 0.0,
                lag_ms: LagSummary::default(),
                reconnects: 0,
                tracks_now: 0,
                counts: Counts::default(),
                finished: false,
                error: None,
            },
            lag: LagHistogram::default(),
            recent: VecDeque::new(),
            first: None,
            last: None,
        }
    }

    /// A frame got its answer `lag_ms` after it arrived.
    pub fn processed(&mut self, now: Instant, lag_ms: f64) {
        self.stats.frames_processed += 1;
        self.lag.record(lag_ms);
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.recent.push_back(now);
        while self.recent.len() > 2 && self.recent.front().is_some_and(|t| now.duration_since(*t).as_secs_f64() > 2.0) {
            self.recent.pop_front();
        }
        if let (Some(a), Some(b)) = (self.recent.front(), self.recent.back()) {
            let span = b.duration_since(*a).as_secs_f64();
            if span > 0.0 {
                self.stats.fps = ((self.recent.len() - 1) as f64 / span * 10.0).round() / 10.0;
            }
        }
    }

    /// The numbers as of now, lag quantiles included (read from the histogram here rather than
    /// on every frame).
    pub fn snapshot(&self) -> SourceStats {
        SourceStats { lag_ms: self.lag.summary(), ..self.stats.clone() }
    }

    /// Final numbers: the rate over the whole run.
    pub fn finish(&mut self) -> SourceStats {
        if let (Some(a), Some(b)) = (self.first, self.last) {
            let span = b.duration_since(a).as_secs_f64();
            if span > 0.0 && self.stats.frames_processed > 1 {
                self.stats.fps = ((self.stats.frames_processed - 1) as f64 / span * 100.0).round() / 100.0;
            }
        }
        self.stats.finished = true;
        self.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_quantiles_from_the_histogram() {
        let mut h = LagHistogram::default();
        for ms in 1..=100 {
            h.record(ms as f64);
        }
        h.record(60_000.0);
        let s = h.summary();
        assert_eq!((s.p50, s.p95), (51.0, 96.0));
        assert_eq!(s.max, 60_000.0);
        assert!((s.mean - (5050.0 + 60_000.0) / 101.0).abs() < 0.1);
    }
}
