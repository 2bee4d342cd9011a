//! What happens to each answered frame of one source: tracking, events, numbers, the live
//! views and the recording. Runs on the source's own thread, in frame order.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use image::{Rgb, RgbImage};
use imageproc::drawing::draw_line_segment_mut;
use strix_core::{BBox, Detection, Progress};
use strix_pipeline::{Answer, Prediction, annotate};
use strix_vision::{draw, encode_jpeg};

use crate::analytics::{Analytics, Detected, Happening, Scored, TrackBrief, bbox_array};
use crate::error::StreamError;
use crate::identify::Identifying;
use crate::record::Recorder;
use crate::sinks::Event;
use crate::source::SourceStopper;
use crate::track::{Activity, Observation, Track, Tracker};
use crate::web::Board;

/// A frame with the model's answer.
pub(crate) struct Answered {
    /// Order in which the frame left its queue (answers may arrive out of it).
    pub seq: u64,
    pub index: u64,
    pub time_s: f64,
    pub arrived: Instant,
    pub image: Arc<RgbImage>,
    pub prediction: Prediction,
    /// The registry version that answered.
    pub version: Option<Arc<str>>,
}

pub(crate) struct SourceOutput {
    pub lane: usize,
    pub name: String,
    /// Box answers are tracked; other tasks are not.
    pub tracker: Option<Tracker>,
    pub analytics: Analytics,
    pub classes: Vec<String>,
    pub frame_events: bool,
    pub recorder: Option<(PathBuf, Recorder)>,
    pub jpeg_quality: f32,
    pub board: Arc<Board>,
    pub events: crossbeam_channel::Sender<Vec<Event>>,
    pub max_frames: Option<u64>,
    pub stopper: SourceStopper,
    pub progress: Arc<dyn Progress>,
    pub processed: u64,
    /// Sees each answered frame, with the model's name for answers no version label names.
    pub tap: Option<(Arc<dyn strix_pipeline::Tap>, String)>,
    /// Names tracks from an index (`--index`).
    pub identifying: Option<Identifying>,
}

impl SourceOutput {
    /// Whether the source has given all the frames asked for.
    pub fn done(&self) -> bool {
        self.max_frames.is_some_and(|m| self.processed >= m)
    }

    pub fn handle(&mut self, a: Answered) -> Result<(), StreamError> {
        if self.done() {
            return Ok(());
        }
        self.processed += 1;
        if let Some((tap, model)) = &self.tap {
            tap.frame(&a.image, a.version.as_deref().unwrap_or(model), &a.prediction);
        }
        let mut happened = Vec::new();
        let observations = self.observations(&a.prediction);
        let tracks = match (&mut self.tracker, &observations) {
            (Some(tracker), Some(obs)) => {
                let update = tracker.update(a.time_s, obs);
                let tracks = tracker.tracks();
                happened.extend(self.analytics.on_tracks(&update, &tracks));
                if let Some(ids) = &mut self.identifying {
                    happened.extend(ids.on_frame(a.index, &a.image, &tracks, &update));
                }
                tracks
            }
            _ => Vec::new(),
        };
        if let Answer::Labels { classes } = &a.prediction.answer {
            happened.extend(self.analytics.on_label(classes.first().map(|c| (c.label.as_str(), c.score))));
        }
        if self.frame_events {
            let named = |id: u64| self.identifying.as_ref().and_then(|i| i.name_of(id)).map(|i| i.name.clone());
            happened.insert(0, frame_happening(&a.prediction, observations.as_deref(), &tracks, named));
        }
        let now = Instant::now();
        {
            let mut m = self.board.meter(self.lane);
            m.processed(now, now.duration_since(a.arrived).as_secs_f64() * 1000.0);
            m.stats.tracks_now = tracks.len();
            m.stats.counts = self.analytics.counts().clone();
        }
        self.progress.advance(1);
        emit(&self.board, &self.events, (&self.name, a.version.as_deref()), a.index, a.time_s, happened);
        self.views(&a, &tracks)?;
        if self.done() {
            self.stopper.stop();
        }
        Ok(())
    }

    /// Encode the frames someone watches, and record.
    fn views(&mut self, a: &Answered, tracks: &[Track]) -> Result<(), StreamError> {
        let views = &self.board.views[self.lane];
        let (project, device) = views.watched();
        if device {
            let jpeg = encode_jpeg(&a.image, self.jpeg_quality)?;
            views.device.send_replace(Some(Bytes::from(jpeg)));
        }
        if !project && self.recorder.is_none() {
            return Ok(());
        }
        let mut img = (*a.image).clone();
        if self.tracker.is_some() {
            draw_tracks(&mut img, tracks, self.identifying.as_ref());
        } else {
            annotate(&mut img, &a.prediction);
        }
        self.draw_geometry(&mut img);
        let hud = {
            let m = self.board.meter(self.lane);
            format!(
                "frame {}  {:.1} fps  lag {:.0} ms  dropped {}",
                a.index,
                m.stats.fps,
                m.lag.summary().p50,
                m.stats.dropped
            )
        };
        let bottom = img.height() as f32;
        draw::tag(&mut img, 0.0, bottom, &hud, Rgb([40, 40, 40]));
        if project {
            views.project.send_replace(Some(Bytes::from(encode_jpeg(&img, self.jpeg_quality)?)));
        }
        if let Some((_, rec)) = &mut self.recorder {
            rec.write(&img)?;
        }
        Ok(())
    }

    fn draw_geometry(&self, img: &mut RgbImage) {
        let yellow = Rgb([255, 225, 25]);
        for l in self.analytics.lines() {
            thick_line(img, (l.from[0], l.from[1]), (l.to[0], l.to[1]), yellow);
            let c = self.analytics.counts().crossings.get(&l.name).copied().unwrap_or_default();
            draw::tag(img, l.from[0], l.from[1], &format!("{} fwd {} back {}", l.name, c[0], c[1]), Rgb([120, 100, 0]));
        }
        let cyan = Rgb([70, 240, 240]);
        for z in self.analytics.zones() {
            for (i, p) in z.points.iter().enumerate() {
                let q = z.points[(i + 1) % z.points.len()];
                thick_line(img, (p[0], p[1]), (q[0], q[1]), cyan);
            }
            draw::tag(img, z.points[0][0], z.points[0][1], &z.name, Rgb([0, 110, 110]));
        }
    }

    /// Detections offered to the tracker, for tasks with boxes; `None` for the others.
    fn observations(&self, p: &Prediction) -> Option<Vec<Observation>> {
        let keep = |label: &str| self.classes.is_empty() || self.classes.iter().any(|c| c == label);
        let obs = |(source, (bbox, score, class_id, label)): (usize, (BBox, f32, usize, &str))| Observation {
            bbox,
            score,
            class_id,
            label: label.to_string(),
            source,
        };
        let all: Vec<Observation> = match &p.answer {
            Answer::Objects { objects } => {
                objects.iter().map(|d| (d.bbox, d.score, d.class_id, d.label.as_str())).enumerate().map(obs).collect()
            }
            Answer::Faces { faces } => {
                faces.iter().map(|f| (f.bbox, f.score, 0, "face")).enumerate().map(obs).collect()
            }
            Answer::People { people } => {
                people.iter().map(|q| (q.bbox, q.score, 0, "person")).enumerate().map(obs).collect()
            }
            _ => return None,
        };
        Some(all.into_iter().filter(|o| keep(&o.label)).collect())
    }

    /// End of the source: remaining tracks leave, the recording closes.
    pub fn finish(&mut self) -> Result<Option<(PathBuf, u64)>, StreamError> {
        if let Some(tracker) = &mut self.tracker {
            let left = tracker.finish();
            let happened = self.analytics.departures(&left);
            let time_s = left.iter().map(|t| t.last_seen_s).fold(0.0, f64::max);
            let version = self.board.version();
            let frame = self.processed.saturating_sub(1);
            emit(&self.board, &self.events, (&self.name, version.as_deref()), frame, time_s, happened);
            let mut m = self.board.meter(self.lane);
            m.stats.counts = self.analytics.counts().clone();
            m.stats.tracks_now = 0;
        }
        match self.recorder.take() {
            Some((path, rec)) => Ok(Some((path, rec.finish()?))),
            None => Ok(None),
        }
    }
}

/// Events of one frame (or moment) of a source: kept for the page and sent to the sinks.
/// Send what happened at `frame` of `source`, answered by `version`.
pub(crate) fn emit(
    board: &Board,
    events: &crossbeam_channel::Sender<Vec<Event>>,
    (source, version): (&str, Option<&str>),
    frame: u64,
    time_s: f64,
    happened: Vec<Happening>,
) {
    if happened.is_empty() {
        return;
    }
    let batch: Vec<Event> = happened
        .into_iter()
        .map(|what| Event {
            source: source.to_string(),
            frame,
            time_s: round3(time_s),
            model_version: version.map(str::to_string),
            what,
        })
        .collect();
    board.remember(&batch);
    // The events thread outlives every sender; a send fails only if it panicked.
    let _ = events.send(batch);
}

fn frame_happening(
    p: &Prediction,
    observations: Option<&[Observation]>,
    tracks: &[Track],
    named: impl Fn(u64) -> Option<String>,
) -> Happening {
    let detections = observations
        .unwrap_or_default()
        .iter()
        .map(|o| Detected { class: o.label.clone(), score: round4(o.score), bbox: bbox_array(&o.bbox) })
        .collect();
    // The person this frame's detection of the track came from.
    let skeleton = |t: &Track| match (&p.answer, t.source) {
        (Answer::People { people }, Some(i)) => people.get(i).map(|q| q.keypoints.clone()).unwrap_or_default(),
        _ => Vec::new(),
    };
    let tracks = tracks
        .iter()
        .filter(|t| t.seen)
        .map(|t| TrackBrief {
            track_id: t.id,
            class: t.label.clone(),
            bbox: bbox_array(&t.bbox),
            state: t.activity,
            identity: named(t.id),
            keypoints: skeleton(t),
        })
        .collect();
    let labels = match &p.answer {
        Answer::Labels { classes } => {
            classes.iter().map(|c| Scored { label: c.label.clone(), score: round4(c.score) }).collect()
        }
        _ => Vec::new(),
    };
    Happening::Frame { detections, tracks, labels }
}

/// Tracks as boxes labelled `#id class`, coloured by id so each keeps its colour.
fn draw_tracks(img: &mut RgbImage, tracks: &[Track], identifying: Option<&Identifying>) {
    let boxes: Vec<Detection> = tracks
        .iter()
        .filter(|t| t.seen)
        .map(|t| Detection {
            bbox: t.bbox,
            score: t.score,
            class_id: t.id as usize,
            label: format!(
                "#{} {}{}{}",
                t.id,
                t.label,
                identifying
                    .and_then(|i| i.name_of(t.id))
                    .map_or(String::new(), |n| format!(" {} {:.2}", n.name, n.similarity)),
                if t.activity == Activity::Still { " (still)" } else { "" }
            ),
        })
        .collect();
    draw::detections(img, &boxes);
}

fn thick_line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), c: Rgb<u8>) {
    for o in [-1.0, 0.0, 1.0] {
        draw_line_segment_mut(img, (a.0 + o, a.1), (b.0 + o, b.1), c);
        draw_line_segment_mut(img, (a.0, a.1 + o), (b.0, b.1 + o), c);
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round4(v: f32) -> f32 {
    (v * 1e4).round() / 1e4
}
