//! Long-running servers ([`Service`]) and one-shot helper commands ([`run`]) with deadlines.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{IoContext, Result, TestkitError};
use crate::sandbox::{SANDBOX_ENV, Sandbox};
use crate::user::RunAs;
use crate::wait::wait_until;

/// A server process started by the harness, in its own process group, logging to a file in the
/// sandbox. Dropping it kills the group.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// [`Service::spawn`], then waits until the process listens on `port` (127.0.0.1) within
    /// `timeout`; a failure carries the log's tail.
    pub fn spawn_listening(
        sandbox: &Sandbox,
        name: &str,
        cmd: Command,
        user: &RunAs,
        port: u16,
        timeout: Duration,
    ) -> Result<Self> {
        let mut svc = Self::spawn(sandbox, name, cmd, user)?;
        let up = crate::wait::wait_until(&format!("{name} to listen"), timeout, || {
            svc.is_running() && crate::net::port_open(port)
        });
        crate::wait::with_log(up, || svc.log_tail())?;
        Ok(svc)
    }

    /// Spawns `cmd` as `user` inside `sandbox`, with stdout/stderr going to `<sandbox>/<name>.log`.
    pub fn spawn(sandbox: &Sandbox, name: &str, mut cmd: Command, user: &RunAs) -> Result<Self> {
        let log = sandbox.path().join(format!("{name}.log"));
        let out = open_log(&log)?;
        let err = out
            .try_clone()
            .context(|| format!("cloning log handle {}", log.display()))?;
        user.chown(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env(SANDBOX_ENV, sandbox.path())
            .current_dir(sandbox.path())
            .process_group(0);
        user.apply(&mut cmd);
        let child = cmd
            .spawn()
            .context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// The server's name as given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Errors with the log tail if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(TestkitError::ExitedEarly {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: self.log_tail(),
            }),
            Err(e) => Err(TestkitError::Io {
                context: format!("waiting on {}", self.name),
                source: e,
            }),
        }
    }

    /// Fault injection: SIGKILL the whole process group, no chance to clean up.
    pub fn kill9(&mut self) {
        self.signal_group(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Graceful stop: SIGTERM to the group, then SIGKILL if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        self.stop_with(Signal::SIGTERM, grace);
    }

    /// Sends `sig` to the group, then SIGKILL if it has not exited within `grace`.
    pub fn stop_with(&mut self, sig: Signal, grace: Duration) {
        self.signal_group(sig);
        let child = &mut self.child;
        if wait_until("graceful exit", grace, || {
            !matches!(child.try_wait(), Ok(None))
        })
        .is_err()
        {
            self.kill9();
        }
    }

    /// Sends `sig` to the process group (for example SIGSTOP/SIGCONT to freeze a server).
    pub fn signal_group(&self, sig: Signal) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), sig);
    }

    /// The last 40 lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .context(|| format!("opening log {}", path.display()))
}

/// The last `n` lines of a text file (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a helper command to completion within `timeout`, returning trimmed stdout. A non-zero
/// exit becomes [`TestkitError::CommandFailed`] with the output; a hang becomes a timeout
/// (the command is killed).
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context(|| format!("spawning {shown}"))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let mut status = None;
    let waited = wait_until(&format!("`{shown}` to finish"), timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if let Err(e) = waited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(out.trim().to_string()),
        Some(s) => Err(TestkitError::CommandFailed {
            command: shown,
            status: s.to_string(),
            output: format!("{}\n{}", err.trim(), out.trim()).trim().to_string(),
        }),
        None => unreachable!("wait_until returned Ok only once status was set"),
    }
}

/// [`run`] as another user.
pub fn run_as(user: &RunAs, cmd: &mut Command, timeout: Duration) -> Result<String> {
    user.apply(cmd);
    run(cmd, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_returns_stdout_and_reports_failures() {
        assert_eq!(
            run(Command::new("echo").arg("hi"), Duration::from_secs(5)).unwrap(),
            "hi"
        );
        let err = run(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("oops") && msg.contains('3'), "{msg}");
    }

    #[test]
    fn run_kills_a_hanging_command() {
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, TestkitError::Timeout { .. }));
    }

    #[test]
    fn service_kill9_stops_the_group() {
        let sb = Sandbox::new("svc").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 600 & sleep 600"]);
        let mut svc = Service::spawn(&sb, "sleeper", cmd, &RunAs::current()).unwrap();
        assert!(svc.is_running());
        svc.kill9();
        assert!(!svc.is_running());
        assert!(svc.ensure_running().is_err());
    }
}
