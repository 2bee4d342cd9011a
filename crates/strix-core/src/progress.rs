/// How a long operation (a download, a batch of images) reports progress.
///
/// Libraries call this; only the binary turns it into a bar. Implementations must be cheap to
/// call often (once per chunk or item) and safe to call from several threads.
pub trait Progress: Send + Sync {
    /// A new piece of work starts; `total` is its size in `unit`s when known.
    fn start(&self, message: &str, total: Option<u64>, unit: ProgressUnit);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The work is over (finished or abandoned).
    fn finish(&self);
}

/// What a progress count measures, so a bar can format it (bytes as MiB, items as a count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressUnit {
    Bytes,
    Items,
}

/// Reports nothing; for tests and library callers that do not care.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>, _: ProgressUnit) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
