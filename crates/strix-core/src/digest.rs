//! Content digests: model files, registry blobs and dataset manifests are all named by the
//! lower-case hex SHA-256 of their bytes.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of a file and its size, read in chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Lower-case hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file, or of a folder's files: `<sha256>  <relative path>` lines
/// (`sha256sum`'s form, `/` between names), sorted by path. Names and contents both count, so a
/// renamed, added, removed or edited file changes it; where the folder lives does not. Linked
/// files are read; linked folders are not entered (a link to a parent would never end); hidden
/// files and folders (`.name`) are left out.
pub fn sha256_tree(path: &Path) -> std::io::Result<String> {
    if !path.is_dir() {
        return Ok(sha256_file(path)?.0);
    }
    let mut files = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(p);
            } else if !(kind.is_symlink() && p.is_dir()) {
                files.push(p);
            }
        }
    }
    let mut lines: Vec<String> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(path).unwrap_or(f);
            let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            Ok(format!("{}  {}\n", sha256_file(f)?.0, rel.join("/")))
        })
        .collect::<std::io::Result<_>>()?;
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    Ok(sha256_hex(lines.concat().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        // sha256("abc"), FIPS 180-2's example.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
        let dir = std::env::temp_dir().join(format!("strix-digest-{}", std::process::id()));
        std::fs::write(&dir, b"abc").unwrap();
        assert_eq!(sha256_file(&dir).unwrap(), (abc.to_string(), 3));
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn tree_digests_follow_names_and_contents_not_the_folders_place() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |root: &Path| {
            std::fs::create_dir_all(root.join("a")).unwrap();
            std::fs::write(root.join("a/x.txt"), b"x").unwrap();
            std::fs::write(root.join("y.txt"), b"y").unwrap();
            std::fs::write(root.join(".hidden"), b"h").unwrap();
        };
        let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
        make(&one);
        make(&two);
        let d = sha256_tree(&one).unwrap();
        assert_eq!(d, sha256_tree(&two).unwrap());
        std::fs::write(two.join(".hidden"), b"changed").unwrap();
        assert_eq!(d, sha256_tree(&two).unwrap());
        std::fs::write(two.join("a/x.txt"), b"X").unwrap();
        assert_ne!(d, sha256_tree(&two).unwrap());
        std::fs::rename(one.join("y.txt"), one.join("z.txt")).unwrap();
        assert_ne!(d, sha256_tree(&one).unwrap());
        assert_eq!(sha256_tree(&one.join("z.txt")).unwrap(), sha256_hex(b"y"));
        // A link to a parent folder is not walked into (it would never end).
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&one, one.join("a/loop")).unwrap();
            let before = sha256_tree(&one).unwrap();
            assert_eq!(before, sha256_tree(&one).unwrap());
        }
    }
}
