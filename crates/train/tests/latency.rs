//! Latency tables: prediction as the correction line at the sum of measured pieces, a missing piece
//! named, a table of another device, resolution, batch or version refused, files round-tripped
//! and bad files named.

use eatnas_nn::Arch;
use eatnas_tensor::Device;
use eatnas_testkit::TestDir;
use eatnas_train::latency::{
    pieces, theil_sen, Correction, LatencyTable, Line, Measure, Provenance, Timing, FORMAT,
};

const MICRO: &str = r#"{"format":"eatnas-arch/1","name":"micro","stem":{"channels":8,"kernel":3,"stride":2},
 "blocks":[{"op":"mb3","kernel":3,"skip":true,"layers":2,"width":1.0,"base_channels":8,"stride":1},
           {"op":"sep","kernel":5,"skip":true,"layers":1,"width":1.0,"base_channels":16,"stride":2}],
 "head":{"channels":32}}"#;

const QUICK: Measure = Measure {
    device: Device::Cpu,
    batch: 2,
    warmup: 0,
    repeats: 1,
    passes: 1,
};

fn micro() -> Arch {
    Arch::from_json(MICRO, "micro").unwrap()
}

fn provenance() -> Provenance {
    Provenance::here(Device::Cpu, 12, 2, 1, 3)
}

fn table() -> LatencyTable {
    let arch = micro();
    LatencyTable::build(
        pieces(&arch, 1, 12, 3).unwrap(),
        &[arch],
        provenance(),
        QUICK,
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn pieces_follow_the_architecture_with_their_input_sizes() {
    let listed: Vec<String> = pieces(&micro(), 1, 12, 3)
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "stem 1->8 k3 s2 at 12x12",
            "mb3 k3 s1 8->8 +skip at 6x6",
            "mb3 k3 s1 8->8 +skip at 6x6",
            "sep k5 s2 8->16 at 6x6",
            "head 16->32->3 classes at 3x3",
        ]
    );
}

#[test]
fn a_prediction_is_the_correction_line_at_the_sum_of_the_pieces() {
    let mut table = table();
    // The two identical mb3 layers are one entry.
    assert_eq!(table.entries.len(), 4, "entries: {:?}", table.entries);
    assert!(table
        .entries
        .iter()
        .all(|e| e.timing.inference_ms > 0.0 && e.timing.training_ms > 0.0));
    assert!(table.metronome_ms > 0.0, "{}", table.metronome_ms);
    let arch = micro();
    let pieces = pieces(&arch, 1, 12, 3).unwrap();
    let sum = pieces
        .iter()
        .map(|p| table.entries.iter().find(|e| &e.piece == p).unwrap().timing)
        .fold(Timing::default(), |a, b| a + b);
    // One calibration network: no spread of sums, so the line through the origin and its
    // ratio; calibrated on this very network, the prediction is its measurement.
    let c = table.correction;
    assert_eq!(c.inference.intercept_ms, 0.0, "{c:?}");
    assert!(c.inference.slope > 0.0 && c.training.slope > 0.0, "{c:?}");
    let predicted = table.predict(&arch).unwrap();
    assert!((predicted.inference_ms - c.inference.slope * sum.inference_ms).abs() < 1e-9);
    table.correction = Correction {
        inference: Line {
            intercept_ms: 0.5,
            slope: 0.9,
        },
        training: Line {
            intercept_ms: -0.01,
            slope: 1.2,
        },
    };
    let predicted = table.predict(&arch).unwrap();
    assert!((predicted.inference_ms - (0.5 + 0.9 * sum.inference_ms)).abs() < 1e-12);
    assert!((predicted.training_ms - (-0.01 + 1.2 * sum.training_ms)).abs() < 1e-12);
    let check = table.compare(&[arch], QUICK, &mut |_, _| ()).unwrap();
    let network = check.networks[0];
    assert!(
        network.measured.training_ms > 0.0 && network.timed.training_ms > 0.0,
        "{network:?}"
    );
    assert!(check.metronome_ms > 0.0, "{check:?}");
}

#[test]
fn corrections_that_outweigh_the_pieces_are_an_error_not_a_negative_latency() {
    let mut table = table();
    let sum = table.predict(&micro()).unwrap();
    table.correction.inference.intercept_ms -= sum.inference_ms + 1.0;
    let error = table.predict(&micro()).unwrap_err().to_string();
    assert!(
        error.contains("predicts an inference pass of") && error.contains("not a positive time"),
        "a prediction below zero was not refused with its reason: {error}"
    );
    table.correction.inference.intercept_ms = f64::NAN;
    let error = table.predict(&micro()).unwrap_err().to_string();
    assert!(
        error.contains("NaN ms"),
        "a NaN prediction was not refused: {error}"
    );
}

#[test]
fn a_piece_missing_from_the_table_is_named() {
    let mut table = table();
    table
        .entries
        .retain(|e| !e.piece.to_string().starts_with("sep"));
    let error = table.predict(&micro()).unwrap_err().to_string();
    assert!(
        error.contains("sep k5 s2 8->16 at 6x6"),
        "the error does not name the missing piece: {error}"
    );
}

#[test]
fn a_table_measured_elsewhere_is_refused() {
    let table = table();
    table.check_fits(&provenance()).unwrap();
    let cases: [(&str, fn(&mut Provenance)); 5] = [
        ("device", |p| p.device = "cuda:0".into()),
        ("resolution", |p| p.resolution = 28),
        ("batch", |p| p.batch = 64),
        ("eatnas version", |p| p.eatnas_version = "0.0.1".into()),
        ("kernels", |p| p.kernels = "cuda:0000 cpu:avx2".into()),
    ];
    for (what, change) in cases {
        let mut wanted = provenance();
        change(&mut wanted);
        let error = table.check_fits(&wanted).unwrap_err().to_string();
        assert!(
            error.contains(what),
            "a table of another {what} was not refused by name: {error}"
        );
    }
}

#[test]
fn a_table_survives_its_file_and_a_bad_file_is_named() {
    let dir = TestDir::new("latency-table");
    let path = dir.join("table.json");
    let table = table();
    table.save(&path).unwrap();
    assert_eq!(LatencyTable::load(&path).unwrap(), table);

    let text = std::fs::read_to_string(&path).unwrap();
    let other = dir.join("other.json");
    std::fs::write(&other, text.replace(FORMAT, "eatnas-latency/9")).unwrap();
    let error = LatencyTable::load(&other).unwrap_err().to_string();
    assert!(
        error.contains("other.json") && error.contains("eatnas-latency/9"),
        "{error}"
    );
    // A table of the earlier format (no metronome, another correction) says to rebuild, not
    // which field it lacks.
    let mut earlier: serde_json::Value = serde_json::from_str(&text).unwrap();
    earlier["format"] = "eatnas-latency/1".into();
    for field in ["metronome", "metronome_ms", "correction"] {
        earlier.as_object_mut().unwrap().remove(field);
    }
    std::fs::write(&other, earlier.to_string()).unwrap();
    let error = LatencyTable::load(&other).unwrap_err().to_string();
    assert!(
        error.contains("eatnas-latency/1") && error.contains("rebuild"),
        "{error}"
    );

    std::fs::write(&other, &text[..text.len() / 2]).unwrap();
    let error = LatencyTable::load(&other).unwrap_err().to_string();
    assert!(error.contains("not a latency table"), "{error}");

    let negative = serde_json::to_string(&{
        let mut t = table.clone();
        t.entries[0].timing.training_ms = -1.0;
        t
    })
    .unwrap();
    std::fs::write(&other, negative).unwrap();
    let error = LatencyTable::load(&other).unwrap_err().to_string();
    assert!(error.contains("non-negative"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_correction_line_ignores_an_outlier() {
    // y = 2 + 0.5 x, and one network timed while the host was busy.
    let mut points: Vec<(f64, f64)> = (0..9)
        .map(|i| (i as f64 * 3.0, 2.0 + 1.5 * i as f64))
        .collect();
    points[4].1 += 40.0;
    let (a, b) = theil_sen(&points);
    assert!(
        (a - 2.0).abs() < 1e-9 && (b - 0.5).abs() < 1e-9,
        "a {a}, b {b}"
    );
    // Every network of one sum: no slope, the median of the differences.
    assert_eq!(theil_sen(&[(5.0, 1.0), (5.0, 3.0), (5.0, 2.0)]), (2.0, 0.0));
    // The correction's line: Theil-Sen where the sums differ...
    points[4].1 -= 40.0;
    let line = Line::fit(&points);
    assert!(
        (line.intercept_ms - 2.0).abs() < 1e-9 && (line.slope - 0.5).abs() < 1e-9,
        "{line:?}"
    );
    // ...through the origin at the median ratio where they do not, the identity without any.
    assert_eq!(
        Line::fit(&[(5.0, 4.0), (5.0, 6.0), (5.0, 5.5)]),
        Line {
            intercept_ms: 0.0,
            slope: 1.1
        }
    );
    assert_eq!(Line::fit(&[]), Line::IDENTITY);
}
