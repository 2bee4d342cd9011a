//! Listing the images, cutting them into shards, and finding the shards already done.

use crate::{BatchError, BatchSpec, Failure, MAX_OWN_FILE, Place, SPEC_FILE, ShardOutcome, ShardSpec, shard_file};

/// A batch's shards: all of them, and which still need running.
#[derive(Debug)]
pub struct Plan {
    pub images: usize,
    pub shards: Vec<ShardSpec>,
    /// Shards whose output is already complete (skipped), as read back from their files.
    pub done: Vec<ShardOutcome>,
    /// Shard files under the output that this batch will not write (an earlier batch with
    /// more shards): removed before any shard runs, so no image is answered twice.
    pub stale: Vec<String>,
    /// The output holds another batch's answers (another model or options): none is kept.
    pub spec_changed: bool,
}

impl Plan {
    /// Shards still to run.
    pub fn to_run(&self) -> Vec<ShardSpec> {
        self.shards.iter().filter(|s| !self.done.iter().any(|d| d.index == s.index)).cloned().collect()
    }

    /// Before any shard runs: record the batch's spec under the output and remove the stale
    /// shard files.
    pub async fn prepare(&self, spec: &BatchSpec, output: &Place) -> Result<(), BatchError> {
        let bytes = serde_json::to_vec_pretty(spec).map_err(BatchError::json("the batch spec"))?;
        output.put(SPEC_FILE, bytes).await?;
        for key in &self.stale {
            output.delete(key).await?;
        }
        Ok(())
    }
}

/// List `spec.input`'s images (by extension, as `strix predict` picks them from a folder),
/// sorted, in shards of `spec.shard_size`. When the output holds this same batch's spec, a
/// shard whose file holds exactly its images' lines is done.
pub async fn plan(spec: &BatchSpec, input: &Place, output: &Place) -> Result<Plan, BatchError> {
    if spec.shard_size == 0 {
        return Err(BatchError::Invalid("the shard size must be at least 1".into()));
    }
    let keys: Vec<String> =
        input.list().await?.into_iter().filter(|k| strix_vision::is_image_path(std::path::Path::new(k))).collect();
    if keys.is_empty() {
        return Err(BatchError::Place {
            place: input.url().into(),
            what: "no images there (.jpg .jpeg .png .webp .gif .bmp .tif .tiff)".into(),
            source: None,
        });
    }
    let shards: Vec<ShardSpec> = keys
        .chunks(spec.shard_size)
        .enumerate()
        .map(|(i, chunk)| ShardSpec { batch: spec.clone(), index: i as u32, images: chunk.to_vec() })
        .collect();
    let previous = output.get_if_there(SPEC_FILE, MAX_OWN_FILE).await?;
    let same =
        previous.as_deref().and_then(|b| serde_json::from_slice::<BatchSpec>(b).ok()).is_some_and(|p| &p == spec);
    let parts: Vec<u32> = output.list().await?.iter().filter_map(|k| crate::shard_of_file(k)).collect();
    let mut done = Vec::new();
    for shard in shards.iter().filter(|s| same && parts.contains(&s.index)) {
        if let Some(bytes) = output.get_if_there(&shard_file(shard.index), MAX_OWN_FILE).await?
            && let Some(outcome) = complete(&bytes, shard, input)
        {
            done.push(outcome);
        }
    }
    let stale = parts.iter().filter(|&&i| i as usize >= shards.len()).map(|&i| shard_file(i)).collect();
    Ok(Plan { images: keys.len(), shards, done, stale, spec_changed: previous.is_some() && !same })
}

/// A shard file's outcome (its error lines as failures) and the images it names, in order;
/// `None` when it is not whole JSON Lines of answers.
pub fn read_outcome(bytes: &[u8], index: u32) -> Option<(ShardOutcome, Vec<String>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut failures = Vec::new();
    let mut names = Vec::new();
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).ok()?;
        let name = line["Image"].as_str()?.to_string();
        if let Some(message) = line["Error"]["Message"].as_str() {
            failures.push(Failure { image: name.clone(), error: message.to_string() });
        }
        names.push(name);
    }
    let outcome = ShardOutcome { index, file: shard_file(index), images: names.len(), failures, seconds: 0.0 };
    Some((outcome, names))
}

/// A shard file is complete when its lines name exactly the shard's images, in order.
/// Anything else (cut short, a different listing) is run again and replaced.
fn complete(bytes: &[u8], shard: &ShardSpec, input: &Place) -> Option<ShardOutcome> {
    let (outcome, names) = read_outcome(bytes, shard.index)?;
    let expected: Vec<String> = shard.images.iter().map(|k| input.name(k)).collect();
    (names == expected).then_some(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PinnedModel;

    fn spec(input: &std::path::Path, output: &std::path::Path, shard_size: usize) -> BatchSpec {
        BatchSpec {
            input: input.display().to_string(),
            output: output.display().to_string(),
            model: PinnedModel { reference: "m".into(), sha256: "0".repeat(64) },
            shard_size,
            top_k: 5,
            max_pixels: 1 << 20,
        }
    }

    #[tokio::test]
    async fn images_are_listed_sorted_in_shards_and_only_whole_shard_files_count_as_done() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::create_dir_all(input.join("sub")).unwrap();
        for name in ["b.PNG", "a.jpg", "notes.txt", "sub/d.jpeg"] {
            std::fs::write(input.join(name), b"x").unwrap();
        }
        let s = spec(&input, &output, 2);
        let (i, o) = (Place::open(&s.input, &[], false).unwrap(), Place::open(&s.output, &[], true).unwrap());
        let p = plan(&s, &i, &o).await.unwrap();
        let images: Vec<Vec<String>> = p.shards.iter().map(|s| s.images.clone()).collect();
        assert_eq!(images, vec![vec!["a.jpg".to_string(), "b.PNG".into()], vec!["sub/d.jpeg".into()]]);
        assert_eq!((p.images, p.done.len(), p.to_run().len(), p.spec_changed), (3, 0, 2, false));
        p.prepare(&s, &o).await.unwrap();

        // Shard 0 whole (one answer, one error line): done, its error a failure. Shard 1 holds
        // another image's line: run again.
        let line = |key: &str, error: bool| {
            let name = i.name(key);
            if error {
                format!("{{\"Image\":{name:?},\"Error\":{{\"Code\":\"X\",\"Message\":\"corrupt\"}}}}\n")
            } else {
                format!("{{\"Image\":{name:?},\"Labels\":[]}}\n")
            }
        };
        o.put(&shard_file(0), (line("a.jpg", false) + &line("b.PNG", true)).into_bytes()).await.unwrap();
        o.put(&shard_file(1), line("a.jpg", false).into_bytes()).await.unwrap();
        let p = plan(&s, &i, &o).await.unwrap();
        assert_eq!(p.done.len(), 1);
        assert_eq!(p.done[0].failures, vec![Failure { image: i.name("b.PNG"), error: "corrupt".into() }]);
        assert_eq!(p.to_run().iter().map(|s| s.index).collect::<Vec<_>>(), vec![1]);
        // Another batch's answers (another top-k): none kept. A shard file beyond this
        // batch's shards is stale, and removed before running.
        o.put(&shard_file(7), line("a.jpg", false).into_bytes()).await.unwrap();
        let other = BatchSpec { top_k: 3, ..s.clone() };
        let p = plan(&other, &i, &o).await.unwrap();
        assert_eq!((p.done.len(), p.spec_changed, p.stale.clone()), (0, true, vec![shard_file(7)]));
        p.prepare(&other, &o).await.unwrap();
        assert!(o.get_if_there(&shard_file(7), 1 << 20).await.unwrap().is_none());
        assert_eq!(plan(&other, &i, &o).await.unwrap().done.len(), 1, "the same batch again keeps shard 0");
        // Cut short: not done.
        o.put(&shard_file(0), line("a.jpg", false).into_bytes()).await.unwrap();
        assert_eq!(plan(&other, &i, &o).await.unwrap().done.len(), 0);
    }

    /// Hostile output folders: a shard file with an image twice, or naming a file outside the
    /// input, and a `_batch.json` that is not JSON, are never taken as done work.
    #[tokio::test]
    async fn tampered_shard_and_spec_files_are_run_again_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::create_dir_all(&input).unwrap();
        for name in ["a.jpg", "b.jpg"] {
            std::fs::write(input.join(name), b"x").unwrap();
        }
        let s = spec(&input, &output, 2);
        let (i, o) = (Place::open(&s.input, &[], false).unwrap(), Place::open(&s.output, &[], true).unwrap());
        plan(&s, &i, &o).await.unwrap().prepare(&s, &o).await.unwrap();
        let line = |name: String| format!("{{\"Image\":{name:?},\"Labels\":[]}}\n");
        let whole = line(i.name("a.jpg")) + &line(i.name("b.jpg"));
        o.put(&shard_file(0), whole.clone().into_bytes()).await.unwrap();
        assert_eq!(plan(&s, &i, &o).await.unwrap().done.len(), 1, "the whole file is done");
        for bad in [
            line(i.name("a.jpg")) + &line(i.name("a.jpg")),
            line(i.name("a.jpg")) + &line(i.name("../../etc/b.jpg")),
            whole.clone() + &line(i.name("b.jpg")),
        ] {
            o.put(&shard_file(0), bad.clone().into_bytes()).await.unwrap();
            assert_eq!(plan(&s, &i, &o).await.unwrap().done.len(), 0, "{bad}");
        }
        o.put(&shard_file(0), whole.into_bytes()).await.unwrap();
        o.put(crate::SPEC_FILE, b"{not json".to_vec()).await.unwrap();
        let p = plan(&s, &i, &o).await.unwrap();
        assert_eq!((p.done.len(), p.spec_changed), (0, true));
    }

    #[tokio::test]
    async fn nothing_to_do_is_said_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("readme.txt"), b"x").unwrap();
        let s = spec(dir.path(), &dir.path().join("out"), 4);
        let (i, o) = (Place::open(&s.input, &[], false).unwrap(), Place::open(&s.output, &[], true).unwrap());
        let err = plan(&s, &i, &o).await.unwrap_err().to_string();
        assert!(err.contains("no images there"), "{err}");
        let err = plan(&BatchSpec { shard_size: 0, ..s }, &i, &o).await.unwrap_err().to_string();
        assert!(err.contains("at least 1"), "{err}");
        let missing = dir.path().join("nowhere");
        let err = Place::open(&missing.display().to_string(), &[], false).unwrap_err().to_string();
        assert!(err.contains("no such folder"), "{err}");
        assert!(!missing.exists(), "an input folder was created");
    }

    #[tokio::test]
    async fn an_object_over_the_size_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.jpg"), vec![0u8; 4096]).unwrap();
        let place = Place::open(&dir.path().display().to_string(), &[], false).unwrap();
        let err = place.get("big.jpg", 1000).await.unwrap_err().to_string();
        assert!(err.contains("4096 bytes, more than the 1000 allowed"), "{err}");
        assert_eq!(place.get("big.jpg", 4096).await.unwrap().len(), 4096);
        assert!(place.get_if_there("absent.jpg", 10).await.unwrap().is_none());
    }
}
