use clap::Parser;

fn main() {
    let cli = wsol::cli::Cli::parse();
    if let Err(err) = wsol::cli::run(cli) {
        if let Some(stop) = err.downcast_ref::<wsol::train::interrupt::Interrupted>() {
            eprintln!("{stop}");
            std::process::exit(wsol::train::interrupt::EXIT_CODE);
        }
        eprintln!("error: {}", wsol::cli::error_message(&err));
        std::process::exit(1);
    }
}
