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
    /// A JetStream request that timed out or found nobody to answer: what a cluster electing a
    /// leader, or a server restarting, gives for a few seconds. Worth trying again.
    pub fn is_transient(&self) -> bool {
        if !matches!(self, JobError::JetStream { .. }) {
            return false;
        }
        let text = strix_core::error_chain(self).to_ascii_lowercase();
        ["timed out", "timeout", "no responders", "temporarily unavailable", "no leader"]
            .iter()
            .any(|n| text.contains(n))
    }

    /// Wrap a client error with what was being done.
    pub(crate) fn js(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        JobError::JetStream { what: what.into(), source: Box::new(source) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_missing_responders_are_transient_and_nothing_else_is() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "jetstream request timed out");
        assert!(JobError::js("cannot open the task stream S", timed_out).is_transient());
        let none = std::io::Error::other("no responders");
        assert!(JobError::js("cannot read the job", none).is_transient());
        let denied = std::io::Error::other("insufficient resources");
        assert!(!JobError::js("cannot open the task stream S", denied).is_transient());
        assert!(!JobError::Settings("timed out".into()).is_transient());
    }
}
