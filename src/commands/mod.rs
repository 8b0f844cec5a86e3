//! One file per subcommand: each takes its parsed arguments ([`crate::cli`]) and calls
//! the library. [`run`] dispatches.

mod bench;
mod cam;
mod data;
mod eval;
mod eval_cams;
mod preflight;
mod report;
mod sweep;
mod train;

use std::path::Path;

use anyhow::Result;

use crate::cli::{BenchCommand, Cli, Command, ConfigArgs, DataCommand};
use crate::config::Config;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::EvalCams(a) => eval_cams::run(a),
        Command::Cam(a) => cam::run(a),
        Command::Report(a) => report::run(a),
        Command::Preflight(a) => preflight::run(a),
        Command::Data(DataCommand::Synth(a)) => data::synth(a),
        Command::Data(DataCommand::Check(a)) => data::check(a),
        Command::Data(DataCommand::Convert(a)) => data::convert(a),
        Command::Data(DataCommand::Digits(a)) => data::digits(a),
        Command::Bench(BenchCommand::Train(a)) => bench::train(a),
        Command::Bench(BenchCommand::Eval(a)) => bench::eval(a),
        Command::Bench(BenchCommand::Data(a)) => bench::data(a),
        Command::Bench(BenchCommand::Faithfulness(a)) => bench::faithfulness(a),
    }
}

/// The config of `--config` (or `fallback`), with `--set` and `--device` applied.
pub(crate) fn load_config(args: &ConfigArgs, fallback: Option<&Path>) -> Result<Config> {
    let path = match (&args.config, fallback) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => f.to_path_buf(),
        (None, None) => anyhow::bail!("--config FILE is required"),
    };
    let mut cfg = Config::load(&path, &args.set)?;
    if let Some(d) = &args.device {
        cfg.device = d.clone();
        cfg.validate()?;
    }
    Ok(cfg)
}

/// An error only this rank saw (the others may wait in a collective for it forever):
/// said here, then the whole job is ended. Errors every rank reached together (set-up
/// checks, an interrupt) return normally, each rank saying its own.
pub(crate) fn stop_ranks(dist: &dyn crate::distributed::Collective, e: anyhow::Error) -> anyhow::Error {
    let agreed = e.downcast_ref::<crate::distributed::Agreed>().is_some()
        || e.downcast_ref::<crate::train::interrupt::Interrupted>().is_some();
    if dist.world() == 1 || agreed {
        return e;
    }
    let line = format!("error: rank {}: {}; ending every rank of the job\n", dist.rank(), crate::error::message(&e));
    // One write, so the line does not interleave with another rank's.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    dist.abort(1)
}
