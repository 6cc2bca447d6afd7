//! The `selfheal` binary: argument parsing and exit codes around the library.

mod cli;

fn main() {
    let cli = match cli::config::parse(std::env::args_os().collect()) {
        Ok(Some(cli)) => cli,
        Ok(None) => std::process::exit(0),
        Err(e) => {
            eprintln!("selfheal: {e:#}");
            std::process::exit(2);
        }
    };
    // The demo's timeline is its output; its services' logs would drown it.
    let quiet = matches!(
        cli.command,
        cli::Command::Demo(_) | cli::Command::DemoService(_)
    );
    // librdkafka logs below warnings only with a `debug` setting.
    init_logging(if quiet {
        "error"
    } else {
        "warn,selfheal=info,librdkafka=debug"
    });
    match cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("selfheal: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Logs go to stderr; `RUST_LOG` filters them (default: selfheal's own at
/// info, other crates' warnings, librdkafka's debug contexts when a
/// `debug` setting asks for them; errors only for the demo),
/// `SELFHEAL_LOG_FORMAT=json` makes them JSON lines.
fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("SELFHEAL_LOG_FORMAT").as_deref() == Ok("json") {
        b.json().init();
    } else {
        b.init();
    }
}
