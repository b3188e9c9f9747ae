//! Running the postmaster: its settings, readiness and shutdown.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Binaries, Error};

/// Settings for a cluster whose data may be lost at any time: durability is
/// traded for speed, and there is room for pooled clients (Spin keeps up to
/// 64 connections per component).
pub(crate) const SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "max_connections=300",
    "shared_buffers=128MB",
    "logging_collector=off",
    "log_min_messages=warning",
];

/// What only a throwaway cluster may trade away: durability across a crash
/// of the machine, for speed. A kept cluster holds data someone wants back.
pub(crate) const THROWAWAY_SETTINGS: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
];

const POLL: Duration = Duration::from_millis(50);

/// Waits until the server accepts connections on `port`, or fails with the
/// reason it will not.
pub(crate) fn wait_ready(
    child: &mut Child,
    binaries: &Binaries,
    port: u16,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("postgres exited ({status})"));
        }
        let ready = Command::new(binaries.pg_isready())
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-d",
                "postgres",
                "-U",
                crate::SUPERUSER,
            ])
            .args(["-p", &port.to_string(), "-t", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|err| format!("running pg_isready: {err}"))?;
        if ready.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not accepting connections after {timeout:?}"));
        }
        std::thread::sleep(POLL);
    }
}

/// Signals the postmaster (`SIGINT`: fast shutdown, `SIGQUIT`: immediate)
/// and reaps it.
pub(crate) fn shut_down(child: &mut Child, signal: Signal) -> Result<(), Error> {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
    if child.try_wait().ok().flatten().is_none() {
        let _ = kill(pid, signal);
    }
    child
        .wait()
        .map_err(Error::io("waiting for the server to stop"))?;
    Ok(())
}
