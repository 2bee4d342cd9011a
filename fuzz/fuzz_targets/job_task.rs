//! A job queue message (NATS JetStream payloads come from any publisher on the subject).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(task) = strix_jobs::Task::parse(data, 1 << 20) {
        let _ = task.key();
    }
});
