//! A real Spin serving the project's app: `spin up` as a child process on
//! a copy of spin.toml whose sources point at the files built, with its
//! state, logs and output in a temporary folder of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::Error;

/// How long Spin may take to load the app: the first start compiles every
/// component (later ones hit Wasmtime's cache).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a stopped Spin may take to finish the requests in flight.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SpinProcess {
    child: Child,
    dir: tempfile::TempDir,
    watcher: Option<Watcher>,
}

impl SpinProcess {
    /// Runs `spin up` on `manifest` (text whose sources are absolute paths),
    /// capping each instance's memory at `max_instance_memory` bytes.
    pub async fn start(
        bin: &Path,
        addr: SocketAddr,
        manifest: &str,
        variables: &BTreeMap<String, String>,
        max_instance_memory: Option<usize>,
    ) -> Result<SpinProcess, Error> {
        let dir = tempfile::Builder::new()
            .prefix("spin-app-")
            .tempdir()
            .map_err(Error::io("creating a folder for Spin"))?;
        let manifest_path = dir.path().join("spin.toml");
        std::fs::write(&manifest_path, manifest)
            .map_err(Error::io("writing spin.toml for Spin"))?;
        let output = |name: &str| {
            std::fs::File::create(dir.path().join(name))
                .map_err(Error::io(format!("creating {name} for Spin")))
        };
        let mut command = Command::new(bin);
        command
            .arg("up")
            .arg("--from")
            .arg(&manifest_path)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            // Spin reads a `.env` of its working folder: none here.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output("stdout.log")?)
            .stderr(output("stderr.log")?)
            // `spin up` runs the trigger as a child process of its own: a
            // group of their own lets both be signalled, and killed, as one.
            .process_group(0);
        if let Some(bytes) = max_instance_memory {
            command.arg("--max-instance-memory").arg(bytes.to_string());
        }
        // Only the variables given: the machine's own must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SPIN_VARIABLE_") {
                command.env_remove(key);
            }
        }
        for (name, value) in variables {
            command.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
        }
        let child = command
            .spawn()
            .map_err(Error::io(format!("starting {}", bin.display())))?;
        let watcher = Watcher::spawn(child.id()).ok();
        let mut spin = SpinProcess {
            child,
            dir,
            watcher,
        };
        spin.wait_until_serving(bin, addr).await?;
        Ok(spin)
    }

    async fn wait_until_serving(&mut self, bin: &Path, addr: SocketAddr) -> Result<(), Error> {
        let started = Instant::now();
        let failed = |spin: &SpinProcess, reason: String| Error::SpinStart {
            bin: bin.to_owned(),
            reason,
            output: spin.output(),
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Spin 4.0.2 says "<addr> is already in use" and exits.
                if self.output().contains("already in use") {
                    return Err(Error::PortTaken {
                        bin: bin.to_owned(),
                        addr,
                    });
                }
                return Err(failed(self, format!("it exited ({status})")));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                self.kill();
                return Err(failed(
                    self,
                    format!("nothing listened on {addr} after {START_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spin's own output, then each component's log file.
    pub fn output(&self) -> String {
        let mut files: Vec<PathBuf> = vec![
            self.dir.path().join("stdout.log"),
            self.dir.path().join("stderr.log"),
        ];
        if let Ok(logs) = std::fs::read_dir(self.dir.path().join("logs")) {
            let mut logs: Vec<PathBuf> = logs.filter_map(|e| e.ok().map(|e| e.path())).collect();
            logs.sort();
            files.extend(logs);
        }
        let mut text = String::new();
        for file in files {
            if let Ok(content) = std::fs::read_to_string(&file) {
                text.push_str(&format!("==> {} <==\n{content}\n", file.display()));
            }
        }
        text
    }

    /// Ctrl-C, as a user stops `spin up` (the terminal signals the whole
    /// group), then waits for it to exit.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        killpg(self.group(), Signal::SIGINT).map_err(std::io::Error::other)?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Nothing of the group may outlive `spin up`.
                let _ = killpg(self.group(), Signal::SIGKILL);
                self.dismiss_watcher();
                return if status.success() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!("Spin exited with {status}")))
                };
            }
            if started.elapsed() > STOP_TIMEOUT {
                self.kill();
                return Err(std::io::Error::other(format!(
                    "Spin did not stop within {STOP_TIMEOUT:?} of Ctrl-C"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `spin up`'s process group: it and the trigger process it started.
    fn group(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Kills `spin up` and its trigger process.
    pub fn kill(&mut self) {
        let _ = killpg(self.group(), Signal::SIGKILL);
        let _ = self.child.wait();
        self.dismiss_watcher();
    }

    fn dismiss_watcher(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.dismiss();
        }
    }
}

/// Kills Spin's process group when this process ends however it ends (a
/// test binary killed mid-run drops nothing, nor does one whose server
/// lives in a static): a shell blocked on a pipe from this process, which
/// the kernel closes at exit.
struct Watcher {
    child: Child,
    stdin: ChildStdin,
}

impl Watcher {
    fn spawn(pid: u32) -> std::io::Result<Watcher> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"read -r _ignored; kill -KILL -- "-$1" 2>/dev/null"#)
            .arg("spin-watcher")
            .arg(pid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin was piped");
        Ok(Watcher { child, stdin })
    }

    /// Spin has exited: the watcher is killed before its pipe closes, so
    /// that it never signals a pid that may be another process's by now.
    fn dismiss(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.stdin);
    }
}
