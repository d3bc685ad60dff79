//! Writing files so that a crash or a full disk never leaves a half-written one behind.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`: a
/// reader sees the old file or the new one, never a mix. On any error the temporary file is
/// removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let outcome = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    outcome.map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        Error::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::write_atomic;

    #[test]
    fn a_failed_write_leaves_the_previous_file_whole() {
        let dir = std::env::temp_dir().join(format!("eatnas-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        // A directory where the temporary file must go makes the write fail, as a full disk would.
        let blocker = dir.join(format!(".model.safetensors.tmp-{}", std::process::id()));
        std::fs::create_dir_all(&blocker).unwrap();
        let e = write_atomic(&path, b"third").unwrap_err().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("unchanged"),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let e = write_atomic(&dir.join("missing/dir/file"), b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing/dir/file"), "{e}");
    }
}
