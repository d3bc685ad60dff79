//! What the workspace's tests share: [`TestDir`], a test's scratch folder, and [`sigterm`].

use std::ops::Deref;
use std::path::Path;

/// A fresh, empty folder under the system's temporary folder, named `eatnas-{name}-XXXXXX`.
///
/// Removed when it drops at the end of a test that passed; kept when the test fails (dropped
/// while the thread panics), its path printed to stderr, so the files the test wrote (a run's
/// history, a job's result) are there to read. Dereferences to [`Path`], so `&dir` passes as a
/// `&Path` and `dir.join(..)` works.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// Creates the folder; panics (failing the test) when the temporary folder is not writable.
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("eatnas-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a test folder eatnas-{name}-*: {e}"));
        TestDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "the failed test's folder is kept: {}",
                self.path().display()
            );
        }
    }
}

/// Sends SIGTERM to `child` (as Slurm at a time limit, or a user's `kill`), then waits for it;
/// returns its exit status and what it wrote (piped streams only).
pub fn sigterm(child: std::process::Child) -> std::process::Output {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("running kill -TERM: {e}"));
    assert!(sent.success(), "kill -TERM {} failed", child.id());
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for the process sent SIGTERM: {e}"))
}

#[cfg(test)]
mod tests {
    use super::TestDir;

    #[test]
    fn a_passing_tests_folder_is_removed() {
        let dir = TestDir::new("testkit-passing");
        std::fs::write(dir.join("file"), b"x").unwrap();
        let path = dir.to_path_buf();
        assert!(
            path.join("file").is_file(),
            "{} was not created",
            path.display()
        );
        drop(dir);
        assert!(
            !path.exists(),
            "{} is still there after the drop",
            path.display()
        );
    }

    #[test]
    fn a_failing_tests_folder_is_kept() {
        let dir = TestDir::new("testkit-failing");
        let path = dir.to_path_buf();
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _dir = dir;
            panic!("the test fails");
        }));
        assert!(failed.is_err());
        assert!(
            path.is_dir(),
            "{} was removed though its test failed",
            path.display()
        );
        std::fs::remove_dir_all(&path).unwrap();
    }
}
