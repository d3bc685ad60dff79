//! `cargo xtask build-kernels`: compiles every `kernels/*.cu` to PTX for `compute_80`, writes it
//! to `kernels/ptx/STEM.ptx` (committed, so that the crates build on machines with no CUDA
//! toolkit), records the hash of the sources it came from, and runs `ptxas` for sm_90 (the lent
//! GPUs) to report registers, shared memory and spills (a spill fails the build).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The virtual architecture the PTX is written for: the driver JIT-compiles it for the card
/// (Ampere, Hopper and newer). The kernels use nothing newer than sm_80 has: PTX for compute_90
/// was the same but for its `.target` line, so one is kept.
pub const TARGET: &str = "compute_80";
/// The toolkit the xtask installs when none is found: its PTX is `.version 9.0`, which driver
/// 580 loads (newer toolkits write PTX that driver rejects).
const TOOLKIT_PACKAGE: &str = "cuda-toolkit[nvcc,nvvm,crt,cudart,cccl]==13.0.2";

pub fn run() -> Result<()> {
    let root = workspace_root();
    let kernels = root.join("kernels");
    let sources = kernel_sources(&kernels)?;
    let bin = find_nvcc(&root)?;
    let nvcc = bin.join("nvcc");
    let ptxas = bin.join("ptxas");
    println!("nvcc: {}", nvcc.display());
    let version = output_of(Command::new(&nvcc).arg("--version"))?;
    let out_dir = kernels.join("ptx");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let mut report = String::from(
        "# ptxas -v for sm_90 of every entry point (written by `cargo xtask build-kernels`)\n",
    );
    for source in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
    {
        let stem = source.file_stem().unwrap().to_string_lossy().to_string();
        let ptx = out_dir.join(format!("{stem}.ptx"));
        let tmp = ptx.with_extension("ptx.tmp");
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", &format!("-arch={TARGET}")])
            .arg("-I")
            .arg(&kernels)
            .arg(source)
            .arg("-o")
            .arg(&tmp)
            .status()
            .with_context(|| format!("running {}", nvcc.display()))?;
        if !status.success() {
            bail!("nvcc failed on {} for {TARGET}", source.display());
        }
        std::fs::rename(&tmp, &ptx).with_context(|| format!("writing {}", ptx.display()))?;
        println!(
            "wrote {}",
            ptx.strip_prefix(&root).unwrap_or(&ptx).display()
        );
        let out = Command::new(&ptxas)
            .args(["-arch=sm_90", "-v", "-o", "/dev/null"])
            .arg(&ptx)
            .output()
            .with_context(|| format!("running {}", ptxas.display()))?;
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            bail!("ptxas rejected {}:\n{text}", ptx.display());
        }
        report.push_str(&format!("\n## {stem}.cu\n{}", summarize_ptxas(&text)));
    }
    let spills: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("spill") && !l.contains(" 0 bytes spill stores"))
        .collect();
    write_atomically(&out_dir.join("ptxas-sm_90.txt"), &report)?;
    let digest = sources_digest(&kernels)?;
    let toolkit = version.lines().last().unwrap_or("").trim().to_string();
    write_atomically(
        &out_dir.join("SOURCES.sha256"),
        &format!("{digest}\n# sha256 of kernels/*.cu and *.cuh (name, newline, contents, newline; sorted by name)\n# built with: {toolkit}\n"),
    )?;
    println!("sources sha256 {digest}; resource usage in kernels/ptx/ptxas-sm_90.txt");
    if !spills.is_empty() {
        bail!("ptxas reports register spills:\n{}", spills.join("\n"));
    }
    Ok(())
}

/// One line per entry point: name, registers, shared memory, spills.
fn summarize_ptxas(text: &str) -> String {
    let mut out = String::new();
    let mut entry = String::new();
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            entry = rest.split('\'').next().unwrap_or("").to_string();
        } else if line.contains("spill stores") {
            out.push_str(&format!("{entry}: {}", line.trim()));
        } else if line.contains("Used") && line.contains("registers") {
            let used = line.split("info    : ").nth(1).unwrap_or(line).trim();
            out.push_str(&format!("; {used}\n"));
        }
    }
    out
}

/// `kernels/*.cu` and `kernels/*.cuh`, sorted by name.
pub fn kernel_sources(kernels: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kernels)
        .with_context(|| format!("reading {}", kernels.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu" || e == "cuh"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .cu files in {}", kernels.display());
    }
    Ok(files)
}

/// The hash the tensor crate's test recomputes (`cuda::kernels` tests): sha256 over each source's
/// file name, a newline, its contents and a newline, in name order.
pub fn sources_digest(kernels: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    for path in kernel_sources(kernels)? {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        hasher.update(name.as_bytes());
        hasher.update(b"\n");
        hasher.update(&text);
        hasher.update(b"\n");
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The folder holding nvcc and ptxas: `$PATH`, then `$CUDA_HOME/bin`, then a toolkit under
/// `target/cuda-toolkit`, installed there from PyPI when missing.
fn find_nvcc(root: &Path) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("nvcc").is_file() && d.join("ptxas").is_file())
    {
        return Ok(dir);
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let bin = PathBuf::from(home).join("bin");
        if bin.join("nvcc").is_file() {
            return Ok(bin);
        }
    }
    let prefix = root.join("target").join("cuda-toolkit");
    let bin = prefix.join("nvidia").join("cu13").join("bin");
    if !bin.join("nvcc").is_file() {
        eprintln!(
            "no nvcc on PATH or under CUDA_HOME: installing {TOOLKIT_PACKAGE} into {}",
            prefix.display()
        );
        let python = std::env::var("EATNAS_PYTHON").unwrap_or_else(|_| "python3".into());
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&prefix)
            .arg(TOOLKIT_PACKAGE)
            .status()
            .with_context(|| format!("running {python} -m pip"))?;
        if !status.success() || !bin.join("nvcc").is_file() {
            bail!("could not install {TOOLKIT_PACKAGE} with pip into {}; put nvcc on PATH or set CUDA_HOME", prefix.display());
        }
    }
    Ok(bin)
}

fn output_of(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
