//! Every row of `counts.json` (MAdds and params) through the library, and the built network's
//! parameter count agreeing with the counting rule.

mod common;

use eatnas_nn::{Arch, Counts, Network};

#[test]
fn every_counts_row_matches_exactly() {
    let path = common::fixtures_dir().join("counts.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&text).expect("counts.json is a JSON list");
    assert!(!rows.is_empty(), "counts.json has no rows");
    for (i, row) in rows.iter().enumerate() {
        let arch =
            Arch::from_json(&row["arch"].to_string(), &format!("counts.json row {i}")).unwrap();
        let field = |k: &str| {
            row[k]
                .as_u64()
                .unwrap_or_else(|| panic!("row {i}: `{k}` is not a count"))
        };
        let (in_channels, resolution, classes) = (
            field("in_channels") as usize,
            field("resolution") as usize,
            field("classes") as usize,
        );
        let counts = Counts::new(&arch, in_channels, resolution, classes).unwrap();
        assert_eq!(
            counts.madds,
            field("madds"),
            "row {i} ({}): MAdds",
            arch.name
        );
        assert_eq!(
            counts.params,
            field("params"),
            "row {i} ({}): params",
            arch.name
        );
        let mut net = Network::new(&arch, in_channels, classes, 0).unwrap();
        assert_eq!(
            net.num_params() as u64,
            counts.params,
            "row {i} ({}): parameters of the built network",
            arch.name
        );
    }
}
