use clap::Parser;

fn main() {
    // A file over the size limit (`ulimit -f`) must fail the write with EFBIG, reported
    // with its path like a full disk, instead of killing the process mid-checkpoint.
    // Output piped into a reader that quits (`wsol bench train --profile | head`) ends
    // the process quietly, as for other command-line tools, instead of println!'s panic.
    #[cfg(unix)]
    // SAFETY: SIG_IGN and SIG_DFL install no handler, so no code of ours runs in signal
    // context; no other thread exists yet to race with the change.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // SAFETY: the start of main, so no other thread runs yet (rayon's pool starts later).
    unsafe { wsol_ops::memory::keep_freed_memory() };
    let cli = wsol::cli::Cli::parse();
    if let Err(err) = wsol::commands::run(cli) {
        if let Some(stop) = err.downcast_ref::<wsol::train::interrupt::Interrupted>() {
            eprintln!("{stop}");
            std::process::exit(wsol::train::interrupt::EXIT_CODE);
        }
        // One write for the whole line: ranks of a distributed run share one stderr
        // (mpirun's), and eprintln! writes its pieces separately, so lines would interleave.
        let line = format!("error: {}\n", wsol::error::message(&err));
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        std::process::exit(1);
    }
}
