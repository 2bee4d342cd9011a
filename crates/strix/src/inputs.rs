//! Turning the paths on the command line into a list of image files.

use std::path::{Path, PathBuf};

use strix_vision::is_image_path;

/// A labelling project's images (opened and closed here, outside any async runtime): each
/// row, its current labels and its file.
#[cfg(feature = "full")]
pub type ProjectFiles = Vec<(strix_label::ImageRow, Option<strix_label::Annotation>, PathBuf)>;

#[cfg(feature = "full")]
pub fn project_files(dir: &Path) -> anyhow::Result<ProjectFiles> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(rt.block_on(async {
        let project = strix_label::Project::open(dir).await?;
        let rows = project.files().await;
        project.store.close().await;
        rows
    })?)
}

/// Files named on the command line are taken as they are (a wrong one gets its own error
/// later); folders are searched recursively, in name order, for image extensions. Problems
/// reading a folder are returned beside the files.
pub fn expand(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = files.len();
            walk(path, &mut files, &mut problems);
            if files.len() == before {
                problems.push((path.clone(), "no image files in this folder".to_string()));
            }
        } else {
            files.push(path.clone());
        }
    }
    (files, problems)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push((dir.to_path_buf(), format!("cannot read folder: {e}")));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        // file_type() does not follow links: linked folders are skipped, so no cycles.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, files, problems);
        } else if (kind.is_file() || (kind.is_symlink() && path.is_file())) && is_image_path(&path) {
            files.push(path);
        }
    }
}

/// `path` made absolute (against the current folder), as written where it cannot be.
#[cfg(feature = "full")]
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `--since`: a time (RFC 3339) or an age (`24h`: that long ago).
#[cfg(feature = "full")]
pub fn since(text: &str) -> anyhow::Result<std::time::SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    use anyhow::Context as _;
    let age = humantime::parse_duration(text)
        .with_context(|| format!("--since {text:?}: give a time (2026-12-01T00:00:00Z) or an age (24h)"))?;
    std::time::SystemTime::now().checked_sub(age).context("--since reaches before 1970")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_in_order_and_files_kept_as_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for f in ["b.JPG", "a.png", "notes.txt", "sub/c.webp"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        std::fs::create_dir(d.join("empty")).unwrap();
        let (files, problems) = expand(&[d.to_path_buf(), d.join("notes.txt"), d.join("empty")]);
        let names: Vec<String> =
            files.iter().map(|p| p.strip_prefix(d).unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, vec!["a.png", "b.JPG", "sub/c.webp", "notes.txt"]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains("no image files"));
    }
}
