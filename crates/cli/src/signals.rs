//! Ctrl-C and SIGTERM as a flag: the one way a command learns it should stop.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;

/// A flag that SIGINT (Ctrl-C) and SIGTERM (Slurm's, at a time limit or preemption) set; the
/// command stops at its next safe point (a coordinator saves its state, a training checkpoints
/// after its current step). A second signal while the first is handled ends the process at once.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    Ok(stop)
}
