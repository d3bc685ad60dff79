//! `cargo xtask cuda-emulator [test]`: builds `target/cuda-emu/libcuda.so`, a stand-in CUDA
//! driver that runs the kernels of `kernels/*.cu` on the host (`kernels/emu/`), so that the CUDA
//! backend's launches, arguments and kernel logic are tested on machines without a GPU. With
//! `test`, runs the op and conformance tests with it (they then see a `cuda:0`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Also run the op and conformance tests on it (LD_LIBRARY_PATH=target/cuda-emu).
    #[arg(value_parser = ["test"])]
    test: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let root = super::kernels::workspace_root();
    let lib_dir = build(&root)?;
    if args.test.is_some() {
        return test(&root, &lib_dir);
    }
    println!(
        "built {}/libcuda.so; use it with LD_LIBRARY_PATH={}",
        lib_dir.display(),
        lib_dir.display()
    );
    Ok(())
}

/// `__shared__` declarations become static storage of the host thread (each runs one block at a
/// time), and `extern __shared__ T name[];` the launch's dynamic shared memory.
fn rewrite_shared(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("extern __shared__ ") {
            // `T name[];`
            let decl = rest.trim_end_matches(';').trim_end_matches("[]");
            let (ty, name) = decl.rsplit_once(' ').unwrap_or(("float", decl));
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!(
                "{indent}{ty}* {name} = ({ty}*)emu::dynamic_shared();\n"
            ));
        } else {
            out.push_str(&line.replace("__shared__", "static thread_local"));
            out.push('\n');
        }
    }
    out
}

pub fn build(root: &Path) -> Result<PathBuf> {
    let kernels = root.join("kernels");
    let out = root.join("target").join("cuda-emu");
    let gen = out.join("gen");
    std::fs::create_dir_all(&gen).with_context(|| format!("creating {}", gen.display()))?;
    let mut units = vec![kernels.join("emu").join("runtime.cpp")];
    for source in super::kernels::kernel_sources(&kernels)? {
        let name = source.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&source)?;
        std::fs::write(gen.join(&name), rewrite_shared(&text))?;
        let Some(stem) = name.strip_suffix(".cu") else {
            continue;
        };
        // The entry points, as the committed PTX lists them (macros generate some names).
        let ptx = std::fs::read_to_string(kernels.join("ptx").join(format!("{stem}.ptx")))
            .with_context(|| {
                format!("reading the PTX of {name}: run `cargo xtask build-kernels`")
            })?;
        let entries: Vec<&str> = ptx
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
            .map(|l| l.split('(').next().unwrap_or(""))
            .collect();
        let registrations: Vec<String> = entries
            .iter()
            .map(|e| format!("    emu::Registration(\"{e}\", &{e}),"))
            .collect();
        let unit = gen.join(format!("{stem}.emu.cpp"));
        std::fs::write(
            &unit,
            format!(
                "#include \"shim.h\"\n#include \"{name}\"\n#include \"register.h\"\nstatic emu::Registration registrations[] = {{\n{}\n}};\n",
                registrations.join("\n")
            ),
        )?;
        units.push(unit);
    }
    let lib = out.join("libcuda.so");
    let status = Command::new(std::env::var("CXX").unwrap_or_else(|_| "g++".into()))
        .args([
            "-std=c++17",
            "-O2",
            // The host's own instructions (fmaf inline, wider vectors), but no contraction of
            // a * b + c into a fused multiply-add the kernel did not write.
            "-march=native",
            "-ffp-contract=off",
            "-pthread",
            "-fPIC",
            "-shared",
            "-Wno-unknown-pragmas",
            "-I",
        ])
        .arg(&gen)
        .arg("-I")
        .arg(kernels.join("emu"))
        .args(&units)
        .arg("-o")
        .arg(&lib)
        .status()
        .context("running g++ (set CXX for another compiler)")?;
    if !status.success() {
        bail!("compiling the CUDA emulator failed");
    }
    Ok(out)
}

/// `cargo test --release ARGS -- --nocapture` with the emulator as the CUDA driver (and `env`);
/// returns whether it passed and what it printed (printed as it is returned).
fn cargo_test(
    root: &Path,
    lib_dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<(bool, String)> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .env("LD_LIBRARY_PATH", lib_dir)
        .env(crate::POISON_WORKSPACE.0, crate::POISON_WORKSPACE.1)
        .envs(env.iter().copied())
        .args(["test", "--release"])
        .args(args)
        .args(["--", "--nocapture"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    print!("{text}");
    Ok((output.status.success(), text))
}

/// The op tests and the PyTorch fixtures with the emulator as the machine's CUDA driver, then
/// the op tests again with the opt-in TF32 products; fails unless they actually ran on `cuda:0`
/// (so a driver that was not picked up cannot pass).
pub fn test(root: &Path, lib_dir: &Path) -> Result<()> {
    // The tests run from their package's folder.
    let lib_dir = lib_dir.canonicalize()?;
    // `--workspace` (the test files' names are unique in it) resolves the dependencies' features
    // as `cargo test --workspace` did, so nothing is compiled again.
    let tests = [
        "--workspace",
        "--test",
        "devices",
        "--test",
        "gradcheck",
        "--test",
        "conformance",
        "--test",
        "network",
        "--test",
        "trajectory",
    ];
    let (passed, text) = cargo_test(root, &lib_dir, &[], &tests)?;
    if !passed {
        bail!("the tests failed on the emulated CUDA device");
    }
    let emulated = text
        .lines()
        .filter(|l| {
            l.contains("[cuda:0] ok")
                || (l.starts_with("devices ") && l.contains(": cuda:0 ("))
                || l.starts_with("network: cuda:0")
        })
        .count();
    if emulated == 0 || text.contains("skipped the CUDA device") {
        bail!(
            "the tests did not run on the emulated CUDA device ({} was not loaded as libcuda.so)",
            lib_dir.display()
        );
    }
    // The TF32 tensor-core products (emulated wmma) against the CPU, at TF32's bound.
    let tf32 = [("EATNAS_CUDA_MATH", "tf32")];
    let (passed, text) = cargo_test(root, &lib_dir, &tf32, &["--workspace", "--test", "devices"])?;
    if !passed || !text.contains("TF32 products") {
        bail!("the TF32 products failed (or did not run) on the emulated CUDA device");
    }
    println!("cuda-emulator: {emulated} checks ran on the emulated cuda:0, and the TF32 products");
    Ok(())
}
