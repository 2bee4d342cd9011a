//! The one integration-test binary: runtimes, classification against the onnxruntime
//! references, the CLI, and downloads from a local HTTP server.
//!
//! Fixtures come from `../shared/fixtures` beside the project (or `STRIX_FIXTURES`). Under
//! `CI=true` a missing fixture folder or ONNX Runtime library fails the tests instead of
//! skipping them.

// Test helpers panic on purpose: a failed set-up step is a failed test.
#![allow(clippy::unwrap_used)]

mod batch;
mod byo;
mod classify;
mod cli;
mod deploy;
mod detect_data;
mod detect_train;
mod docs;
mod download;
mod eval;
mod export;
mod follow;
mod gate;
mod hostile;
mod http;
mod index;
mod knn;
mod kserve;
mod label;
mod layers;
mod monitor;
mod optimize;
mod pipeline;
mod registry;
mod runner;
mod runtime;
mod serve;
mod serve_faults;
mod stream;
mod stream_follow;
mod support;
mod tasks;
mod train;
mod train_job;
mod tune;
