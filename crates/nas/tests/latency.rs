//! The pieces a latency table of a task must hold cover every architecture of the space.

use std::collections::BTreeSet;

use eatnas_nas::latency::{sample_archs, space_pieces};
use eatnas_nas::SearchConfig;
use eatnas_train::latency::pieces;

#[test]
fn the_space_pieces_cover_every_sampled_architecture() {
    let config = SearchConfig::default();
    let task = &config.large;
    let all: BTreeSet<_> = space_pieces(&config.space, &task.macro_config, 1, 28, 10)
        .unwrap()
        .into_iter()
        .collect();
    for arch in sample_archs(&config.space, &task.macro_config, 200, 7).unwrap() {
        for piece in pieces(&arch, 1, 28, 10).unwrap() {
            assert!(
                all.contains(&piece),
                "{}: {piece} is not among the space's {} pieces",
                arch.name,
                all.len()
            );
        }
    }
}
