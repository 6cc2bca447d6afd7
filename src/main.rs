//! The `selfheal` binary: argument parsing and exit codes around the library.

mod cli;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("selfheal: {e:#}");
            std::process::exit(2);
        }
    }
}
