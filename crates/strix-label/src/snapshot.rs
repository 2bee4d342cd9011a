//! The training-snapshot rule: training reads a project's labels as an export kept under
//! `PROJECT/snapshots/<digest>/`, where the digest covers the classes and every labelled
//! image's id, label version and file. A resumed run finds the very data it started on, and
//! new or changed labels make a new snapshot instead of changing one a run is reading.

use std::path::PathBuf;

use crate::LabelError;
use crate::export::{self, Format};
use crate::labels::LabelTask;
use crate::project::Project;

/// The folder a snapshot lives in, below the project.
const SNAPSHOTS: &str = "snapshots";

/// Hex digits of the digest naming a snapshot's folder: enough that two label states never
/// share one, short enough to read in a path.
const NAME_LEN: usize = 16;

/// A project's labels as training reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// `PROJECT/snapshots/<digest>/`, in the format [`Format::for_training`] gives the task.
    pub dir: PathBuf,
    /// The project's task, which the training run takes.
    pub task: LabelTask,
    /// Whether this call wrote it (`false`: the labels had not changed since it was made).
    pub created: bool,
}

/// Why a project cannot be handed to training.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{} is a {project} project; a {wanted} model cannot train on it", dir.display())]
    WrongTask { dir: PathBuf, project: LabelTask, wanted: strix_core::Task },
    #[error("{} has no labelled images yet", dir.display())]
    NothingLabelled { dir: PathBuf },
    #[error("snapshot of {} for training", dir.display())]
    Export {
        dir: PathBuf,
        #[source]
        source: LabelError,
    },
}

/// The snapshot of `project`'s labels as of now, exported unless the same labels were
/// snapshotted before. A `wanted` task other than the project's is refused before anything is
/// written.
pub async fn training_snapshot(project: &Project, wanted: Option<strix_core::Task>) -> Result<Snapshot, SnapshotError> {
    let task = project.config.task;
    let export_err = |source| SnapshotError::Export { dir: project.dir.clone(), source };
    if let Some(wanted) = wanted.filter(|w| *w != strix_core::Task::from(task)) {
        return Err(SnapshotError::WrongTask { dir: project.dir.clone(), project: task, wanted });
    }
    let labelled = project.store.labelled().await.map_err(export_err)?;
    if labelled.is_empty() {
        return Err(SnapshotError::NothingLabelled { dir: project.dir.clone() });
    }
    let digest = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(project.config.classes.join("\n"));
        for (img, a) in &labelled {
            h.update(format!("{}:{}:{}\n", img.id, a.version, img.file));
        }
        hex::encode(h.finalize())
    };
    let dir = project.dir.join(SNAPSHOTS).join(&digest[..NAME_LEN]);
    // An export is renamed into place whole, so a folder that exists is a finished snapshot.
    let created = !dir.is_dir();
    if created {
        export::export(project, Format::for_training(task), &dir).await.map_err(export_err)?;
    }
    Ok(Snapshot { dir, task, created })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;
    use crate::project::ProjectConfig;

    /// A classification project on two tiny photos, classes `a` and `b`.
    async fn project(dir: &std::path::Path) -> Project {
        let images = dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        for f in ["one.png", "two.png"] {
            image::RgbImage::new(8, 6).save(images.join(f)).unwrap();
        }
        let config = ProjectConfig { task: LabelTask::Classify, classes: vec!["a".into(), "b".into()], images };
        let project = Project::create(&dir.join("p"), config).await.unwrap();
        project.scan().await.unwrap();
        project
    }

    fn class(c: &str) -> Labels {
        Labels { class: Some(c.into()), boxes: Vec::new() }
    }

    /// The classes in a folder export: `class/file` for every image in it.
    fn exported(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for class in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
            for file in std::fs::read_dir(&class).unwrap() {
                let name = |p: &std::path::Path| p.file_name().unwrap().to_string_lossy().into_owned();
                out.push(format!("{}/{}", name(&class), name(&file.unwrap().path())));
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn same_labels_same_snapshot_new_labels_a_new_one() {
        let d = tempfile::tempdir().unwrap();
        let p = project(d.path()).await;
        let ids: Vec<i64> = p.store.images(0, 10).await.unwrap().iter().map(|(r, _)| r.id).collect();
        p.store.save(ids[0], 0, &class("a"), false, "test").await.unwrap();

        let first = training_snapshot(&p, None).await.unwrap();
        assert!(first.created && first.dir.starts_with(p.dir.join(SNAPSHOTS)), "{first:?}");
        assert_eq!(first.task, LabelTask::Classify);
        assert_eq!(exported(&first.dir), ["a/one.png"]);
        // Asking again with nothing changed finds the same folder and writes nothing.
        let again = training_snapshot(&p, Some(strix_core::Task::Classify)).await.unwrap();
        assert_eq!(again, Snapshot { created: false, ..first.clone() });

        // A relabelled image (a new version) makes a new snapshot; the old one stays as it was.
        p.store.save(ids[0], 1, &class("b"), false, "test").await.unwrap();
        let relabelled = training_snapshot(&p, None).await.unwrap();
        assert!(relabelled.created);
        assert_ne!(relabelled.dir, first.dir);
        assert_eq!(exported(&relabelled.dir), ["b/one.png"]);
        assert_eq!(exported(&first.dir), ["a/one.png"]);

        // So does a newly labelled image.
        p.store.save(ids[1], 0, &class("a"), false, "test").await.unwrap();
        let more = training_snapshot(&p, None).await.unwrap();
        assert!(more.created && more.dir != relabelled.dir && more.dir != first.dir);
        assert_eq!(exported(&more.dir), ["a/two.png", "b/one.png"]);
    }

    #[tokio::test]
    async fn another_task_or_no_labels_is_refused_and_nothing_is_written() {
        let d = tempfile::tempdir().unwrap();
        let p = project(d.path()).await;
        let err = training_snapshot(&p, None).await.unwrap_err();
        assert!(matches!(err, SnapshotError::NothingLabelled { .. }), "{err}");

        let id = p.store.images(0, 1).await.unwrap()[0].0.id;
        p.store.save(id, 0, &class("a"), false, "test").await.unwrap();
        let err = training_snapshot(&p, Some(strix_core::Task::Detect)).await.unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::WrongTask { project: LabelTask::Classify, wanted: strix_core::Task::Detect, .. }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("{} is a classify project; a detect model cannot train on it", p.dir.display())
        );
        assert!(!p.dir.join(SNAPSHOTS).exists(), "a refused snapshot wrote a folder");
    }
}
