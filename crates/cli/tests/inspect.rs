//! `eatnas-cli inspect --json` on every row of `counts.json`, and its errors on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use eatnas_testkit::TestDir;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("EATNAS_TORCH_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/torch"),
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eatnas-cli"))
        .args(args)
        .output()
        .expect("eatnas-cli runs")
}

fn last_json_line(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

/// Writes `contents` to `dir/name`; returns the path.
fn temp_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn inspect_json_matches_every_counts_row() {
    let path = fixtures_dir().join("counts.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(!rows.is_empty());
    let dir = TestDir::new("cli-inspect-counts");
    for (i, row) in rows.iter().enumerate() {
        let arch = temp_file(&dir, &format!("row{i}.json"), &row["arch"].to_string());
        let output = cli(&[
            "inspect",
            arch.to_str().unwrap(),
            "--resolution",
            &row["resolution"].to_string(),
            "--classes",
            &row["classes"].to_string(),
            "--in-channels",
            &row["in_channels"].to_string(),
            "--json",
        ]);
        assert!(
            output.status.success(),
            "row {i}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary = last_json_line(&output);
        assert_eq!(summary["madds"], row["madds"], "row {i}: MAdds");
        assert_eq!(summary["params"], row["params"], "row {i}: params");
    }
}

#[test]
fn mobilenet_v2_table_prints_the_published_totals() {
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("counts.json")).unwrap())
            .unwrap();
    let dir = TestDir::new("cli-inspect-mbv2");
    let arch = temp_file(&dir, "mbv2.json", &rows[0]["arch"].to_string());
    let output = cli(&[
        "inspect",
        arch.to_str().unwrap(),
        "--resolution",
        "224",
        "--classes",
        "1000",
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let total = stdout
        .lines()
        .find(|l| l.starts_with("total"))
        .expect("a total row");
    assert!(
        total.contains("300774272") && total.contains("3504872"),
        "{total}"
    );
}

/// Bad input ends in a non-zero exit and one error line that names the problem; never a panic.
fn assert_clean_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected failure, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}

#[test]
fn inspect_reports_bad_files_clearly() {
    let good = r#"{"format":"eatnas-arch/1","name":"t","stem":{"channels":8,"kernel":3,"stride":1},
        "blocks":[{"op":"mb6","kernel":3,"skip":true,"layers":1,"width":1.0,"base_channels":8,"stride":1}],"head":{"channels":16}}"#;
    let cases = [
        ("kernel4.json", good.replace(r#""kernel":3,"skip""#, r#""kernel":4,"skip""#), "blocks[0].kernel: 4 is not allowed; expected one of 3, 5, 7"),
        ("width07.json", good.replace(r#""width":1.0"#, r#""width":0.7"#), "expected one of 0.5, 1.0, 1.5, 2.0"),
        ("stride3.json", good.replace(r#""base_channels":8,"stride":1"#, r#""base_channels":8,"stride":3"#), "blocks[0].stride: 3 is not allowed; expected 1 or 2"),
        ("empty.json", good.replace(r#""blocks":[{"op":"mb6","kernel":3,"skip":true,"layers":1,"width":1.0,"base_channels":8,"stride":1}]"#, r#""blocks":[]"#), "blocks: expected 1 to 64 blocks, got 0"),
        ("million-layers.json", good.replace(r#""layers":1"#, r#""layers":1000000"#), "blocks[0].layers: expected 1 to 64 layers, got 1000000"),
        ("wide-stem.json", good.replace(r#""channels":8"#, r#""channels":1000000000"#), "stem.channels: expected 1 to 8192 channels, got 1000000000"),
        ("wide-block.json", good.replace(r#""base_channels":8"#, r#""base_channels":8000"#).replace(r#""width":1.0"#, r#""width":2.0"#), "blocks[0].width: expected 1 to 8192 channels, got 16000"),
        ("op.json", good.replace("mb6", "mb4"), "unknown variant `mb4`, expected one of `sep`, `mb3`, `mb6`"),
        ("missing.json", good.replace(r#""skip":true,"#, ""), "missing field `skip`"),
        ("unknown.json", good.replace(r#""head":{"channels":16}"#, r#""head":{"channels":16,"dropout":0.2}"#), "unknown field `dropout`"),
        ("truncated.json", good[..40].to_string(), "EOF while parsing"),
    ];
    let dir = TestDir::new("cli-inspect-bad");
    for (name, text, needle) in cases {
        let path = temp_file(&dir, name, &text);
        assert_clean_error(
            &cli(&[
                "inspect",
                path.to_str().unwrap(),
                "--resolution",
                "32",
                "--classes",
                "10",
            ]),
            needle,
        );
    }
    assert_clean_error(
        &cli(&[
            "inspect",
            "/no/such/arch.json",
            "--resolution",
            "32",
            "--classes",
            "10",
        ]),
        "cannot read /no/such/arch.json",
    );
    let path = temp_file(&dir, "good.json", good);
    assert_clean_error(
        &cli(&[
            "inspect",
            path.to_str().unwrap(),
            "--resolution",
            "0",
            "--classes",
            "10",
        ]),
        "--resolution",
    );
}
