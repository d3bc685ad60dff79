//! eatnas: the workspace root package; see the crates.
