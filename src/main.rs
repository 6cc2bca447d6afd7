//! The `selfheal` binary: argument parsing and exit codes around the library.

mod cli;

use clap::Parser;

fn main() {
    init_logging();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("selfheal: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Logs go to stderr; `RUST_LOG` filters them (default: selfheal's own at
/// info, other crates' warnings), `SELFHEAL_LOG_FORMAT=json` makes them
/// JSON lines.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,selfheal=info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("SELFHEAL_LOG_FORMAT").as_deref() == Ok("json") {
        b.json().init();
    } else {
        b.init();
    }
}
