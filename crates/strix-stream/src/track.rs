//! Multi-object tracking by detection, in the manner of SORT with ByteTrack's second pass: a
//! constant-velocity Kalman filter per track predicts each box, confident detections are
//! matched to predictions by IoU first, weaker ones then keep existing tracks alive, and only
//! confident unmatched detections start new tracks.
//!
//! The filter runs on (centre x, centre y, width, height), each with its own velocity. SORT's
//! process and measurement noises are diagonal, so the 8-state filter separates exactly into
//! four independent 2-state filters (position, velocity), which is what [`Axis`] is.

use serde::{Deserialize, Serialize};
use strix_core::BBox;

/// Tracker settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Detections at or above this score match first and may start tracks.
    pub high_score: f32,
    /// Detections below this are ignored altogether.
    pub low_score: f32,
    /// Least IoU between a prediction and a confident detection to match them.
    pub match_iou: f32,
    /// Least IoU for the second pass (weak detections keeping a track alive).
    pub weak_match_iou: f32,
    /// Matches in a row before a track is reported (filters one-frame flickers).
    pub confirm_hits: u32,
    /// A track unseen this long (seconds of video) has left.
    pub lost_after_s: f64,
    /// Below this speed, in box heights per second, a track is "still".
    pub still_speed: f32,
    /// A new moving / still state must hold this long (seconds) before it is reported.
    pub state_hold_s: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            high_score: 0.5,
            low_score: 0.1,
            match_iou: 0.2,
            weak_match_iou: 0.5,
            confirm_hits: 3,
            lost_after_s: 1.0,
            still_speed: 0.15,
            state_hold_s: 0.5,
        }
    }
}

impl TrackerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let unit = |v: f32, what: &str| {
            if (0.0..=1.0).contains(&v) { Ok(()) } else { Err(format!("tracker.{what} must be within 0..1, not {v}")) }
        };
        unit(self.high_score, "high_score")?;
        unit(self.low_score, "low_score")?;
        unit(self.match_iou, "match_iou")?;
        unit(self.weak_match_iou, "weak_match_iou")?;
        if self.low_score > self.high_score {
            return Err("tracker.low_score is above tracker.high_score".into());
        }
        // Written so that NaN fails too.
        let times_ok = self.lost_after_s > 0.0 && self.state_hold_s >= 0.0 && self.still_speed >= 0.0;
        if !times_ok {
            return Err("tracker.lost_after_s must be positive, state_hold_s and still_speed not negative".into());
        }
        Ok(())
    }
}

/// A detection offered to the tracker.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub bbox: BBox,
    pub score: f32,
    pub class_id: usize,
    pub label: String,
    /// Where it came from among the frame's answers (a person's skeleton, a face's landmarks).
    pub source: usize,
}

/// Whether a track moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    Moving,
    Still,
}

/// A confirmed track as of the latest frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Track {
    pub id: u64,
    pub class_id: usize,
    pub label: String,
    /// The matched detection's box, or the prediction while the object is unseen.
    pub bbox: BBox,
    pub score: f32,
    /// Centre velocity, pixels per second.
    pub velocity: (f32, f32),
    pub first_seen_s: f64,
    pub last_seen_s: f64,
    /// Whether this frame had a detection for it.
    pub seen: bool,
    /// The [`Observation::source`] of this frame's detection, when it had one.
    pub source: Option<usize>,
    pub activity: Activity,
}

impl Track {
    pub fn dwell_s(&self) -> f64 {
        self.last_seen_s - self.first_seen_s
    }

    pub fn centre(&self) -> (f32, f32) {
        ((self.bbox.x1 + self.bbox.x2) / 2.0, (self.bbox.y1 + self.bbox.y2) / 2.0)
    }
}

/// What changed in one update.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackUpdate {
    /// Tracks confirmed in this frame.
    pub appeared: Vec<u64>,
    /// Tracks that were lost for too long, as last known.
    pub left: Vec<Track>,
    /// Tracks whose activity changed (id, new activity).
    pub activity: Vec<(u64, Activity)>,
}

/// One coordinate's position and velocity with their covariance.
#[derive(Clone, Copy, Debug)]
struct Axis {
    x: f32,
    v: f32,
    /// Covariance [[pxx, pxv], [pxv, pvv]].
    p: [f32; 3],
}

impl Axis {
    fn new(x: f32, scale: f32) -> Self {
        // Noise scales with the box height (as in DeepSORT), in pixels and pixels per second:
        // a new track's speed is unknown up to about a body height per second.
        let (sx, sv) = (2.0 * scale / 20.0, scale);
        Axis { x, v: 0.0, p: [sx * sx, 0.0, sv * sv] }
    }

    fn predict(&mut self, dt: f32, scale: f32) {
        // Walkers and cars change speed by a fraction of their size per second.
        let dt = dt.max(1e-3);
        let (qx, qv) = ((scale / 20.0).powi(2) * dt, (scale / 2.0).powi(2) * dt);
        self.x += self.v * dt;
        let [pxx, pxv, pvv] = self.p;
        self.p = [pxx + 2.0 * dt * pxv + dt * dt * pvv + qx, pxv + dt * pvv, pvv + qv];
    }

    fn correct(&mut self, z: f32, scale: f32) {
        let r = (scale / 20.0).powi(2);
        let [pxx, pxv, pvv] = self.p;
        let s = pxx + r;
        let (kx, kv) = (pxx / s, pxv / s);
        let y = z - self.x;
        self.x += kx * y;
        self.v += kv * y;
        self.p = [(1.0 - kx) * pxx, (1.0 - kx) * pxv, pvv - kv * pxv];
    }
}

#[derive(Clone, Debug)]
struct Filter {
    axes: [Axis; 4],
}

impl Filter {
    fn new(b: &BBox) -> Self {
        let h = b.height().max(1.0);
        let z = measure(b);
        Filter { axes: z.map(|c| Axis::new(c, h)) }
    }

    fn height(&self) -> f32 {
        self.axes[3].x.max(1.0)
    }

    fn predict(&mut self, dt: f32) {
        let h = self.height();
        for a in &mut self.axes {
            a.predict(dt, h);
        }
        // A box cannot shrink below a pixel however the size velocity extrapolates.
        self.axes[2].x = self.axes[2].x.max(1.0);
        self.axes[3].x = self.axes[3].x.max(1.0);
    }

    fn correct(&mut self, b: &BBox) {
        let h = self.height();
        for (a, z) in self.axes.iter_mut().zip(measure(b)) {
            a.correct(z, h);
        }
    }

    fn bbox(&self) -> BBox {
        let [cx, cy, w, h] = self.axes.map(|a| a.x);
        BBox::from_center(cx, cy, w.max(1.0), h.max(1.0))
    }
}

fn measure(b: &BBox) -> [f32; 4] {
    [(b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0, b.width(), b.height()]
}

#[derive(Clone, Debug)]
struct Tracked {
    /// 0 until confirmed.
    id: u64,
    class_id: usize,
    label: String,
    filter: Filter,
    bbox: BBox,
    score: f32,
    hits: u32,
    first_seen_s: f64,
    last_seen_s: f64,
    seen: bool,
    source: Option<usize>,
    activity: Activity,
    /// A different activity and since when it holds.
    pending: Option<(Activity, f64)>,
}

impl Tracked {
    fn confirmed(&self) -> bool {
        self.id > 0
    }

    /// Moving or still by the filter's speed, in box heights per second.
    fn speed_state(&self, still_speed: f32) -> Activity {
        let (vx, vy) = (self.filter.axes[0].v, self.filter.axes[1].v);
        let speed = (vx * vx + vy * vy).sqrt() / self.bbox.height().max(1.0);
        if speed >= still_speed { Activity::Moving } else { Activity::Still }
    }

    fn snapshot(&self) -> Track {
        Track {
            id: self.id,
            class_id: self.class_id,
            label: self.label.clone(),
            bbox: self.bbox,
            score: self.score,
            velocity: (self.filter.axes[0].v, self.filter.axes[1].v),
            first_seen_s: self.first_seen_s,
            last_seen_s: self.last_seen_s,
            seen: self.seen,
            source: self.source,
            activity: self.activity,
        }
    }
}

/// Tracks of one video source.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Tracked>,
    next_id: u64,
    last_time: Option<f64>,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Tracker { config, tracks: Vec::new(), next_id: 1, last_time: None }
    }

    /// Confirmed tracks, oldest first.
    pub fn tracks(&self) -> Vec<Track> {
        self.tracks.iter().filter(|t| t.confirmed()).map(Tracked::snapshot).collect()
    }

    /// Feed one frame's detections, taken at `time_s` seconds into the source.
    pub fn update(&mut self, time_s: f64, observations: &[Observation]) -> TrackUpdate {
        let dt = self.last_time.map_or(0.0, |t| (time_s - t).max(0.0)) as f32;
        self.last_time = Some(time_s);
        for t in &mut self.tracks {
            t.filter.predict(dt);
            t.bbox = t.filter.bbox();
            t.seen = false;
            t.source = None;
        }
        let cfg = &self.config;
        let (high, low): (Vec<usize>, Vec<usize>) = (0..observations.len())
            .filter(|&i| observations[i].score >= cfg.low_score)
            .partition(|&i| observations[i].score >= cfg.high_score);
        let all_tracks: Vec<usize> = (0..self.tracks.len()).collect();
        let (pairs, unmatched_tracks, unmatched_high) =
            assign(&self.tracks, &all_tracks, observations, &high, cfg.match_iou);
        // Second pass: weak detections only keep confirmed tracks alive; they start none.
        let (weak_pairs, _, _) = assign(&self.tracks, &unmatched_tracks, observations, &low, cfg.weak_match_iou);

        let mut update = TrackUpdate::default();
        for (ti, oi) in pairs.into_iter().chain(weak_pairs) {
            let o = &observations[oi];
            let t = &mut self.tracks[ti];
            t.filter.correct(&o.bbox);
            t.bbox = o.bbox;
            t.score = o.score;
            t.hits += 1;
            t.last_seen_s = time_s;
            t.seen = true;
            t.source = Some(o.source);
            if !t.confirmed() && t.hits >= cfg.confirm_hits {
                t.id = self.next_id;
                self.next_id += 1;
                // Its first state is whatever the matches so far say, without the hold.
                t.activity = t.speed_state(cfg.still_speed);
                update.appeared.push(t.id);
            }
        }
        for &oi in &unmatched_high {
            let o = &observations[oi];
            let mut t = Tracked {
                id: 0,
                class_id: o.class_id,
                label: o.label.clone(),
                filter: Filter::new(&o.bbox),
                bbox: o.bbox,
                score: o.score,
                hits: 1,
                first_seen_s: time_s,
                last_seen_s: time_s,
                seen: true,
                source: Some(o.source),
                activity: Activity::Still,
                pending: None,
            };
            if cfg.confirm_hits <= 1 {
                t.id = self.next_id;
                self.next_id += 1;
                update.appeared.push(t.id);
            }
            self.tracks.push(t);
        }
        // Tentative tracks die at their first miss; confirmed ones coast for lost_after_s.
        let lost_after = cfg.lost_after_s;
        let mut kept = Vec::with_capacity(self.tracks.len());
        for t in self.tracks.drain(..) {
            if t.seen || (t.confirmed() && time_s - t.last_seen_s <= lost_after) {
                kept.push(t);
            } else if t.confirmed() {
                update.left.push(t.snapshot());
            }
        }
        self.tracks = kept;
        for t in self.tracks.iter_mut().filter(|t| t.confirmed() && t.seen) {
            let now = t.speed_state(cfg.still_speed);
            if now == t.activity {
                t.pending = None;
                continue;
            }
            let since = match t.pending {
                Some((a, since)) if a == now => since,
                _ => {
                    t.pending = Some((now, time_s));
                    time_s
                }
            };
            if time_s - since >= cfg.state_hold_s {
                t.activity = now;
                t.pending = None;
                update.activity.push((t.id, now));
            }
        }
        update
    }

    /// Every confirmed track, as if all left now (the end of a source).
    pub fn finish(&mut self) -> Vec<Track> {
        let left = self.tracks();
        self.tracks.clear();
        left
    }
}

/// Greedy IoU matching of tracks to observations of the same class, best pairs first.
/// Returns the pairs, the unmatched tracks and the unmatched observations.
fn assign(
    tracks: &[Tracked],
    track_ids: &[usize],
    observations: &[Observation],
    obs_ids: &[usize],
    min_iou: f32,
) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
    let mut candidates = Vec::new();
    for &ti in track_ids {
        for &oi in obs_ids {
            if tracks[ti].class_id != observations[oi].class_id {
                continue;
            }
            let iou = tracks[ti].bbox.iou(&observations[oi].bbox);
            if iou >= min_iou && iou > 0.0 {
                candidates.push((iou, ti, oi));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut used_t, mut used_o) = (vec![false; tracks.len()], vec![false; observations.len()]);
    let mut pairs = Vec::new();
    for (_, ti, oi) in candidates {
        if !used_t[ti] && !used_o[oi] {
            used_t[ti] = true;
            used_o[oi] = true;
            pairs.push((ti, oi));
        }
    }
    let free_t = track_ids.iter().copied().filter(|&t| !used_t[t]).collect();
    let free_o = obs_ids.iter().copied().filter(|&o| !used_o[o]).collect();
    (pairs, free_t, free_o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(x: f32, y: f32, score: f32) -> Observation {
        Observation { bbox: BBox::new(x, y, x + 20.0, y + 60.0), score, class_id: 0, label: "person".into(), source: 0 }
    }

    #[test]
    fn a_track_knows_which_answer_it_matched_this_frame() {
        let mut t = Tracker::new(TrackerConfig { confirm_hits: 1, ..TrackerConfig::default() });
        let at = |x: f32, source: usize| Observation { source, ..person(x, 50.0, 0.8) };
        t.update(0.0, &[at(10.0, 4), at(300.0, 7)]);
        t.update(0.1, &[at(302.0, 0), at(12.0, 1)]);
        let sources: Vec<(f32, Option<usize>)> = t.tracks().iter().map(|k| (k.bbox.x1, k.source)).collect();
        assert_eq!(sources, vec![(12.0, Some(1)), (302.0, Some(0))]);
        t.update(0.2, &[at(14.0, 0)]);
        let unseen = t.tracks().into_iter().find(|k| !k.seen).unwrap();
        assert_eq!(unseen.source, None);
    }

    #[test]
    fn walkers_keep_their_ids_through_a_missed_frame() {
        let mut t = Tracker::new(TrackerConfig::default());
        let mut appeared = Vec::new();
        for f in 0..30 {
            let time = f as f64 * 0.1;
            // Two people 100 px apart walking towards each other's side; frame 12 misses one.
            let mut obs = vec![person(10.0 + 3.0 * f as f32, 50.0, 0.8)];
            if f != 12 {
                obs.push(person(200.0 - 3.0 * f as f32, 80.0, 0.7));
            }
            let u = t.update(time, &obs);
            appeared.extend(u.appeared);
            assert!(u.left.is_empty(), "frame {f}: {:?}", u.left);
        }
        assert_eq!(appeared, vec![1, 2]);
        let tracks = t.tracks();
        assert_eq!(tracks.len(), 2);
        // 3 px per 0.1 s = 30 px/s, half a box height per second: moving.
        assert!((tracks[0].velocity.0 - 30.0).abs() < 3.0, "{:?}", tracks[0].velocity);
        assert_eq!(tracks[0].activity, Activity::Moving);
        assert!((tracks[0].dwell_s() - 2.9).abs() < 1e-9);
    }

    #[test]
    fn a_lost_track_leaves_after_the_timeout_and_flickers_never_appear() {
        let mut t = Tracker::new(TrackerConfig::default());
        for f in 0..5 {
            t.update(f as f64 * 0.1, &[person(10.0, 10.0, 0.9)]);
        }
        // A one-frame detection elsewhere: never confirmed, never reported.
        let u = t.update(0.5, &[person(10.0, 10.0, 0.9), person(300.0, 10.0, 0.9)]);
        assert!(u.appeared.is_empty());
        let mut left = Vec::new();
        for f in 6..25 {
            left.extend(t.update(f as f64 * 0.1, &[]).left);
        }
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, 1);
        assert!((left[0].last_seen_s - 0.5).abs() < 1e-9);
        assert_eq!(left[0].activity, Activity::Still);
        assert!(t.tracks().is_empty());
    }

    #[test]
    fn weak_detections_keep_tracks_but_start_none() {
        let mut t = Tracker::new(TrackerConfig::default());
        for f in 0..4 {
            t.update(f as f64 * 0.1, &[person(10.0, 10.0, 0.9)]);
        }
        // 0.3 is under high_score: it keeps track 1 alive for 2 s but starts nothing new.
        for f in 4..24 {
            let u = t.update(f as f64 * 0.1, &[person(10.0, 10.0, 0.3), person(300.0, 10.0, 0.3)]);
            assert!(u.left.is_empty() && u.appeared.is_empty());
        }
        assert_eq!(t.tracks().len(), 1);
        assert!(t.tracks()[0].seen);
    }

    #[test]
    fn classes_do_not_match_each_other() {
        let mut t = Tracker::new(TrackerConfig { confirm_hits: 1, ..TrackerConfig::default() });
        let mut car = person(10.0, 10.0, 0.9);
        car.class_id = 2;
        assert_eq!(t.update(0.0, &[person(10.0, 10.0, 0.9)]).appeared, vec![1]);
        let u = t.update(0.1, &[car]);
        assert_eq!(u.appeared, vec![2]);
    }

    #[test]
    fn kalman_axis_follows_constant_velocity() {
        let mut a = Axis::new(0.0, 50.0);
        for k in 1..=50 {
            a.predict(0.1, 50.0);
            a.correct(2.0 * k as f32, 50.0);
        }
        assert!((a.v - 20.0).abs() < 0.5, "velocity {}", a.v);
        assert!((a.x - 100.0).abs() < 0.5, "position {}", a.x);
    }
}
