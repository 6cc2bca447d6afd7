//! Running one argument vector as a child process: no shell, bounded
//! output, a hard timeout that kills the child.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::capture::Capture;

/// How long to keep reading output after the child exited: a grandchild
/// that inherited the pipes may hold them open long after.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How long to wait for a killed child to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Capture,
    pub stderr: Capture,
}

#[derive(Debug)]
pub(crate) enum ProcError {
    /// The program could not be started.
    Spawn(std::io::Error),
    /// Waiting for the child failed.
    Wait(std::io::Error),
    /// The timeout passed; the child was killed.
    TimedOut,
}

enum Event {
    Out(std::io::Result<usize>),
    Err(std::io::Result<usize>),
    Exited(std::io::Result<ExitStatus>),
    Deadline,
}

/// Runs `argv[0]` with `argv[1..]` as its arguments (found on `PATH` when
/// it has no `/`), stdin closed, stdout and stderr captured up to `limit`
/// bytes each. `argv` must not be empty.
pub(crate) async fn run(
    argv: &[String],
    timeout: Duration,
    limit: usize,
) -> Result<Finished, ProcError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ProcError::Spawn(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty argument vector",
        )));
    };
    let deadline = Instant::now() + timeout;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(ProcError::Spawn)?;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let mut stdout = Capture::new(limit);
    let mut stderr = Capture::new(limit);
    let mut out_buf = vec![0u8; 8192];
    let mut err_buf = vec![0u8; 8192];
    let mut status: Option<ExitStatus> = None;
    let mut stop_reading_at = deadline;
    loop {
        if status.is_some() && out_pipe.is_none() && err_pipe.is_none() {
            break;
        }
        let ev = tokio::select! {
            r = read_some(&mut out_pipe, &mut out_buf) => Event::Out(r),
            r = read_some(&mut err_pipe, &mut err_buf) => Event::Err(r),
            r = child.wait(), if status.is_none() => Event::Exited(r),
            () = tokio::time::sleep_until(stop_reading_at) => Event::Deadline,
        };
        match ev {
            Event::Out(Ok(n)) if n > 0 => stdout.push(&out_buf[..n]),
            Event::Out(_) => out_pipe = None,
            Event::Err(Ok(n)) if n > 0 => stderr.push(&err_buf[..n]),
            Event::Err(_) => err_pipe = None,
            Event::Exited(Ok(s)) => {
                status = Some(s);
                stop_reading_at = deadline.min(Instant::now() + DRAIN_GRACE);
            }
            Event::Exited(Err(e)) => return Err(ProcError::Wait(e)),
            Event::Deadline if status.is_some() => break,
            Event::Deadline => {
                kill(&mut child).await;
                return Err(ProcError::TimedOut);
            }
        }
    }
    match status {
        Some(status) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
        None => Err(ProcError::TimedOut),
    }
}

/// Reads from the pipe, or waits forever once it is closed.
async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Kills the child and reaps it, so no zombie is left behind.
async fn kill(child: &mut tokio::process::Child) {
    if let Err(e) = child.start_kill() {
        tracing::warn!(error = %e, "could not kill a timed-out action process");
        return;
    }
    if tokio::time::timeout(REAP_WAIT, child.wait()).await.is_err() {
        tracing::warn!("a killed action process was not reaped in time");
    }
}

/// `exit status 3` or `terminated by signal 9`.
pub(crate) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("terminated by signal {sig}");
        }
    }
    status.to_string()
}
