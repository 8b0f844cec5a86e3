use clap::Parser;

fn main() {
    let cli = wsol::cli::Cli::parse();
    if let Err(err) = wsol::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
