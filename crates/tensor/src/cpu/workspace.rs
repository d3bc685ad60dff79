//! The reused workspace of the CPU backend: freed host buffers kept for reuse, matched by exact
//! length.
//!
//! A training step allocates and frees the same activation and gradient sizes every step. Fresh
//! allocations of that size come from the kernel as untouched pages, and the first write to each
//! page faults and zeroes it: for a 58 MB activation that is ~15,000 faults, a quarter of the time
//! of a depthwise convolution. Buffers of at least [`MIN_LEN`] elements therefore go back to this
//! workspace when their tensor is dropped, and the next request of the same length takes one back:
//! from the second step on, a training step makes no large allocation.
//!
//! The price is memory: while a forward pass runs, the workspace still holds the last step's
//! gradient buffers. So it holds at most [`capacity_bytes`] (`EATNAS_WORKSPACE_MB`, default 1024;
//! 0 turns it off); past that the buffers freed longest ago are released to the system.
//! Measured on the demo pipeline (peak set by its final training, batch 128): no workspace 8:25
//! and 1.9 GB peak, 1024 MB 6:14 and 2.7 GB, 2048 MB 6:15 and 3.5 GB. [`release`] empties it
//! (the search does after each candidate).
//!
//! [`take`] hands out a buffer whose contents are unspecified, and its callers overwrite all of
//! it. A caller that reads what it did not write gets the previous user's values: plausible
//! numbers, so the bug can pass unseen. With `EATNAS_POISON_WORKSPACE=1` (set by `cargo xtask
//! test` for every test run) every buffer [`take`] hands out is filled with NaN first, as the CUDA
//! emulator fills fresh device memory, so such a read turns the result into NaN.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

/// Smaller buffers are left to the system allocator, which recycles them well.
pub(crate) const MIN_LEN: usize = 16 * 1024;

struct Held {
    /// Freed buffers, oldest first.
    free: VecDeque<Vec<f32>>,
    bytes: usize,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    free: VecDeque::new(),
    bytes: 0,
});

fn capacity_bytes() -> usize {
    static CAPACITY: OnceLock<usize> = OnceLock::new();
    *CAPACITY.get_or_init(|| {
        std::env::var("EATNAS_WORKSPACE_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1024)
            << 20
    })
}

/// Whether [`take`] fills its buffers with NaN (`EATNAS_POISON_WORKSPACE=1`).
fn poisoned() -> bool {
    static POISON: OnceLock<bool> = OnceLock::new();
    *POISON.get_or_init(|| std::env::var("EATNAS_POISON_WORKSPACE").is_ok_and(|v| v == "1"))
}

fn lock() -> std::sync::MutexGuard<'static, Held> {
    // A panic while holding the lock leaves the list consistent (every operation is a push or a
    // remove), so a poisoned lock is safe to keep using.
    HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A buffer of exactly `len` elements whose values are unspecified (a recycled buffer keeps
/// what it held): for outputs that the caller overwrites entirely.
/// NaN-filled under `EATNAS_POISON_WORKSPACE=1`.
pub(crate) fn take(len: usize) -> Vec<f32> {
    let mut buffer = reuse(len).unwrap_or_else(|| {
        // calloc'd: the pages are zero-filled lazily by the system on first write.
        vec![0.0; len]
    });
    if poisoned() {
        buffer.fill(f32::NAN);
    }
    buffer
}

/// A held buffer of exactly `len` elements, if there is one.
fn reuse(len: usize) -> Option<Vec<f32>> {
    if len < MIN_LEN {
        return None;
    }
    let mut held = lock();
    // Newest first: a buffer freed a moment ago is the likeliest to still be in cache.
    let i = held.free.iter().rposition(|b| b.len() == len)?;
    let buffer = held.free.remove(i).expect("index from rposition");
    held.bytes -= len * 4;
    Some(buffer)
}

/// A buffer of `len` zeros.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    let mut buffer = take(len);
    buffer.fill(0.0);
    buffer
}

/// Hands a buffer back for reuse (small ones are simply freed).
pub(crate) fn give(buffer: Vec<f32>) {
    let len = buffer.len();
    if len < MIN_LEN || len * 4 > capacity_bytes() {
        return;
    }
    let mut held = lock();
    held.bytes += len * 4;
    held.free.push_back(buffer);
    while held.bytes > capacity_bytes() {
        let oldest = held
            .free
            .pop_front()
            .expect("bytes > 0 means a buffer is held");
        held.bytes -= oldest.len() * 4;
    }
}

/// Releases every held buffer to the system; returns the bytes released. For a program done
/// with a network whose activation sizes will not come back: the search calls it after each
/// candidate, so that the workspace does not fill up with the sizes of networks trained before.
pub fn release() -> usize {
    let mut held = lock();
    let bytes = held.bytes;
    held.free.clear();
    held.bytes = 0;
    bytes
}

/// Bytes the workspace holds now.
pub fn held_bytes() -> usize {
    lock().bytes
}

/// A host buffer that returns to the workspace when dropped.
#[derive(Debug)]
pub(crate) struct HostBuffer(Vec<f32>);

impl HostBuffer {
    pub(crate) fn new(data: Vec<f32>) -> HostBuffer {
        HostBuffer(data)
    }

    /// `len` zeros from the workspace: scratch space of a kernel, back to it when dropped.
    pub(crate) fn zeroed(len: usize) -> HostBuffer {
        HostBuffer(zeroed(len))
    }
}

impl Clone for HostBuffer {
    fn clone(&self) -> HostBuffer {
        let mut copy = take(self.0.len());
        copy.copy_from_slice(&self.0);
        HostBuffer(copy)
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

impl std::ops::Deref for HostBuffer {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for HostBuffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_buffer_of_the_same_length_is_reused() {
        let len = MIN_LEN + 12345;
        let buffer = take(len);
        let address = buffer.as_ptr();
        give(buffer);
        let again = take(len);
        assert_eq!(again.as_ptr(), address);
        assert_eq!(again.len(), len);
        give(again);
        // Another length is not served from it.
        let other = take(len + 1);
        assert_ne!(other.as_ptr(), address);
        assert!(zeroed(len).iter().all(|&v| v == 0.0));
    }
}
