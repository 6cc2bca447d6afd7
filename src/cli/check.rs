//! `selfheal check --policy FILE`.

use std::path::PathBuf;

use selfheal::policy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy file (YAML).
    #[arg(long, env = "SELFHEAL_POLICY")]
    pub policy: PathBuf,
}

/// Prints every problem, one per line, `file:line:col: path: message`.
/// Exit code 0 when the policy is valid, 1 otherwise.
pub fn run(a: Args) -> anyhow::Result<i32> {
    match policy::load::load(&a.policy) {
        Ok(p) => {
            println!(
                "{}: ok ({} SLOs, {} runbooks, version {})",
                a.policy.display(),
                p.slos.len(),
                p.runbooks.len(),
                p.version
            );
            Ok(0)
        }
        Err(problems) => {
            for p in &problems.0 {
                eprintln!("{p}");
            }
            eprintln!("{}: {} problem(s)", a.policy.display(), problems.0.len());
            Ok(1)
        }
    }
}
