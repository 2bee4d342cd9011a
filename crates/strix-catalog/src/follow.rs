//! Following a registry alias: a thread polls what `NAME@alias` (or a bare name's newest
//! version) points to, and when it moves, resolves the new version and hands it to the
//! caller's `install`, which loads, tests and swaps it in (or refuses it). What Greengrass
//! deployments and Triton's POLL mode give, for a model named by alias.

use std::collections::HashSet;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use strix_core::{ModelVersion, NoProgress, error_chain};
use strix_zoo::ResolvedModel;

use crate::Catalog;

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowEvent {
    /// The reference still names the version being served.
    Unchanged { version: String },
    /// A new version was installed.
    Swapped { from: String, to: String },
    /// A new version failed to resolve, load or answer; the old one stays.
    Refused { version: String, reason: String },
    /// The registry could not be asked (unreachable, the alias removed): nothing changes.
    Failed { reason: String },
}

type Reply = Sender<FollowEvent>;

/// A running follower; dropping it stops the thread after its current check.
#[derive(Debug)]
pub struct Follower {
    poke: Sender<Reply>,
}

/// Installs a resolved version (load it, test it, swap it in) or says why not.
pub type Install = Box<dyn FnMut(ResolvedModel) -> Result<(), String> + Send>;

impl Follower {
    /// Poll `text` every `interval`, starting from `current` (the version being served).
    /// `report` hears of every check that found something (not of unchanged polls). `None`
    /// (nothing started) when there is nothing to follow: the model did not come from the
    /// registry, or `text` names a fixed version (see [`crate::follows_registry`]).
    pub fn spawn(
        catalog: Catalog,
        text: &str,
        current: Option<&ModelVersion>,
        interval: Duration,
        install: Install,
        report: Box<dyn FnMut(&FollowEvent) + Send>,
    ) -> std::io::Result<Option<Follower>> {
        if current.is_none() || !crate::follows_registry(text) {
            return Ok(None);
        }
        let (poke, pokes) = crossbeam_channel::unbounded::<Reply>();
        let mut state = State {
            catalog,
            text: text.to_string(),
            current: current.map(|v| (v.name.clone(), v.version)),
            refused: HashSet::new(),
            install,
        };
        std::thread::Builder::new().name(format!("follow-{text}")).spawn(move || {
            run(&mut state, &pokes, interval, report);
        })?;
        Ok(Some(Follower { poke }))
    }

    /// Check now (a reload request), retrying a version refused before, and say what
    /// happened. Blocks until the check is done.
    pub fn check_now(&self) -> FollowEvent {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self.poke.send(reply).is_err() {
            return FollowEvent::Failed { reason: "the follower has stopped".into() };
        }
        answer.recv().unwrap_or(FollowEvent::Failed { reason: "the follower has stopped".into() })
    }
}

struct State {
    catalog: Catalog,
    text: String,
    current: Option<(String, u64)>,
    /// Versions that failed: not retried by polling (only by an explicit check).
    refused: HashSet<(String, u64)>,
    install: Install,
}

fn run(
    state: &mut State,
    pokes: &Receiver<Reply>,
    interval: Duration,
    mut report: Box<dyn FnMut(&FollowEvent) + Send>,
) {
    loop {
        let reply = match pokes.recv_timeout(interval) {
            Ok(reply) => Some(reply),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let event = state.check(reply.is_some());
        if !matches!(event, FollowEvent::Unchanged { .. }) {
            report(&event);
        }
        if let Some(reply) = reply {
            let _ = reply.send(event);
        }
    }
}

fn show(v: &(String, u64)) -> String {
    format!("{}:{}", v.0, v.1)
}

impl State {
    fn check(&mut self, retry: bool) -> FollowEvent {
        let target = match self.catalog.pointer(&self.text) {
            Ok(Some(target)) => target,
            Ok(None) => return FollowEvent::Failed { reason: format!("{} is not a registry model", self.text) },
            Err(e) => return FollowEvent::Failed { reason: error_chain(&e) },
        };
        if self.current.as_ref() == Some(&target) {
            return FollowEvent::Unchanged { version: show(&target) };
        }
        if !retry && self.refused.contains(&target) {
            return FollowEvent::Unchanged { version: self.current.as_ref().map(show).unwrap_or_default() };
        }
        let outcome = self
            .catalog
            .resolve(&show(&target), &NoProgress)
            .map_err(|e| error_chain(&e))
            .and_then(|model| (self.install)(model));
        match outcome {
            Ok(()) => {
                let from = self.current.replace(target.clone()).as_ref().map(show).unwrap_or_default();
                self.refused.remove(&target);
                FollowEvent::Swapped { from, to: show(&target) }
            }
            Err(reason) => {
                self.refused.insert(target.clone());
                FollowEvent::Refused { version: show(&target), reason }
            }
        }
    }
}
