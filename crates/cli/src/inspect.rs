//! `eatnas-cli inspect ARCH.json --resolution R --classes K [--in-channels C] [--json]`.

use std::path::PathBuf;

use anyhow::Result;
use eatnas_nn::{Arch, Counts};
use eatnas_tensor::Device;
use eatnas_train::latency::{LatencyTable, Provenance};

#[derive(clap::Args)]
pub struct Args {
    /// Architecture file (format eatnas-arch/1).
    arch: PathBuf,
    /// Input height and width in pixels.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    resolution: u32,
    /// Number of classes of the classifier.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    classes: u32,
    /// Input channels (3 for colour images, 1 for greyscale).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    in_channels: u32,
    /// A latency table (`eatnas-cli latency build`) measured for this resolution, input
    /// channels and classes: prints the network's predicted latency beside its MAdds.
    #[arg(long)]
    latency: Option<PathBuf>,
    /// Print one JSON object with the counts as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let arch = Arch::load(&args.arch)?;
    let counts = Counts::new(
        &arch,
        args.in_channels as usize,
        args.resolution as usize,
        args.classes as usize,
    )?;
    println!(
        "{} at {r}x{r}, {} input channels, {} classes",
        arch.name,
        args.in_channels,
        args.classes,
        r = args.resolution
    );
    println!(
        "{:<28} {:>16} {:>14} {:>12}",
        "part", "output (CxHxW)", "MAdds", "params"
    );
    for part in &counts.parts {
        let [c, h, w] = part.output;
        println!(
            "{:<28} {:>16} {:>14} {:>12}",
            part.name,
            format!("{c}x{h}x{w}"),
            part.madds,
            part.params
        );
    }
    println!(
        "{:<28} {:>16} {:>14} {:>12}",
        "total", "", counts.madds, counts.params
    );
    let latency = match &args.latency {
        None => None,
        Some(path) => {
            let table = LatencyTable::load(path)?;
            let p = &table.provenance;
            let here = Provenance::here(
                Device::parse(&p.device)?,
                args.resolution as usize,
                p.batch,
                args.in_channels as usize,
                args.classes as usize,
            );
            table.check_fits(&here)?;
            let t = table.predict(&arch)?;
            println!(
                "predicted latency on {} ({}), batch {}: inference {:.3} ms, training step {:.3} ms",
                p.device, p.device_name, p.batch, t.inference_ms, t.training_ms
            );
            Some(serde_json::json!({"device": p.device, "batch": p.batch, "predicted": t}))
        }
    };
    if args.json {
        let summary = serde_json::json!({
            "latency": latency,
            "arch": arch.name,
            "resolution": args.resolution,
            "classes": args.classes,
            "in_channels": args.in_channels,
            "madds": counts.madds,
            "params": counts.params,
            "parts": counts.parts,
        });
        println!("{summary}");
    }
    Ok(())
}
