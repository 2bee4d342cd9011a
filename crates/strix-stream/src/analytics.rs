//! From tracks to events: appearances and departures, line crossings, zone entries, moving /
//! still changes, counts per class; for classifiers, changes of the top label.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use strix_core::BBox;

use crate::track::{Activity, Track, TrackUpdate};

/// A counting line from `from` to `to`, in pixels of the source's frames. Standing at `from`
/// and looking at `to`, a crossing from left to right is `forward`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub name: String,
    pub from: [f32; 2],
    pub to: [f32; 2],
}

/// A polygon zone, in pixels of the source's frames.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    pub points: Vec<[f32; 2]>,
}

impl LineConfig {
    /// `NAME=X1,Y1,X2,Y2`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, v) = named_numbers(s, "--line NAME=X1,Y1,X2,Y2")?;
        let [x1, y1, x2, y2] = v[..] else { return Err(format!("--line {s:?}: expected NAME=X1,Y1,X2,Y2")) };
        if (x1, y1) == (x2, y2) {
            return Err(format!("--line {s:?}: the two ends are the same point"));
        }
        Ok(LineConfig { name, from: [x1, y1], to: [x2, y2] })
    }
}

impl ZoneConfig {
    /// `NAME=X1,Y1,X2,Y2,X3,Y3[,...]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, v) = named_numbers(s, "--zone NAME=X1,Y1,X2,Y2,X3,Y3...")?;
        let zone =
            ZoneConfig { name, points: v.chunks(2).map(|c| [c[0], c.get(1).copied().unwrap_or(f32::NAN)]).collect() };
        zone.validate().map_err(|e| format!("--zone {s:?}: {e}"))?;
        Ok(zone)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.points.len() < 3 || self.points.iter().any(|p| !p[0].is_finite() || !p[1].is_finite()) {
            return Err(format!("zone {:?} needs at least three X,Y points", self.name));
        }
        Ok(())
    }

    fn contains(&self, (x, y): (f32, f32)) -> bool {
        // Even-odd ray casting.
        let mut inside = false;
        let n = self.points.len();
        for i in 0..n {
            let [xi, yi] = self.points[i];
            let [xj, yj] = self.points[(i + n - 1) % n];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
        }
        inside
    }
}

fn named_numbers(s: &str, form: &str) -> Result<(String, Vec<f32>), String> {
    let (name, rest) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected {form}"))?;
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(format!("{s:?}: expected {form}"));
    }
    let v: Result<Vec<f32>, _> = rest.split(',').map(|n| n.trim().parse::<f32>()).collect();
    let v = v.map_err(|_| format!("{s:?}: coordinates must be numbers ({form})"))?;
    Ok((name.to_string(), v))
}

/// A detection in a `frame` event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detected {
    pub class: String,
    pub score: f32,
    pub bbox: [f32; 4],
}

/// A track in a `frame` event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackBrief {
    pub track_id: u64,
    pub class: String,
    pub bbox: [f32; 4],
    pub state: Activity,
    /// Its name in the index (`--index`), once it matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A pose model's person: the skeleton of this frame's detection, keypoint by keypoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keypoints: Vec<strix_core::Keypoint>,
}

/// A class and its score in a `frame` event of a classifier.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scored {
    pub label: String,
    pub score: f32,
}

/// What happened, as events carry it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Happening {
    Appeared {
        track_id: u64,
        class: String,
        score: f32,
        bbox: [f32; 4],
    },
    Left {
        track_id: u64,
        class: String,
        first_seen_s: f64,
        last_seen_s: f64,
        dwell_s: f64,
    },
    Crossed {
        track_id: u64,
        class: String,
        line: String,
        direction: &'static str,
    },
    Entered {
        track_id: u64,
        class: String,
        zone: String,
    },
    Exited {
        track_id: u64,
        class: String,
        zone: String,
    },
    Activity {
        track_id: u64,
        class: String,
        state: Activity,
    },
    /// A track matched a known identity in an index (`--index`).
    Identified {
        track_id: u64,
        class: String,
        /// The entry's external id, else its image.
        name: String,
        /// Cosine similarity, -1 to 1.
        similarity: f32,
        index: String,
        entry: u64,
    },
    /// A classifier's top label changed (and held for a few frames).
    Label {
        label: String,
        score: f32,
    },
    SourceLost {
        reason: String,
        attempt: u32,
        retry_in_s: f64,
    },
    SourceReconnected,
    /// Every frame's answer, with `--frame-events` (what DeepLens publishes per inference).
    Frame {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        detections: Vec<Detected>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tracks: Vec<TrackBrief>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        labels: Vec<Scored>,
    },
}

/// Totals kept per source, for the summary and the page.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Tracks seen so far, per class.
    pub tracks: BTreeMap<String, u64>,
    /// Confirmed tracks now in view, per class.
    pub in_view: BTreeMap<String, u64>,
    /// Per line: [forward, backward] crossings.
    pub crossings: BTreeMap<String, [u64; 2]>,
    /// Per zone: entries.
    pub zone_entries: BTreeMap<String, u64>,
    /// Frames per top label (classifiers).
    pub labels: BTreeMap<String, u64>,
    /// Longest dwell of a finished track, seconds.
    pub longest_dwell_s: f64,
}

/// Turns each frame's tracks into events for one source.
#[derive(Debug)]
pub struct Analytics {
    lines: Vec<LineConfig>,
    zones: Vec<ZoneConfig>,
    /// Where each confirmed track's centre was last frame.
    last_centre: HashMap<u64, (f32, f32)>,
    /// (track, zone) pairs currently inside.
    inside: HashMap<(u64, usize), bool>,
    counts: Counts,
    label: Option<String>,
    candidate: Option<(String, u32)>,
    label_hold: u32,
}

impl Analytics {
    pub fn new(lines: Vec<LineConfig>, zones: Vec<ZoneConfig>) -> Self {
        Analytics {
            lines,
            zones,
            last_centre: HashMap::new(),
            inside: HashMap::new(),
            counts: Counts::default(),
            label: None,
            candidate: None,
            label_hold: 3,
        }
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    pub fn lines(&self) -> &[LineConfig] {
        &self.lines
    }

    pub fn zones(&self) -> &[ZoneConfig] {
        &self.zones
    }

    /// Events for one tracker update; `tracks` are the confirmed tracks after it.
    pub fn on_tracks(&mut self, update: &TrackUpdate, tracks: &[Track]) -> Vec<Happening> {
        let mut out = Vec::new();
        for t in tracks.iter().filter(|t| update.appeared.contains(&t.id)) {
            *self.counts.tracks.entry(t.label.clone()).or_default() += 1;
            out.push(Happening::Appeared {
                track_id: t.id,
                class: t.label.clone(),
                score: round(t.score, 1e4),
                bbox: bbox_array(&t.bbox),
            });
        }
        for t in tracks {
            let now = t.centre();
            if let Some(prev) = self.last_centre.insert(t.id, now) {
                for line in &self.lines {
                    if let Some(forward) = crossing(line, prev, now) {
                        let c = self.counts.crossings.entry(line.name.clone()).or_default();
                        c[usize::from(!forward)] += 1;
                        out.push(Happening::Crossed {
                            track_id: t.id,
                            class: t.label.clone(),
                            line: line.name.clone(),
                            direction: if forward { "forward" } else { "backward" },
                        });
                    }
                }
            }
            for (zi, zone) in self.zones.iter().enumerate() {
                let inside = zone.contains(now);
                let was = self.inside.insert((t.id, zi), inside).unwrap_or(false);
                if inside && !was {
                    *self.counts.zone_entries.entry(zone.name.clone()).or_default() += 1;
                    out.push(Happening::Entered { track_id: t.id, class: t.label.clone(), zone: zone.name.clone() });
                } else if was && !inside {
                    out.push(Happening::Exited { track_id: t.id, class: t.label.clone(), zone: zone.name.clone() });
                }
            }
        }
        for &(id, state) in &update.activity {
            if let Some(t) = tracks.iter().find(|t| t.id == id) {
                out.push(Happening::Activity { track_id: id, class: t.label.clone(), state });
            }
        }
        out.extend(self.departures(&update.left));
        self.counts.in_view.clear();
        for t in tracks {
            *self.counts.in_view.entry(t.label.clone()).or_default() += 1;
        }
        out
    }

    /// Events for tracks that left (in a frame, or all at once when the source ends).
    pub fn departures(&mut self, left: &[Track]) -> Vec<Happening> {
        let mut out = Vec::new();
        for t in left {
            self.last_centre.remove(&t.id);
            for (zi, zone) in self.zones.iter().enumerate() {
                if self.inside.remove(&(t.id, zi)) == Some(true) {
                    out.push(Happening::Exited { track_id: t.id, class: t.label.clone(), zone: zone.name.clone() });
                }
            }
            self.counts.longest_dwell_s = self.counts.longest_dwell_s.max(t.dwell_s());
            out.push(Happening::Left {
                track_id: t.id,
                class: t.label.clone(),
                first_seen_s: round64(t.first_seen_s),
                last_seen_s: round64(t.last_seen_s),
                dwell_s: round64(t.dwell_s()),
            });
        }
        if !left.is_empty() {
            self.counts.in_view.clear();
        }
        out
    }

    /// A classifier's top label for this frame; an event when a new label has held for a few
    /// frames (a single odd frame does not flip it).
    pub fn on_label(&mut self, top: Option<(&str, f32)>) -> Option<Happening> {
        let (label, score) = top?;
        *self.counts.labels.entry(label.to_string()).or_default() += 1;
        if self.label.as_deref() == Some(label) {
            self.candidate = None;
            return None;
        }
        let held = match &mut self.candidate {
            Some((l, n)) if l == label => {
                *n += 1;
                *n
            }
            _ => {
                self.candidate = Some((label.to_string(), 1));
                1
            }
        };
        if held < self.label_hold && self.label.is_some() {
            return None;
        }
        self.label = Some(label.to_string());
        self.candidate = None;
        Some(Happening::Label { label: label.to_string(), score: round(score, 1e4) })
    }
}

/// Whether the move from `a` to `b` crosses the line segment, and if so whether forward
/// (from the left of from->to to its right, in image coordinates).
fn crossing(line: &LineConfig, a: (f32, f32), b: (f32, f32)) -> Option<bool> {
    let (p, q) = ((line.from[0], line.from[1]), (line.to[0], line.to[1]));
    let side = |pt: (f32, f32)| (q.0 - p.0) * (pt.1 - p.1) - (q.1 - p.1) * (pt.0 - p.0);
    let (sa, sb) = (side(a), side(b));
    // Touching the line is not crossing it; the move must go from one side to the other.
    if sa == 0.0 || sb == 0.0 || (sa > 0.0) == (sb > 0.0) {
        return None;
    }
    // And through the segment, not its extension.
    let seg = |pt: (f32, f32)| (b.0 - a.0) * (pt.1 - a.1) - (b.1 - a.1) * (pt.0 - a.0);
    if (seg(p) > 0.0) == (seg(q) > 0.0) {
        return None;
    }
    // Image y points down, so a positive cross product is the right-hand side.
    Some(sb > 0.0)
}

fn round(v: f32, scale: f32) -> f32 {
    (v * scale).round() / scale
}

fn round64(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub(crate) fn bbox_array(b: &BBox) -> [f32; 4] {
    [b.x1, b.y1, b.x2, b.y2].map(|v| round(v, 10.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: u64, cx: f32, cy: f32) -> Track {
        Track {
            id,
            class_id: 0,
            label: "person".into(),
            bbox: BBox::from_center(cx, cy, 10.0, 30.0),
            score: 0.9,
            velocity: (0.0, 0.0),
            first_seen_s: 0.0,
            last_seen_s: 1.0,
            seen: true,
            source: None,
            activity: Activity::Moving,
        }
    }

    #[test]
    fn crossing_a_line_both_ways_and_not_its_extension() {
        // A vertical line from (50, 0) down to (50, 100): its right-hand side is x < 50.
        let line = LineConfig { name: "door".into(), from: [50.0, 0.0], to: [50.0, 100.0] };
        assert_eq!(crossing(&line, (60.0, 50.0), (40.0, 50.0)), Some(true));
        assert_eq!(crossing(&line, (40.0, 50.0), (60.0, 50.0)), Some(false));
        assert_eq!(crossing(&line, (40.0, 150.0), (60.0, 150.0)), None, "below the segment");
        assert_eq!(crossing(&line, (40.0, 50.0), (45.0, 50.0)), None);
        assert_eq!(crossing(&line, (40.0, 50.0), (50.0, 50.0)), None, "touching");
    }

    #[test]
    fn events_for_a_walk_through_a_zone_and_over_a_line() {
        let mut a = Analytics::new(
            vec![LineConfig::parse("gate=100,0,100,200").unwrap()],
            vec![ZoneConfig::parse("bin=0,0,80,0,80,200,0,200").unwrap()],
        );
        let appear = TrackUpdate { appeared: vec![7], ..TrackUpdate::default() };
        let mut all = a.on_tracks(&appear, &[track(7, 40.0, 100.0)]);
        for x in [70.0, 90.0, 110.0, 130.0] {
            all.extend(a.on_tracks(&TrackUpdate::default(), &[track(7, x, 100.0)]));
        }
        all.extend(a.departures(&[track(7, 130.0, 100.0)]));
        let kinds: Vec<String> =
            all.iter().map(|h| serde_json::to_value(h).unwrap()["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["appeared", "entered", "exited", "crossed", "left"]);
        let Happening::Crossed { direction, .. } = &all[3] else { panic!() };
        // Looking down the line (from y=0 to y=200), moving from x<100 to x>100 is right to left.
        assert_eq!(*direction, "backward");
        assert_eq!(a.counts().crossings["gate"], [0, 1]);
        assert_eq!(a.counts().zone_entries["bin"], 1);
        assert_eq!(a.counts().tracks["person"], 1);
    }

    #[test]
    fn labels_change_only_when_they_hold() {
        let mut a = Analytics::new(vec![], vec![]);
        assert!(matches!(a.on_label(Some(("compost", 0.9))), Some(Happening::Label { .. })));
        assert_eq!(a.on_label(Some(("recycling", 0.6))), None);
        assert_eq!(a.on_label(Some(("compost", 0.9))), None);
        assert_eq!(a.on_label(Some(("recycling", 0.6))), None);
        assert_eq!(a.on_label(Some(("recycling", 0.6))), None);
        let changed = a.on_label(Some(("recycling", 0.7)));
        assert_eq!(changed, Some(Happening::Label { label: "recycling".into(), score: 0.7 }));
        assert_eq!(a.counts().labels["recycling"], 4);
    }

    #[test]
    fn bad_geometry_is_refused() {
        assert!(LineConfig::parse("a=1,2,3").is_err());
        assert!(LineConfig::parse("a=1,1,1,1").is_err());
        assert!(LineConfig::parse("1,2,3,4").is_err());
        assert!(ZoneConfig::parse("z=0,0,1,1").is_err());
        assert!(ZoneConfig::parse("z=0,0,1,1,x,2").is_err());
        assert!(ZoneConfig::parse("z=0,0,10,0,10,10,0").is_err());
        assert!(ZoneConfig::parse("z=0,0,10,0,10,10").unwrap().contains((8.0, 2.0)));
    }
}
