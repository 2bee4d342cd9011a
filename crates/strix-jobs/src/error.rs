/// What went wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("queue settings: {0}")]
    Settings(String),
    #[error("cannot reach the queue at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// A JetStream request (stream, consumer, bucket, publish, fetch) failed.
    #[error("{what}")]
    JetStream {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no job {0}")]
    NoJob(String),
    #[error("job {id}: {reason}")]
    Refused { id: String, reason: String },
    #[error("a stored state is not readable: {key}")]
    State {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl JobError {
    /// Wrap a client error with what was being done.
    pub(crate) fn js(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        JobError::JetStream { what: what.into(), source: Box::new(source) }
    }
}
