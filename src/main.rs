//! The `selfheal` binary: argument parsing and exit codes around the library.

mod cli;

/// jemalloc, for librdkafka's C allocations as well (see Cargo.toml).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's account of the heap for `selfheal bench`'s soak: bytes
/// allocated, and bytes it holds beyond them (resident minus allocated:
/// pages freed and not yet returned, and its metadata).
#[cfg(not(target_env = "msvc"))]
fn jemalloc_heap() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let allocated = stats::allocated::read().ok()? as u64;
    let resident = stats::resident::read().ok()? as u64;
    Some((allocated, resident.saturating_sub(allocated)))
}

fn main() {
    #[cfg(not(target_env = "msvc"))]
    selfheal::live::bench::set_heap_probe(jemalloc_heap);
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
