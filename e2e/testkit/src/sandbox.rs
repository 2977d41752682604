//! A temp directory that owns every process started in it.
//!
//! Each fixture lives in a [`Sandbox`]. Every process the harness spawns is marked with the
//! sandbox path (environment variable, working directory) so it can be found again by scanning
//! `/proc`, even the grandchildren that daemonise themselves (Patroni's postmaster calls
//! `setsid`). Dropping the sandbox — also while a test panics — kills them by PID and removes the
//! directory. A test process that is killed outright cannot run `Drop`; the next harness start
//! reaps its leftovers ([`reap_orphans`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{IoContext, Result};
use crate::user::RunAs;

/// Environment variable carrying the sandbox path into every spawned process.
pub const SANDBOX_ENV: &str = "WG_TESTKIT_SANDBOX";
const PREFIX: &str = "wg-testkit-";
const OWNER_FILE: &str = "owner";
const USERS_FILE: &str = "users";

/// A temp dir plus the guarantee that nothing started in it outlives it.
#[derive(Debug)]
pub struct Sandbox {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Sandbox {
    /// Creates `$TMPDIR/wg-testkit-<label>-XXXX`, after reaping leftovers of dead test runs.
    pub fn new(label: &str) -> Result<Self> {
        static REAP: Once = Once::new();
        REAP.call_once(reap_orphans);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{label}-"))
            .tempdir()
            .context(|| "creating sandbox temp dir".into())?;
        let path = dir.path().to_path_buf();
        // World-traversable so servers running as another user (postgres) reach their subdirs.
        set_mode(&path, 0o755)?;
        fs::write(
            path.join(OWNER_FILE),
            owner_identity(std::process::id()).unwrap_or_default(),
        )
        .context(|| "writing sandbox owner file".into())?;
        Ok(Self {
            dir: Some(dir),
            path,
        })
    }

    /// The sandbox directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (if needed) and returns a subdirectory owned by `user`.
    pub fn subdir(&self, name: &str, user: &RunAs) -> Result<PathBuf> {
        let p = self.path.join(name);
        fs::create_dir_all(&p).context(|| format!("creating {}", p.display()))?;
        user.chown(&p)?;
        Ok(p)
    }

    /// Records a system user created for this sandbox, so a reaper can delete it if we crash.
    pub(crate) fn record_user(&self, name: &str) -> Result<()> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join(USERS_FILE))
            .context(|| "recording sandbox user".into())?;
        writeln!(f, "{name}").context(|| "recording sandbox user".into())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        kill_processes_in(&self.path);
        delete_recorded_users(&self.path);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .context(|| format!("chmod {mode:o} {}", path.display()))
}

/// `pid` plus its kernel start time: a pid alone can be reused after the owner dies.
fn owner_identity(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let start_time = after_comm.split_whitespace().nth(19)?;
    Some(format!("{pid} {start_time}"))
}

fn owner_alive(recorded: &str) -> bool {
    let Some(pid) = recorded
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    owner_identity(pid).as_deref() == Some(recorded.trim())
}

/// PIDs of processes that belong to the sandbox at `dir`: marked by environment, working
/// directory or command line.
fn processes_in(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let marker = format!("{SANDBOX_ENV}={}", dir.display());
    let dir_str = dir.display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let base = PathBuf::from(format!("/proc/{pid}"));
            let env_hit = fs::read(base.join("environ"))
                .map(|b| b.split(|&c| c == 0).any(|kv| kv == marker.as_bytes()))
                .unwrap_or(false);
            let cwd_hit = fs::read_link(base.join("cwd"))
                .map(|c| c.starts_with(dir))
                .unwrap_or(false);
            let cmd_hit = fs::read(base.join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).contains(&dir_str))
                .unwrap_or(false);
            env_hit || cwd_hit || cmd_hit
        })
        .collect()
}

/// SIGKILLs every process of the sandbox at `dir`, repeating until none is left (a dying
/// supervisor can spawn one last child). Bounded: gives up after ~5 s.
pub(crate) fn kill_processes_in(dir: &Path) {
    for _ in 0..200 {
        let pids = processes_in(dir);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn delete_recorded_users(dir: &Path) {
    if let Ok(users) = fs::read_to_string(dir.join(USERS_FILE)) {
        for u in users.lines().filter(|u| !u.trim().is_empty()) {
            crate::user::delete_user(u.trim());
        }
    }
}

/// Cleans up after test processes that died without running `Drop` (SIGKILL, OOM, a hung run
/// killed by CI): any sandbox whose owner process is gone has its processes killed, its users
/// deleted and its directory removed. Runs once per process, before the first sandbox.
pub fn reap_orphans() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        if owner_alive(&owner) {
            continue;
        }
        kill_processes_in(&dir);
        delete_recorded_users(&dir);
        let _ = fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Between fork and exec a child still shows the parent's environment; wait until it runs
    /// the new program and carries the marker.
    fn wait_until_marked(dir: &Path, pid: u32) {
        crate::wait::wait_until("child to exec", Duration::from_secs(5), || {
            processes_in(dir).contains(&(pid as i32))
        })
        .unwrap();
    }

    #[test]
    fn drop_kills_marked_processes_and_removes_dir() {
        let sb = Sandbox::new("unit").unwrap();
        let path = sb.path().to_path_buf();
        let mut child = Command::new("sleep")
            .arg("600")
            .env(SANDBOX_ENV, &path)
            .spawn()
            .unwrap();
        wait_until_marked(&path, child.id());
        assert_eq!(processes_in(&path), vec![child.id() as i32]);
        drop(sb);
        // The child is dead (only reaping is left to us) and the directory is gone.
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!path.exists());
    }

    #[test]
    fn reaper_removes_sandboxes_of_dead_owners_only() {
        let live = Sandbox::new("live").unwrap();
        let dead = tempfile::Builder::new()
            .prefix("wg-testkit-dead-")
            .tempdir()
            .unwrap()
            .keep();
        fs::write(dead.join(OWNER_FILE), "999999999 1").unwrap();
        let mut orphan = Command::new("sleep")
            .arg("600")
            .env(SANDBOX_ENV, &dead)
            .spawn()
            .unwrap();
        wait_until_marked(&dead, orphan.id());
        reap_orphans();
        assert!(!dead.exists());
        assert!(!orphan.wait().unwrap().success());
        assert!(live.path().exists());
    }
}
