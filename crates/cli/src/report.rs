//! `eatnas-cli report DIR`: writes DIR/report.html, one self-contained page of a search folder
//! (a finished, running or interrupted one).

use std::path::PathBuf;

use anyhow::Result;
use eatnas_nas::report::{write_report, REPORT_FILE};

#[derive(clap::Args)]
pub struct Args {
    /// A search folder (the --out of run, search or transfer).
    dir: PathBuf,
    /// Print what the report holds as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    // A folder a coordinator holds is running: its page reloads itself.
    let live = args.dir.join(eatnas_nas::lock::LOCK_FILE).exists();
    let stats = write_report(&args.dir, live)?;
    let path = args.dir.join(REPORT_FILE);
    eprintln!("{}: {} evaluations", path.display(), stats.rows);
    for line in &stats.skipped {
        eprintln!("skipped an unreadable history line: {line}");
    }
    if args.json {
        let out = serde_json::json!({
            "report": path,
            "rows": stats.rows,
            "skipped": stats.skipped,
        });
        println!("{out}");
    }
    Ok(())
}
