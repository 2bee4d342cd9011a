//! The bounded queues between the decoders and inference: one per source, all behind one lock
//! so the inference loop can wait for "a frame from any source" and batch across sources.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// What happens to a frame that arrives while the queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FramePolicy {
    /// Drop the oldest waiting frame: answers are about the newest picture (lowest lag).
    #[default]
    Latest,
    /// Wait for room: every frame is processed, however late.
    All,
}

impl std::str::FromStr for FramePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(FramePolicy::Latest),
            "all" => Ok(FramePolicy::All),
            _ => Err(format!("unknown frame policy {s:?} (latest or all)")),
        }
    }
}

impl std::fmt::Display for FramePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FramePolicy::Latest => "latest",
            FramePolicy::All => "all",
        })
    }
}

struct Lane<T> {
    items: VecDeque<T>,
    capacity: usize,
    policy: FramePolicy,
    closed: bool,
    /// Items taken so far: the next one's sequence number.
    taken: u64,
}

/// Per-source queues sharing one lock and one condition variable.
pub struct Queues<T> {
    lanes: Mutex<Vec<Lane<T>>>,
    changed: Condvar,
}

impl<T> Queues<T> {
    /// One lane per source, each with its capacity and policy.
    pub fn new(lanes: impl IntoIterator<Item = (usize, FramePolicy)>) -> Self {
        let lanes = lanes
            .into_iter()
            .map(|(capacity, policy)| Lane {
                items: VecDeque::new(),
                capacity: capacity.max(1),
                policy,
                closed: false,
                taken: 0,
            })
            .collect();
        Queues { lanes: Mutex::new(lanes), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Lane<T>>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue an item: under `Latest` the oldest waiting ones make room; under `All` this waits
    /// for room. Returns how many were dropped to make room, for the caller to count. Items
    /// pushed to a closed lane are handed back.
    pub fn push(&self, lane: usize, item: T) -> Result<u64, T> {
        let mut lanes = self.lock();
        let mut dropped = 0;
        loop {
            let l = &mut lanes[lane];
            if l.closed {
                return Err(item);
            }
            if l.items.len() < l.capacity {
                l.items.push_back(item);
                self.changed.notify_all();
                return Ok(dropped);
            }
            match l.policy {
                FramePolicy::Latest => {
                    if l.items.pop_front().is_some() {
                        dropped += 1;
                    }
                }
                FramePolicy::All => lanes = self.changed.wait(lanes).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// No more items for this lane (its source ended, or the run stops).
    pub fn close(&self, lane: usize) {
        self.lock()[lane].closed = true;
        self.changed.notify_all();
    }

    /// Close every lane and drop what waits (a stop: pushers waiting for room return).
    pub fn close_all(&self) {
        let mut lanes = self.lock();
        for l in lanes.iter_mut() {
            l.closed = true;
            l.items.clear();
        }
        self.changed.notify_all();
    }

    /// Up to `max` items, at most one per lane, starting after `after` so lanes take turns;
    /// waits while every open lane is empty. `None` once all lanes are closed and empty. Each
    /// item comes with its lane and its sequence number in that lane (0, 1, 2... in the order
    /// taken), so answers computed in parallel can be put back in order.
    pub fn take(&self, max: usize, after: usize) -> Option<Vec<(usize, u64, T)>> {
        let mut lanes = self.lock();
        loop {
            let n = lanes.len();
            let mut out = Vec::new();
            for k in 0..n {
                let i = (after + 1 + k) % n;
                if out.len() < max.max(1)
                    && let Some(item) = lanes[i].items.pop_front()
                {
                    out.push((i, lanes[i].taken, item));
                    lanes[i].taken += 1;
                }
            }
            if !out.is_empty() {
                self.changed.notify_all();
                return Some(out);
            }
            if lanes.iter().all(|l| l.closed) {
                return None;
            }
            lanes = self.changed.wait(lanes).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn latest_keeps_the_newest_and_counts_drops() {
        let q = Queues::new([(2, FramePolicy::Latest)]);
        let dropped: Vec<u64> = (0..5).map(|i| q.push(0, i).unwrap()).collect();
        assert_eq!(dropped, [0, 0, 1, 1, 1]);
        assert_eq!(q.take(8, 0).unwrap(), vec![(0, 0, 3)]);
        assert_eq!(q.take(8, 0).unwrap(), vec![(0, 1, 4)]);
        q.close(0);
        assert!(q.take(8, 0).is_none());
        assert_eq!(q.push(0, 9), Err(9));
    }

    #[test]
    fn all_waits_for_room_and_loses_nothing() {
        let q = Arc::new(Queues::new([(1, FramePolicy::All)]));
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    assert_eq!(q.push(0, i), Ok(0));
                }
                q.close(0);
            })
        };
        let mut got = Vec::new();
        while let Some(batch) = q.take(4, 0) {
            got.extend(batch.into_iter().map(|(_, _, v)| v));
        }
        producer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn batches_take_one_frame_per_source_in_turn() {
        let q = Queues::new([(4, FramePolicy::All), (4, FramePolicy::All), (4, FramePolicy::All)]);
        for lane in 0..3 {
            q.push(lane, lane * 10).unwrap();
            q.push(lane, lane * 10 + 1).unwrap();
        }
        assert_eq!(q.take(8, 2).unwrap(), vec![(0, 0, 0), (1, 0, 10), (2, 0, 20)]);
        // Two at most: lane 1 goes first after lane 0.
        assert_eq!(q.take(2, 0).unwrap(), vec![(1, 1, 11), (2, 1, 21)]);
        assert_eq!(q.take(2, 2).unwrap(), vec![(0, 1, 1)]);
    }
}
