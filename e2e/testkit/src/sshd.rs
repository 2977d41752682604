//! An OpenSSH server on loopback with a throwaway user and key, plus a ready-made `ssh` client
//! command (pinned host key, batch mode) for driving it — directly or through a ProxyCommand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::unistd::Uid;

use crate::deps::require;
use crate::error::{IoContext, Result};
use crate::net::free_port;
use crate::process::{Service, run};
use crate::sandbox::{Sandbox, set_mode};
use crate::user::RunAs;

/// Host alias written into `known_hosts`, for `ssh -o HostKeyAlias=…` through a proxy.
pub const HOST_ALIAS: &str = "wg-target";

/// A running sshd and the credentials to log in to it.
#[derive(Debug)]
pub struct Sshd {
    port: u16,
    user: String,
    dir: PathBuf,
    _service: Service,
    _sandbox: Arc<Sandbox>,
}

impl Sshd {
    /// Generates host and client keys, creates a throwaway user when running as root (else logs
    /// in as the current user), starts `sshd -D` on a random port and waits until it listens.
    pub fn start() -> Result<Self> {
        Self::start_with("")
    }

    /// [`Sshd::start`] with `extra` lines appended to `sshd_config` (e.g. `TrustedUserCAKeys
    /// FILE` for a target of the terminating SSH mode).
    pub fn start_with(extra: &str) -> Result<Self> {
        let sandbox = Arc::new(Sandbox::new("sshd")?);
        let dir = sandbox.subdir("ssh", &RunAs::current())?;
        let keygen = require("ssh-keygen")?;
        for key in ["hostkey", "id_test"] {
            run(
                Command::new(&keygen)
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "wg-testkit", "-f"])
                    .arg(dir.join(key)),
                Duration::from_secs(10),
            )?;
        }
        let user = if Uid::effective().is_root() {
            create_user(&sandbox)?
        } else {
            RunAs::current().name
        };
        // The user's sshd child reads authorized_keys with the user's privileges.
        let auth = dir.join("authorized_keys");
        std::fs::copy(dir.join("id_test.pub"), &auth)
            .context(|| "writing authorized_keys".into())?;
        set_mode(&auth, 0o644)?;
        let port = free_port()?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n\
                 StrictModes no\nAllowTcpForwarding yes\nMaxStartups 100:30:200\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\n{extra}\n",
                d = dir.display()
            ),
        )
        .context(|| "writing sshd_config".into())?;
        let hostkey = std::fs::read_to_string(dir.join("hostkey.pub"))
            .context(|| "reading host key".into())?;
        let key: String = hostkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {key}\n{HOST_ALIAS} {key}\n"),
        )
        .context(|| "writing known_hosts".into())?;
        if Uid::effective().is_root() {
            std::fs::create_dir_all("/run/sshd").context(|| "creating /run/sshd".into())?;
        }
        let sshd = require("sshd")?;
        run(
            Command::new(&sshd).arg("-t").arg("-f").arg(&config),
            Duration::from_secs(10),
        )?;
        let mut cmd = Command::new(sshd);
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        let svc = Service::spawn_listening(
            &sandbox,
            "sshd",
            cmd,
            &RunAs::current(),
            port,
            Duration::from_secs(10),
        )?;
        Ok(Self {
            port,
            user,
            dir,
            _service: svc,
            _sandbox: sandbox,
        })
    }

    /// Port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Private key that logs in as [`Sshd::user`].
    pub fn identity_file(&self) -> PathBuf {
        self.dir.join("id_test")
    }

    /// `known_hosts` pinning the host key for `[127.0.0.1]:port` and [`HOST_ALIAS`].
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Client options: this key only, the pinned host key, strict checking, never prompt.
    pub fn client_options(&self) -> Vec<String> {
        let mut o = vec!["-i".to_string(), self.identity_file().display().to_string()];
        for opt in [
            "IdentitiesOnly=yes".to_string(),
            format!("UserKnownHostsFile={}", self.known_hosts().display()),
            "StrictHostKeyChecking=yes".into(),
            "BatchMode=yes".into(),
            "ConnectTimeout=10".into(),
            "LogLevel=ERROR".into(),
        ] {
            o.push("-o".into());
            o.push(opt);
        }
        o
    }

    /// `ssh` straight to this server running `remote`.
    pub fn ssh(&self, remote: &str) -> Result<Command> {
        let mut c = Command::new(require("ssh")?);
        c.args(self.client_options())
            .args(["-p", &self.port.to_string()]);
        c.arg(format!("{}@127.0.0.1", self.user)).arg(remote);
        Ok(c)
    }

    /// `ssh` to this server through `proxy_command` (e.g. `wgctl connect target`), host key
    /// checked against [`HOST_ALIAS`].
    pub fn ssh_via(&self, proxy_command: &str, remote: &str) -> Result<Command> {
        let mut c = Command::new(require("ssh")?);
        c.args(self.client_options())
            .args(["-o", &format!("HostKeyAlias={HOST_ALIAS}")])
            .args(["-o", &format!("ProxyCommand={proxy_command}")]);
        c.arg(format!("{}@{HOST_ALIAS}", self.user)).arg(remote);
        Ok(c)
    }

    /// `ssh` to this server through a TCP forwarder listening on `port` (a load balancer, a
    /// `wgctl tunnel`), host key checked against [`HOST_ALIAS`].
    pub fn ssh_through_port(&self, port: u16, remote: &str) -> Result<Command> {
        let mut c = Command::new(require("ssh")?);
        c.args(self.client_options())
            .args(["-o", &format!("HostKeyAlias={HOST_ALIAS}")])
            .args(["-p", &port.to_string()]);
        c.arg(format!("{}@127.0.0.1", self.user)).arg(remote);
        Ok(c)
    }

    /// `scp` of `local` to `remote_path` on this server through `proxy_command`.
    pub fn scp_via(&self, proxy_command: &str, local: &Path, remote_path: &str) -> Result<Command> {
        let mut c = Command::new(require("scp")?);
        c.arg("-q")
            .args(self.client_options())
            .args(["-o", &format!("HostKeyAlias={HOST_ALIAS}")])
            .args(["-o", &format!("ProxyCommand={proxy_command}")])
            .arg(local)
            .arg(format!("{}@{HOST_ALIAS}:{remote_path}", self.user));
        Ok(c)
    }

    /// `scp` of `local` straight to this server (the baseline for relay throughput).
    pub fn scp_direct(&self, local: &Path, remote_path: &str) -> Result<Command> {
        let mut c = Command::new(require("scp")?);
        c.arg("-q")
            .args(self.client_options())
            .args(["-P", &self.port.to_string()])
            .arg(local);
        c.arg(format!("{}@127.0.0.1:{remote_path}", self.user));
        Ok(c)
    }

    /// The user's home directory on the server (where `scp` relative paths land).
    pub fn home(&self) -> PathBuf {
        nix::unistd::User::from_name(&self.user)
            .ok()
            .flatten()
            .map(|u| u.dir)
            .unwrap_or_else(|| Path::new("/").to_path_buf())
    }
}

/// Creates `wgt<pid>x<n>` with a home in the sandbox and a usable (not locked) password field.
fn create_user(sandbox: &Sandbox) -> Result<String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "wgt{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let home = sandbox.path().join("home").join(&name);
    std::fs::create_dir_all(sandbox.path().join("home")).context(|| "creating homes dir".into())?;
    sandbox.record_user(&name)?;
    // `-p '*'`: no password, but not locked; `!` would make sshd refuse the account with UsePAM no.
    run(
        Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", "-p", "*", "-d"])
            .arg(&home)
            .arg(&name),
        Duration::from_secs(20),
    )?;
    Ok(name)
}
