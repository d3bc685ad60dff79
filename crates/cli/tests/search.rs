//! `eatnas-cli run`, `resume`, `search` and `transfer` end to end on a tiny configuration: real
//! proxy training on the embedded data, every output written.

use eatnas_testkit::{sigterm, TestDir};
use std::path::Path;
use std::process::{Command, Output};

const TINY: &str = r#"
seed = 3
top_k = 2
[space]
layers = [1, 2]
[small]
resolution = 8
data_fraction = 0.06
val_fraction = 0.3
batch_size = 32
[small.macro]
width_multiplier = 0.125
[stage1]
population = 3
sample = 2
budget = 5
top_k = 2
[transfer]
inherit_weights = true
[large]
resolution = 12
data_fraction = 0.06
val_fraction = 0.3
batch_size = 32
epochs = 2
inherit_weights = true
inherited_epochs = 1
[large.macro]
width_multiplier = 0.125
[stage2]
population = 3
sample = 2
budget = 5
top_k = 2
[final]
epochs = 1
batch_size = 64
"#;

fn temp_dir(name: &str) -> TestDir {
    TestDir::new(&format!("cli-search-{name}"))
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eatnas-cli"))
        .args(args)
        .output()
        .unwrap()
}

/// `eatnas-cli ARGS` started in the background, its stdout dropped, its stderr piped.
fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_eatnas-cli"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn ok(args: &[&str]) -> serde_json::Value {
    ok_with_stderr(args).0
}

/// The JSON of a successful command's last stdout line, and its stderr.
fn ok_with_stderr(args: &[&str]) -> (serde_json::Value, String) {
    let output = cli(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{args:?}: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{args:?}: last line not JSON ({e}): {stdout}"));
    (json, stderr)
}

fn err(args: &[&str]) -> String {
    let output = cli(args);
    assert!(!output.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn run_writes_every_output_and_resume_finds_nothing_left_to_do() {
    let dir = temp_dir("run");
    let config = dir.join("tiny.toml");
    std::fs::write(&config, TINY).unwrap();
    let out = dir.join("search");
    let (config, out_s) = (config.to_str().unwrap(), out.to_str().unwrap());
    let summary = ok(&["run", "--config", config, "--out", out_s, "--json"]);

    for file in [
        "config.toml",
        "command.json",
        "basic_arch.json",
        "final_arch.json",
        "summary.json",
        "quality.svg",
        "pareto.svg",
        "top/01.json",
        "top/02.json",
        "stage1/history.jsonl",
        "stage1/state.json",
        "transfer/history.jsonl",
        "scratch/history.jsonl",
        "final/model.safetensors",
        "basic_weights.safetensors",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    for stage in ["stage1", "transfer", "scratch"] {
        assert_eq!(
            lines(&out.join(stage).join("history.jsonl")),
            5,
            "{stage}: one line per evaluation"
        );
        assert_eq!(summary[stage]["quality_curve"].as_array().unwrap().len(), 5);
    }
    let history: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("transfer/history.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    for key in [
        "genome", "accuracy", "fitness", "madds", "params", "seconds", "worker", "quality",
    ] {
        assert!(!history[key].is_null(), "history lines carry {key}");
    }
    assert_eq!(
        history["origin"], "basic",
        "the transfer starts from the basic architecture"
    );
    // ... and from its weights trained on the small task, wherever they correspond.
    let inherited = &history["inherited"];
    assert!(
        inherited["from"]
            .as_str()
            .unwrap()
            .ends_with("basic_weights.safetensors"),
        "{inherited}"
    );
    assert!(
        inherited["mapping"]["copied"].as_u64().unwrap() > 0,
        "{inherited}"
    );
    assert!(
        inherited["recalibrated_batches"].as_u64().unwrap() > 0,
        "weights from another task are recalibrated: {inherited}"
    );
    let scratch_first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("scratch/history.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        scratch_first["inherited"].is_null(),
        "the scratch baseline inherits nothing"
    );
    assert!(summary["final"]["test_top1"].as_f64().unwrap() > 0.0);
    assert!(std::fs::read_to_string(out.join("quality.svg"))
        .unwrap()
        .contains("from scratch"));
    let arch = std::fs::read_to_string(out.join("final_arch.json")).unwrap();
    assert!(arch.contains("eatnas-arch/1"));

    // The effective configuration was written; resuming a finished search changes nothing.
    assert!(std::fs::read_to_string(out.join("config.toml"))
        .unwrap()
        .contains("width_multiplier = 0.125"));
    let again = ok(&["resume", out_s, "--json"]);
    assert_eq!(again["final"]["test_top1"], summary["final"]["test_top1"]);
    assert_eq!(lines(&out.join("transfer/history.jsonl")), 5);
    // --detach on the local executor cannot hold (its jobs are the coordinator's threads): named.
    let e = err(&["resume", out_s, "--detach"]);
    assert!(
        e.contains("--detach") && e.contains("local executor"),
        "resume --detach on local: {e}"
    );

    // A second coordinator on the folder is refused, naming the first; a lock left by a process
    // that is gone is taken over.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = |pid: u32| {
        let holder = serde_json::json!({"host": host.trim(), "pid": pid, "started_at": 1.0});
        std::fs::write(out.join("coordinator.lock"), holder.to_string()).unwrap();
    };
    lock(std::process::id());
    let e = err(&["resume", out_s]);
    assert!(
        e.contains("coordinator.lock is held by process")
            && e.contains(&std::process::id().to_string()),
        "{e}"
    );
    lock(u32::MAX - 1);
    let output = cli(&["resume", out_s]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("removing the stale lock"));
    assert!(
        !out.join("coordinator.lock").exists(),
        "released at the end"
    );

    // The folder is not overwritten by a new search.
    let e = err(&["run", "--config", config, "--out", out_s]);
    assert!(
        e.contains("already holds a search; continue it with `eatnas-cli resume"),
        "{e}"
    );

    // Stage 2 alone, from the basic architecture the run found, and from scratch.
    let basic = out.join("basic_arch.json");
    let weights = out.join("basic_weights.safetensors");
    let e = err(&[
        "transfer",
        "--seed-arch",
        basic.to_str().unwrap(),
        "--config",
        config,
        "--out",
        dir.join("no-weights").to_str().unwrap(),
    ]);
    assert!(
        e.contains("--seed-weights"),
        "a transfer of weights needs them: {e}"
    );
    let t = ok(&[
        "transfer",
        "--seed-arch",
        basic.to_str().unwrap(),
        "--seed-weights",
        weights.to_str().unwrap(),
        "--config",
        config,
        "--out",
        dir.join("t").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        t["transfer"]["quality_curve"], summary["transfer"]["quality_curve"],
        "same seed, same transfer"
    );
    let s = ok(&[
        "transfer",
        "--from-scratch",
        "--config",
        config,
        "--out",
        dir.join("s").to_str().unwrap(),
        "--json",
    ]);
    assert!(s["scratch"]["evaluations"] == 5 && s.get("transfer").is_none());
}

#[test]
fn bad_search_input_is_named() {
    let dir = temp_dir("bad");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[stage1]\npopulaton = 4\n").unwrap();
    assert!(err(&[
        "run",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.join("o").to_str().unwrap()
    ])
    .contains("unknown field `populaton`"));
    std::fs::write(&bad, "[space]\nwidths = []\n").unwrap();
    assert!(err(&[
        "search",
        "--config",
        bad.to_str().unwrap(),
        "--out",
        dir.join("o").to_str().unwrap()
    ])
    .contains("space.widths"));
    let arch = dir.join("arch.json");
    std::fs::write(
        &arch,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec/fmnist-ref.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let tiny = dir.join("tiny.toml");
    std::fs::write(&tiny, TINY).unwrap();
    // fmnist-ref has layers of 2 and widths the tiny space (layers 1 and 2) allows... and block 0 has 1 layer: in space.
    let e = err(&[
        "transfer",
        "--seed-arch",
        dir.join("missing.json").to_str().unwrap(),
        "--out",
        dir.join("t").to_str().unwrap(),
    ]);
    assert!(e.contains("missing.json"), "{e}");
    assert!(err(&["resume", dir.to_str().unwrap()]).contains("no search to resume here"));
    // Killed between the command and the configuration: resume says it never began.
    let early = dir.join("early");
    std::fs::create_dir_all(&early).unwrap();
    std::fs::write(
        early.join("command.json"),
        format!(
            r#"{{"version":"{}","command":"run"}}"#,
            env!("CARGO_PKG_VERSION")
        ),
    )
    .unwrap();
    let e = err(&["resume", early.to_str().unwrap()]);
    assert!(e.contains("stopped before it began"), "{e}");
    // --detach on the local executor, refused before anything is written.
    let tiny = tiny.to_str().unwrap();
    for (command, extra) in [
        ("run", &[][..]),
        ("fidelity", &["--task", "small", "--samples", "3"][..]),
    ] {
        let out = dir.join(format!("detached-{command}"));
        let mut args = vec![command, "--config", tiny, "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push("--detach");
        let e = err(&args);
        assert!(
            e.contains("--detach") && e.contains("local executor"),
            "{command} --detach on local: {e}"
        );
        assert!(
            !out.exists(),
            "{command} --detach on local wrote {}",
            out.display()
        );
    }
}

/// SIGKILL mid stage 2, and SIGTERM (Ctrl-C alike) mid final training, which checkpoints and
/// says how to continue: each resumed run ends as the uninterrupted one.
#[test]
fn a_run_killed_mid_search_or_stopped_mid_final_training_resumes_to_the_same_result() {
    let dir = temp_dir("kill");
    let config = dir.join("tiny.toml");
    // Inheritance keeps parents' weights in memory only, so it is off for an exact resume. A
    // final training of several epochs, to be stopped in.
    std::fs::write(
        &config,
        TINY.replace("budget = 5", "budget = 8")
            .replace("inherit_weights = true", "inherit_weights = false")
            .replace("[final]\nepochs = 1", "[final]\nepochs = 4"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let whole = ok(&[
        "run",
        "--config",
        config,
        "--out",
        dir.join("whole").to_str().unwrap(),
        "--json",
    ]);

    let killed = dir.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eatnas-cli"))
        .args(["run", "--config", config, "--out", killed.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let history = killed.join("transfer").join("history.jsonl");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&history).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            started.elapsed().as_secs() < 120,
            "the search did not reach stage 2"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL, mid stage 2
    child.wait().unwrap();
    let resumed = ok(&["resume", killed.to_str().unwrap(), "--json"]);
    for stage in ["stage1", "transfer", "scratch"] {
        assert_eq!(
            resumed[stage]["quality_curve"], whole[stage]["quality_curve"],
            "{stage}"
        );
        assert_eq!(resumed[stage]["best"], whole[stage]["best"], "{stage}");
    }
    assert_eq!(
        std::fs::read(dir.join("whole/final/model.safetensors")).unwrap(),
        std::fs::read(killed.join("final/model.safetensors")).unwrap(),
        "the final network's weights"
    );

    let stopped = dir.join("stopped");
    let mut child = spawn(&[
        "run",
        "--config",
        config,
        "--out",
        stopped.to_str().unwrap(),
    ]);
    // The first epoch's checkpoint: the final training is under way.
    while !stopped.join("final/train_state.safetensors").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its final training checkpointed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let output = sigterm(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("the final training stopped after")
            && stderr.contains(&format!("eatnas-cli resume {}", stopped.display())),
        "SIGTERM in the final training (it may have ended first): {stderr}"
    );
    ok(&["resume", stopped.to_str().unwrap(), "--json"]);
    assert_eq!(
        std::fs::read(dir.join("whole/final/model.safetensors")).unwrap(),
        std::fs::read(stopped.join("final/model.safetensors")).unwrap(),
        "the final network's weights after a stop in the final training"
    );
}

/// SIGTERM (Ctrl-C alike) to a coordinator whose local worker is mid-training: the training
/// checkpoints before the coordinator exits, and `resume` continues it to the history of a search
/// never stopped.
#[test]
fn a_stopped_search_continues_its_local_trainings_from_their_checkpoints() {
    let dir = temp_dir("stop-local");
    let config = dir.join("tiny.toml");
    // Three candidates of some 500 steps each (seconds): time to stop one mid-training.
    std::fs::write(
        &config,
        TINY.replace("budget = 5", "budget = 3")
            .replace("[small]\n", "[small]\nepochs = 40\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let whole = dir.join("whole");
    ok(&[
        "search",
        "--config",
        config,
        "--out",
        whole.to_str().unwrap(),
        "--json",
    ]);

    let stopped = dir.join("stopped");
    let mut child = spawn(&[
        "search",
        "--config",
        config,
        "--out",
        stopped.to_str().unwrap(),
    ]);
    let jobs = stopped.join("stage1/jobs");
    let training = loop {
        let found = std::fs::read_dir(&jobs).ok().and_then(|folders| {
            folders
                .map(|f| f.unwrap().path())
                .find(|f| f.join("training").is_dir() && !f.join("result.json").exists())
        });
        if let Some(folder) = found {
            break folder;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the search ended before a training began"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let output = sigterm(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("interrupted"),
        "{stderr}"
    );
    assert!(
        training.join("training/train_state.safetensors").is_file()
            && !training.join("result.json").exists(),
        "{}: the training stopped by the coordinator's SIGTERM left no checkpoint (or it had finished): {stderr}",
        training.display()
    );
    let (_, stderr) = ok_with_stderr(&["resume", stopped.to_str().unwrap(), "--json"]);
    assert!(
        stderr.contains("continuing the training from its checkpoint after"),
        "{stderr}"
    );
    let evaluations = |out: &Path| -> Vec<(String, String)> {
        std::fs::read_to_string(out.join("stage1/history.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let r: serde_json::Value = serde_json::from_str(l).unwrap();
                (r["genome"].to_string(), r["accuracy"].to_string())
            })
            .collect()
    };
    assert_eq!(
        evaluations(&stopped),
        evaluations(&whole),
        "the stopped and resumed search's evaluations against the uninterrupted search's"
    );
}

/// `configs/tiny.toml` searched into `dir/search` (seconds); returns that folder, whose job folders
/// the worker tests run again.
fn tiny_search(dir: &Path) -> std::path::PathBuf {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny.toml");
    let out = dir.join("search");
    ok(&[
        "search",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    out
}

/// `eatnas-cli evaluate`, the worker: a job folder of a search evaluated again alone gives the
/// result the search recorded, bit for bit; bad folders are named and leave error.json.
#[test]
fn the_worker_evaluates_a_job_folder_alone_and_names_bad_ones() {
    let dir = temp_dir("evaluate");
    let out = tiny_search(&dir);
    let job = out.join("stage1/jobs/00001");
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job.join("result.json")).unwrap()).unwrap();
    let again = dir.join("again");
    std::fs::create_dir_all(&again).unwrap();
    std::fs::copy(job.join("job.json"), again.join("job.json")).unwrap();
    let result = ok(&["evaluate", again.to_str().unwrap(), "--json"]);
    for key in ["accuracy", "madds", "params", "error"] {
        assert_eq!(result["outcome"][key], recorded["outcome"][key], "{key}");
    }
    assert!(again.join("result.json").exists());

    let e = err(&["evaluate", dir.to_str().unwrap()]);
    assert!(e.contains("no job.json here"), "{e}");
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("job.json"), "{\"version\": 3").unwrap();
    let e = err(&["evaluate", bad.to_str().unwrap()]);
    assert!(
        e.contains("not an eatnas job") && e.contains("error.json"),
        "{e}"
    );
    let failure = std::fs::read_to_string(bad.join("error.json")).unwrap();
    assert!(failure.contains("not an eatnas job"), "{failure}");
    let e = err(&[
        "evaluate",
        again.to_str().unwrap(),
        "--checkpoint-minutes=-1",
    ]);
    assert!(
        e.contains("--checkpoint-minutes: expected minutes >= 0, got -1"),
        "{e}"
    );
    let e = err(&["evaluate", again.to_str().unwrap(), "--device", "tpu"]);
    assert!(e.contains("unknown device `tpu`"), "{e}");
    assert!(std::fs::read_to_string(again.join("error.json"))
        .unwrap()
        .contains("tpu"));
}

/// A job killed mid-training (a stopped coordinator, a preempted Slurm job) continues from its
/// last checkpoint when it runs again, to the result and weights of a run that was never killed,
/// and keeps no checkpoint once trained; one sent SIGTERM (Slurm's, at a time limit) checkpoints
/// at once and continues the same way; a saved training of another job is named and the job
/// trains from the start.
#[test]
fn a_killed_job_continues_from_its_checkpoint_to_the_uninterrupted_result() {
    let dir = temp_dir("continue");
    let out = tiny_search(&dir);
    let text = std::fs::read_to_string(out.join("stage1/jobs/00001/job.json")).unwrap();
    let mut job: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Some 100 steps (8 epochs of 13), each checkpointed below: time to be killed mid-way.
    job["task"]["epochs"] = 8.into();
    job["save_weights"] = true.into();
    let folder = |name: &str, job: &serde_json::Value| {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("job.json"), job.to_string()).unwrap();
        folder
    };
    let path = |folder: &Path| folder.to_str().unwrap().to_string();

    let whole = folder("whole", &job);
    let uninterrupted = ok(&["evaluate", &path(&whole), "--json"]);
    assert!(
        !whole.join("training").exists(),
        "a job trained in less than --checkpoint-minutes wrote a checkpoint, or kept one"
    );

    // Killed on one core (its loader on one thread), continued on every core (on two here): the
    // loader's threads are no part of what a job trains.
    let killed = folder("killed", &job);
    let mut child = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_eatnas-cli")])
        .args(["evaluate", &path(&killed), "--checkpoint-minutes", "0"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = killed.join("training/train_state.safetensors");
    while !state.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before its first checkpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join("result.json").exists(),
        "the job finished before it was killed: the test proves nothing"
    );
    // The killed training, in the folder of another job (another seed), and a file that is no
    // training state: each named, and the job trained from the start.
    let mut other = job.clone();
    other["seed"] = 12345.into();
    let stale = folder("stale", &other);
    let corrupt = folder("corrupt", &job);
    std::fs::create_dir_all(stale.join("training")).unwrap();
    std::fs::create_dir_all(corrupt.join("training")).unwrap();
    for entry in std::fs::read_dir(killed.join("training")).unwrap() {
        let entry = entry.unwrap().path();
        std::fs::copy(
            &entry,
            stale.join("training").join(entry.file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::write(
        corrupt.join("training/train_state.safetensors"),
        b"not a state",
    )
    .unwrap();
    let (continued, stderr) = ok_with_stderr(&[
        "evaluate",
        &path(&killed),
        "--checkpoint-minutes",
        "0",
        "--json",
    ]);
    assert!(
        stderr.contains("continuing the training from its checkpoint after"),
        "the second run did not continue the first: {stderr}"
    );
    for key in ["accuracy", "madds", "params", "error"] {
        assert_eq!(
            continued["outcome"][key], uninterrupted["outcome"][key],
            "{key} of the continued job against the uninterrupted one"
        );
    }
    assert_eq!(
        std::fs::read(killed.join("weights.safetensors")).unwrap(),
        std::fs::read(whole.join("weights.safetensors")).unwrap(),
        "the continued job's trained weights against the uninterrupted job's"
    );
    assert!(
        !killed.join("training").exists(),
        "a trained job kept its checkpoint"
    );

    // SIGTERM, with no periodic checkpoint: the worker checkpoints after its current step.
    let terminated = folder("terminated", &job);
    let child = spawn(&["evaluate", &path(&terminated)]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let output = sigterm(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("training stopped by a signal after"),
        "the job did not stop on SIGTERM (it may have finished first): {stderr}"
    );
    assert!(terminated
        .join("training/train_state.safetensors")
        .is_file());
    assert!(!terminated.join("result.json").exists());
    let (continued, stderr) = ok_with_stderr(&["evaluate", &path(&terminated), "--json"]);
    assert!(
        stderr.contains("continuing the training from its checkpoint after"),
        "{stderr}"
    );
    assert_eq!(
        continued["outcome"]["accuracy"],
        uninterrupted["outcome"]["accuracy"]
    );
    assert_eq!(
        std::fs::read(terminated.join("weights.safetensors")).unwrap(),
        std::fs::read(whole.join("weights.safetensors")).unwrap(),
        "the weights of the job continued after SIGTERM against the uninterrupted job's"
    );

    for (folder, why) in [
        (&stale, "it is of another training than this job's"),
        (&corrupt, "train_state.safetensors"),
    ] {
        let (_, stderr) = ok_with_stderr(&["evaluate", &path(folder), "--json"]);
        assert!(
            stderr.contains("the saved training cannot be continued")
                && stderr.contains(why)
                && stderr.contains("training the job from the start"),
            "{}: {stderr}",
            folder.display()
        );
        assert!(!folder.join("training").exists(), "{}", folder.display());
    }
}

/// `report.html` of a finished search: one table row per history line, the stages' charts, the
/// architectures, nothing fetched from anywhere; `eatnas-cli report` rewrites it, skips (and
/// names) a truncated history line, and refuses a folder that is not a search.
#[test]
fn the_report_shows_every_evaluation_and_names_what_it_skipped() {
    let dir = temp_dir("report");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny.toml");
    let out = dir.join("search");
    let o = out.to_str().unwrap();
    ok(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--out",
        o,
        "--json",
    ]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let history_lines: usize = ["stage1", "transfer", "scratch"]
        .iter()
        .map(|s| lines(&out.join(s).join("history.jsonl")))
        .sum();
    assert_eq!(
        html.matches("<tr class=").count(),
        history_lines,
        "one row per evaluation"
    );
    for part in [
        "id=\"quality\"",
        "id=\"pareto\"",
        "Basic architecture",
        "Final architecture",
        "not running",
        "<circle",
    ] {
        assert!(html.contains(part), "report.html lacks {part}");
    }
    assert!(
        !html.contains("http-equiv=\"refresh\""),
        "a finished search's page does not reload"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains(" src="),
        "the page fetches nothing"
    );

    // A kill mid-write leaves a truncated last line: shown as skipped, the rest kept.
    let history = out.join("scratch/history.jsonl");
    let mut text = std::fs::read_to_string(&history).unwrap();
    text.push_str("{\"evaluation\": 7, \"id\"");
    std::fs::write(&history, text).unwrap();
    let report = ok(&["report", o, "--json"]);
    assert_eq!(report["rows"], history_lines);
    let skipped = report["skipped"][0].as_str().unwrap_or_default();
    assert!(skipped.contains("scratch/history.jsonl line 7"), "{report}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Skipped unreadable history lines"));

    let e = err(&["report", dir.to_str().unwrap()]);
    assert!(e.contains("not a search folder"), "{e}");
}

#[test]
fn fidelity_ranks_a_proxy_against_a_reference_and_continues_from_its_folder() {
    let dir = temp_dir("fidelity");
    let config = dir.join("tiny.toml");
    std::fs::write(&config, TINY).unwrap();
    let out = dir.join("fidelity");
    let (config, out_s) = (config.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "fidelity",
        "--config",
        config,
        "--task",
        "small",
        "--samples",
        "4",
        "--reference-epochs",
        "2",
        "--reference-data-fraction",
        "0.1",
        "--reference-val-fraction",
        "0.3",
        "--out",
        out_s,
        "--json",
    ];
    let report = ok(&args);
    assert_eq!(report["reference"]["val_fraction"], 0.3, "{report}");
    assert_eq!(report["samples"], 4);
    assert_eq!(
        report["ranked"], 4,
        "every training gave a result: {report}"
    );
    assert_eq!(report["reference"]["epochs"], 2);
    let tau = report["kendall_tau"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&tau), "tau {tau}");
    for file in [
        "plan.json",
        "fidelity.json",
        "fidelity.svg",
        "proxy/00003/result.json",
        "reference/00003/result.json",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    // Again on the folder: everything is collected, nothing trains.
    let (again, stderr) = ok_with_stderr(&args);
    assert_eq!(stderr.matches("(done before)").count(), 8, "{stderr}");
    // Two in the better half of four: too few for a tau of their own, said so.
    assert_eq!(report["top_half"], 2, "{report}");
    assert!(report["top_half_kendall_tau"].is_null(), "{report}");
    assert!(
        stderr.contains("over the best 2 by the reference: Kendall tau -"),
        "{stderr}"
    );
    assert_eq!(again["kendall_tau"], report["kendall_tau"]);
    assert!(
        !out.join("coordinator.lock").exists(),
        "released at the end"
    );
    // A second coordinator on the folder would train every job twice: refused, naming the first.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let holder =
        serde_json::json!({"host": host.trim(), "pid": std::process::id(), "started_at": 1.0});
    std::fs::write(out.join("coordinator.lock"), holder.to_string()).unwrap();
    let e = err(&args);
    assert!(
        e.contains("coordinator.lock is held by process")
            && e.contains(&std::process::id().to_string()),
        "{e}"
    );
    std::fs::remove_file(out.join("coordinator.lock")).unwrap();

    // A second reference seed in a new folder reusing the first measurement's trainings: only
    // the second reference run trains, and the report gives the reference's repeatability.
    let seeds = dir.join("fidelity-seeds");
    let mut seeded: Vec<&str> = args.to_vec();
    let seeds_s = seeds.to_str().unwrap();
    let at = seeded.iter().position(|a| *a == out_s).unwrap();
    seeded[at] = seeds_s;
    seeded.extend(["--reference-seeds", "2", "--reuse", out_s]);
    let (two, stderr) = ok_with_stderr(&seeded);
    assert!(
        stderr.contains(&format!(
            "took 8 training(s) from {out_s} (0 done here already)"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("(done before)").count(), 8, "{stderr}");
    assert!(seeds.join("reference-run2/00003/result.json").exists());
    assert!(stderr.contains("agree with each other"), "{stderr}");
    assert_eq!(two["reference_seeds"], 2);
    let repeatability = two["reference_repeatability_tau"].as_f64();
    assert!(
        repeatability.is_some_and(|t| (-1.0..=1.0).contains(&t)),
        "{two}"
    );
    assert_eq!(
        two["points"][0]["reference_runs"].as_array().unwrap().len(),
        2
    );

    // Architecture 2's reference runs rewritten, the first to have learned and the second to
    // have ended at chance (tiny trainings learn little either way; a real collapse takes a bad
    // recipe and luck): the second is named, and the reference is the first's. Every result
    // records the validation split its accuracy was measured on.
    let rewrite = |folder: &str, accuracy: Option<f64>| -> f64 {
        let path = seeds.join(folder).join("00001/result.json");
        let mut result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let validation = result["outcome"]["validation_chance"].clone();
        assert!(
            validation["images"].as_u64().is_some_and(|n| n > 0),
            "{folder}: {result}"
        );
        let chance = validation["majority_top1"].as_f64().unwrap();
        assert!((0.1..0.5).contains(&chance), "{validation}");
        result["outcome"]["accuracy"] = accuracy.unwrap_or(chance).into();
        std::fs::write(&path, result.to_string()).unwrap();
        accuracy.unwrap_or(chance)
    };
    rewrite("reference", Some(0.9));
    let chance = rewrite("reference-run2", None);
    let (collapsed, stderr) = ok_with_stderr(&seeded);
    assert!(
        stderr.contains("warning: architecture 2: reference run 2 ended no better than always answering the most common class")
            && stderr.contains("its reference is the mean of its other runs"),
        "{stderr}"
    );
    let point = &collapsed["points"][1];
    assert_eq!(point["reference_runs_at_chance"], serde_json::json!([2]));
    assert_eq!(point["reference_runs"], serde_json::json!([0.9, chance]));
    assert_eq!(point["reference"], 0.9, "{point}");

    // A refused measurement, into a folder of its own: TASK, then EXTRA arguments.
    let refused = |task: &str, extra: &[&str], folder: &str| {
        let out = dir.join(folder);
        let mut refused_args = vec!["fidelity", "--config", config, "--task", task];
        refused_args.extend_from_slice(extra);
        refused_args.extend(["--out", out.to_str().unwrap()]);
        err(&refused_args)
    };
    let e = refused("small", &["--samples", "2"], "f2");
    assert!(e.contains("samples") && e.contains("at least 3"), "{e}");
    let e = refused("medium", &[], "f3");
    assert!(e.contains("expected small or large"), "{e}");
    let e = refused("small", &["--reference-val-fraction", "1.2"], "f4");
    assert!(e.contains("reference") && e.contains("val_fraction"), "{e}");
    // Reusing a measurement none of whose trainings is this one's (another sample) is refused
    // before anything trains, naming what differs.
    let e = refused("small", &["--seed", "9", "--reuse", out_s], "f5");
    assert!(
        e.contains("none of its trainings")
            && e.contains("candidate.genome")
            && e.contains("--reference-lr"),
        "{e}"
    );
    assert!(!dir.join("f5").exists(), "a refused reuse writes nothing");
}
