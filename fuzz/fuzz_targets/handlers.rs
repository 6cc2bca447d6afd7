//! The executor's handler file. Every handler it accepts renders against
//! a command without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal::executor::template::render_argv;
use selfheal::executor::{Handler, Handlers};
use selfheal::records::Command;
use selfheal::time::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(h) = Handlers::parse(text, "fuzz.yaml") else {
        return;
    };
    let cmd = Command {
        id: "cmd-1".into(),
        incident: "inc-1".into(),
        runbook: "rb".into(),
        action: "restart".into(),
        target: "../x?y#z {{target}}".into(),
        params: [("p".to_string(), "-a/b%2e".to_string())].into(),
        args: Vec::new(),
        tier: 1,
        deadline: Timestamp(0),
        timeout: String::new(),
        rollback_of: None,
        service: "svc".into(),
    };
    for handler in h.kinds.values().chain(h.default.iter()) {
        match handler {
            Handler::Exec(e) => {
                let _ = render_argv(&e.argv, &cmd);
            }
            Handler::Http(x) => {
                let _ = x.url.render(&cmd);
            }
        }
    }
});
