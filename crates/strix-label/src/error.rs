use std::path::{Path, PathBuf};

/// Everything that can go wrong in a labelling project; each message names what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("labelling database {}: {source}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("{} is not a labelling project (no project.toml); create it with --images DIR --task T --classes a,b", path.display())]
    NotAProject { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
    #[error("no image {0} in this project")]
    NoImage(i64),
    #[error("no cluster {0} in this project (run `strix cluster PROJECT` to make clusters)")]
    NoCluster(u32),
    #[error(
        "image {image} was saved by someone else meanwhile (now version {current}, this save was made on version {expected}); reload it"
    )]
    Stale { image: i64, expected: i64, current: i64 },
    #[error(transparent)]
    Data(#[from] strix_data::DataError),
}

impl LabelError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LabelError + '_ {
        move |source| LabelError::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn db(path: &Path) -> impl FnOnce(sqlx::Error) -> LabelError + '_ {
        move |source| LabelError::Db { path: path.to_path_buf(), source }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> LabelError {
        LabelError::Invalid(reason.into())
    }
}
