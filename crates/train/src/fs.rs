//! Writing files so that a crash or a full disk never leaves a half-written one behind.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

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
        chaos_point(path)?;
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

/// What `EATNAS_CHAOS` asks of [`chaos_point`].
enum Chaos {
    /// `log`: name every write on stderr (`chaos: write N PATH`).
    Log,
    /// `kill-at-write:N`: SIGKILL this process at its N-th write.
    KillAt(usize),
    /// `full-at-write:N`: the N-th and every later write fails as on a full disk.
    FullFrom(usize),
}

/// Test instrumentation for `cargo xtask chaos` and `cargo xtask full-disk`, called at the worst
/// moment of every write of state (a file's new contents written but not yet renamed into
/// place, half a history line appended). Writes are counted from 1 in each process. Without
/// `EATNAS_CHAOS` in the environment it does nothing (one check of a value read once).
pub fn chaos_point(path: &Path) -> std::io::Result<()> {
    static CHAOS: OnceLock<Option<Chaos>> = OnceLock::new();
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let chaos = CHAOS.get_or_init(|| {
        let value = std::env::var("EATNAS_CHAOS").ok()?;
        let at = |prefix: &str| value.strip_prefix(prefix).and_then(|n| n.parse().ok());
        at("kill-at-write:")
            .map(Chaos::KillAt)
            .or_else(|| at("full-at-write:").map(Chaos::FullFrom))
            .or((value == "log").then_some(Chaos::Log))
    });
    let Some(chaos) = chaos else {
        return Ok(());
    };
    let n = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
    match chaos {
        Chaos::Log => eprintln!("chaos: write {n} {}", path.display()),
        Chaos::KillAt(at) if *at == n => {
            eprintln!("chaos: killed at write {n} {}", path.display());
            // SAFETY: kill(2) on this process's own id; SIGKILL does not return.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        Chaos::FullFrom(from) if n >= *from => {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Chaos::KillAt(_) | Chaos::FullFrom(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::write_atomic;
    use eatnas_testkit::TestDir;

    #[test]
    fn a_failed_write_leaves_the_previous_file_whole() {
        let dir = TestDir::new("fs");
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
