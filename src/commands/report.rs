//! `wsol report RUN_DIR`: the HTML page of a run.

use anyhow::Result;

use crate::cli::ReportArgs;

pub fn run(a: ReportArgs) -> Result<()> {
    let req = crate::evaluate::html_report::ReportRequest {
        run_dir: a.run_dir,
        checkpoint: a.checkpoint,
        samples: a.samples,
    };
    let path = crate::evaluate::html_report::write(&req)?;
    println!("wrote {}", path.display());
    Ok(())
}
