//! The built-in `exec` action.

use std::time::{Duration, Instant};

use super::{cmd, runner, strings, unique_path};
use crate::executor::{run, Handlers};
use crate::records::ResultStatus;

fn exec(args: &[&str]) -> crate::records::Command {
    let mut c = cmd("exec");
    c.args = strings(args);
    c
}

#[tokio::test]
async fn a_program_that_exits_zero_succeeds_with_its_output() {
    let out = run(&exec(&["echo", "hello", "world"]), &runner(Handlers::new())).await;
    assert_eq!(out.status, ResultStatus::Succeeded, "{out:?}");
    assert_eq!(out.detail, "hello world");
}

#[tokio::test]
async fn a_failing_program_fails_with_its_exit_status_and_stderr() {
    let c = exec(&["sh", "-c", "echo partial; echo boom >&2; exit 3"]);
    let out = run(&c, &runner(Handlers::new())).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(out.detail, "exit status 3; stderr: boom");
}

#[tokio::test]
async fn a_program_past_its_timeout_is_killed_and_reported_timed_out() {
    let pidfile = unique_path("pid");
    let mut c = exec(&["sh", "-c", r#"echo $$ > "$1"; exec sleep 30"#, "sh"]);
    c.args.push(pidfile.display().to_string());
    // Long enough for the shell to start on a busy machine.
    c.timeout = "3s".into();
    let started = Instant::now();
    let out = run(&c, &runner(Handlers::new())).await;
    let took = started.elapsed();
    assert_eq!(out.status, ResultStatus::TimedOut, "{out:?}");
    assert_eq!(out.detail, "timed out after 3s; process killed");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let pid = std::fs::read_to_string(&pidfile).expect("the child wrote its pid");
    let _ = std::fs::remove_file(&pidfile);
    let proc_entry = format!("/proc/{}", pid.trim());
    assert!(
        !std::path::Path::new(&proc_entry).exists(),
        "child {} is still there",
        pid.trim()
    );
}

#[tokio::test]
async fn a_command_without_a_readable_timeout_gets_the_default() {
    let r = runner(Handlers::new()).default_timeout(Duration::from_secs(1));
    for timeout in ["", "soon"] {
        let mut c = exec(&["sleep", "30"]);
        c.timeout = timeout.into();
        let out = run(&c, &r).await;
        assert_eq!(out.status, ResultStatus::TimedOut, "{timeout:?}: {out:?}");
        assert_eq!(out.detail, "timed out after 1s; process killed");
    }
}

#[tokio::test]
async fn output_over_the_limit_is_truncated_with_a_marker() {
    let r = runner(Handlers::new()).max_output(100);
    let long = "a".repeat(5000);
    let out = run(&exec(&["printf", "%s", &long]), &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded);
    assert_eq!(
        out.detail,
        format!("{}… [truncated 4900 bytes]", "a".repeat(100))
    );

    // Two-byte characters: the 51st would straddle the limit of 101 bytes.
    let r = runner(Handlers::new()).max_output(101);
    let wide = "é".repeat(3000);
    let out = run(&exec(&["printf", "%s", &wide]), &r).await;
    assert_eq!(
        out.detail,
        format!("{}… [truncated 5900 bytes]", "é".repeat(50))
    );

    let r = runner(Handlers::new()).max_output(10);
    let out = run(
        &exec(&["sh", "-c", "echo 0123456789abcdef >&2; exit 1"]),
        &r,
    )
    .await;
    assert_eq!(
        out.detail,
        "exit status 1; stderr: 0123456789… [truncated 7 bytes]"
    );
}

#[tokio::test]
async fn shell_syntax_in_an_argument_reaches_the_program_literally() {
    let pwned = unique_path("pwned");
    let literal = format!(
        "; rm -rf / $(touch {}) `touch {}` && echo hi",
        pwned.display(),
        pwned.display()
    );
    let out = run(&exec(&["printf", "%s", &literal]), &runner(Handlers::new())).await;
    assert_eq!(out.status, ResultStatus::Succeeded);
    assert_eq!(out.detail, literal);
    assert!(!pwned.exists(), "a shell interpreted the argument");
}

#[tokio::test]
async fn programs_off_the_allow_list_are_refused() {
    let h = Handlers {
        exec_allow: Some(strings(&["echo"])),
        ..Handlers::new()
    };
    let r = runner(h);
    let out = run(&exec(&["printf", "x"]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(
        out.detail,
        "program printf is not allow-listed on this executor"
    );
    // Compared as written: a path to an allowed name is another program.
    let out = run(&exec(&["/bin/echo", "x"]), &r).await;
    assert_eq!(
        out.detail,
        "program /bin/echo is not allow-listed on this executor"
    );
    let out = run(&exec(&["echo", "allowed"]), &r).await;
    assert_eq!(out.status, ResultStatus::Succeeded);
    assert_eq!(out.detail, "allowed");
}

#[tokio::test]
async fn missing_argument_vectors_and_programs_fail_clearly() {
    let r = runner(Handlers::new());
    let out = run(&exec(&[]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(out.detail, "exec command has no argument vector");
    let out = run(&exec(&["selfheal-no-such-program"]), &r).await;
    assert_eq!(out.status, ResultStatus::Failed);
    assert_eq!(out.detail, "program selfheal-no-such-program not found");
}
