//! Which OS user a server runs as. Postgres refuses to run as root, so when the tests run as
//! root (CI) its servers run as Debian's `postgres` user; otherwise everything runs as us.

use std::path::Path;
use std::process::Command;

use nix::unistd::{Gid, Uid, User};

use crate::error::{Result, TestkitError};

/// A uid/gid pair to spawn a server with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User name, for messages and `psql -U`-style uses.
    pub name: String,
    /// Numeric uid.
    pub uid: u32,
    /// Numeric primary gid.
    pub gid: u32,
}

impl RunAs {
    /// The user this test process runs as.
    pub fn current() -> Self {
        let uid = Uid::current();
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        Self {
            name,
            uid: uid.as_raw(),
            gid: Gid::current().as_raw(),
        }
    }

    /// The user for Postgres-family servers: `postgres` when we are root, else ourselves.
    pub fn postgres() -> Result<Self> {
        if !Uid::effective().is_root() {
            return Ok(Self::current());
        }
        let u = User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or_else(|| TestkitError::MissingUser("postgres".into()))?;
        Ok(Self {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })
    }

    /// True when spawning as this user needs a uid switch.
    pub fn is_other(&self) -> bool {
        self.uid != Uid::current().as_raw()
    }

    /// Gives `path` to this user (no-op when it is us).
    pub fn chown(&self, path: &Path) -> Result<()> {
        if !self.is_other() {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|source| {
            TestkitError::Io {
                context: format!("chown {} to {}", path.display(), self.name),
                source,
            }
        })
    }

    /// Makes `cmd` run as this user.
    pub fn apply(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        if self.is_other() {
            cmd.uid(self.uid).gid(self.gid);
        }
    }
}

/// Deletes a throwaway system user; errors are ignored (it may already be gone).
pub(crate) fn delete_user(name: &str) {
    let _ = Command::new("userdel").arg("-f").arg(name).output();
}
