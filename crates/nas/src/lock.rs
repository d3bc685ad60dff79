//! One coordinator per search folder: `coordinator.lock` names its holder (host, pid, start). A
//! lock whose process is gone from this host is stale and taken over; one held from another host
//! cannot be checked from here, so it is refused with the holder's name.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::job::{host_name, unix_now};
use crate::{Error, Result};

pub const LOCK_FILE: &str = "coordinator.lock";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    started_at: f64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process {} on {} (since unix time {:.0})",
            self.pid, self.host, self.started_at
        )
    }
}

/// Held while alive; the file is removed on drop.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

fn alive_here(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Lock {
    pub fn acquire(dir: &Path) -> Result<Lock> {
        let path = dir.join(LOCK_FILE);
        let me = Holder {
            host: host_name(),
            pid: std::process::id(),
            started_at: unix_now(),
        };
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    let text = serde_json::to_string(&me).expect("a holder serialises");
                    file.write_all(text.as_bytes())
                        .and_then(|_| file.sync_all())
                        .map_err(|e| Error::io(&path, e))?;
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let Ok(holder) = serde_json::from_str::<Holder>(&text) else {
                        // Killed between creating and writing it: nobody can hold it.
                        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                        continue;
                    };
                    if holder.host == me.host && (holder.pid == me.pid || !alive_here(holder.pid)) {
                        eprintln!("removing the stale lock of {holder} (that process is gone)");
                        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                        continue;
                    }
                    return Err(Error::Locked {
                        path,
                        holder: holder.to_string(),
                    });
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Locked {
            path,
            holder: "a coordinator that keeps taking it".into(),
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
