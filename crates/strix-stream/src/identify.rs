//! Naming tracks: a track's crop is looked up among known identities (faces or objects in a
//! vector index) a few times until one matches, and the match becomes an `identified` event.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use strix_core::BBox;
use strix_vision::RgbImage;

use crate::analytics::Happening;
use crate::track::{Track, TrackUpdate};

/// Who or what a track is, as the index knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Identity {
    /// The matched entry's external id, else its image.
    pub name: String,
    /// Cosine similarity of the track's crop to the entry, -1 to 1.
    pub similarity: f32,
    /// The entry's id in the index.
    pub entry: u64,
}

/// Looks up what a box of a frame shows.
pub trait Identifier: Send + Sync {
    /// The index's name, for events.
    fn index(&self) -> &str;
    /// The best match for the `bbox` part of `frame` if it is similar enough; an error when
    /// the crop cannot be looked up (no face in it, the model failed).
    fn identify(&self, frame: &RgbImage, bbox: BBox) -> Result<Option<Identity>, String>;
}

/// How tracks are named.
#[derive(Clone)]
pub struct IdentifySettings {
    pub identifier: Arc<dyn Identifier>,
    /// Frames between two tries on one track.
    pub every_frames: u64,
    /// Tries on one track before it is left unnamed.
    pub max_tries: u32,
}

impl std::fmt::Debug for IdentifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifySettings")
            .field("index", &self.identifier.index())
            .field("every_frames", &self.every_frames)
            .field("max_tries", &self.max_tries)
            .finish()
    }
}

#[derive(Default)]
struct TrackState {
    tries: u32,
    last_frame: u64,
    identity: Option<Identity>,
}

/// One source's tracks and what is known of them.
pub(crate) struct Identifying {
    settings: IdentifySettings,
    tracks: HashMap<u64, TrackState>,
    /// Failures so far (the first few are logged).
    failures: u64,
}

impl Identifying {
    pub fn new(settings: IdentifySettings) -> Identifying {
        Identifying { settings, tracks: HashMap::new(), failures: 0 }
    }

    /// Try the tracks seen in frame `index` that are still unnamed and due; the names found.
    pub fn on_frame(&mut self, index: u64, image: &RgbImage, tracks: &[Track], update: &TrackUpdate) -> Vec<Happening> {
        for gone in &update.left {
            self.tracks.remove(&gone.id);
        }
        let s = &self.settings;
        let mut happened = Vec::new();
        for t in tracks.iter().filter(|t| t.seen) {
            let state = self.tracks.entry(t.id).or_default();
            let due = state.tries == 0 || index >= state.last_frame.saturating_add(s.every_frames.max(1));
            if state.identity.is_some() || state.tries >= s.max_tries || !due {
                continue;
            }
            state.tries += 1;
            state.last_frame = index;
            match s.identifier.identify(image, t.bbox) {
                Ok(Some(identity)) => {
                    happened.push(Happening::Identified {
                        track_id: t.id,
                        class: t.label.clone(),
                        name: identity.name.clone(),
                        similarity: identity.similarity,
                        index: s.identifier.index().to_string(),
                        entry: identity.entry,
                    });
                    state.identity = Some(identity);
                }
                Ok(None) => {}
                Err(e) => {
                    self.failures += 1;
                    if self.failures <= 3 {
                        tracing::warn!(track = t.id, "cannot look track {} up in {}: {e}", t.id, s.identifier.index());
                    }
                }
            }
        }
        happened
    }

    /// The name of track `id`, once it has one.
    pub fn name_of(&self, id: u64) -> Option<&Identity> {
        self.tracks.get(&id).and_then(|s| s.identity.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::track::Activity;

    /// Names a box "left" when it is in the left half, after `misses` failed looks.
    struct Halves {
        calls: Mutex<Vec<u64>>,
        misses: usize,
    }

    impl Identifier for Halves {
        fn index(&self) -> &str {
            "halves"
        }

        fn identify(&self, frame: &RgbImage, bbox: BBox) -> Result<Option<Identity>, String> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(bbox.x1 as u64);
            if calls.len() <= self.misses {
                return Ok(None);
            }
            Ok((bbox.x2 <= frame.width() as f32 / 2.0).then(|| Identity {
                name: "left".into(),
                similarity: 0.9,
                entry: 7,
            }))
        }
    }

    fn track(id: u64, x: f32, seen: bool) -> Track {
        Track {
            id,
            class_id: 0,
            label: "person".into(),
            bbox: BBox { x1: x, y1: 0.0, x2: x + 10.0, y2: 10.0 },
            score: 0.9,
            velocity: (0.0, 0.0),
            first_seen_s: 0.0,
            last_seen_s: 0.0,
            seen,
            source: None,
            activity: Activity::Moving,
        }
    }

    #[test]
    fn a_track_is_named_once_and_tries_stop_at_the_limit() {
        let halves = Arc::new(Halves { calls: Mutex::new(Vec::new()), misses: 1 });
        let settings = IdentifySettings { identifier: halves.clone(), every_frames: 2, max_tries: 3 };
        let mut ids = Identifying::new(settings);
        let frame = RgbImage::new(100, 10);
        let none = TrackUpdate::default();
        let mut named = Vec::new();
        for index in 0..12 {
            // Track 1 on the left, track 2 on the right; track 3 unseen throughout.
            let tracks = [track(1, 5.0, true), track(2, 80.0, true), track(3, 5.0, false)];
            named.extend(ids.on_frame(index, &frame, &tracks, &none));
        }
        // Frame 0: both tried (track 1 missed); frame 2: track 1 named, track 2 not;
        // frame 4: track 2's third and last try.
        assert_eq!(*halves.calls.lock().unwrap(), [5, 80, 5, 80, 80]);
        assert_eq!(named.len(), 1);
        assert!(matches!(&named[0], Happening::Identified { track_id: 1, name, entry: 7, .. } if name == "left"));
        assert_eq!(ids.name_of(1).map(|i| i.name.as_str()), Some("left"));
        assert!(ids.name_of(2).is_none() && ids.name_of(3).is_none());
        // A track that left is forgotten.
        let left = TrackUpdate { left: vec![track(1, 5.0, false)], ..TrackUpdate::default() };
        ids.on_frame(13, &frame, &[], &left);
        assert!(ids.name_of(1).is_none());
    }
}
