//! The failures a harness caller can act on.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias for harness operations.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, probing or stopping a test dependency.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A Debian package the harness needs is not installed.
    #[error(
        "`{binary}` not found: install the Debian package `{package}` \
         (`sudo apt-get install -y {package}`, or `./task deps` for every test dependency)"
    )]
    MissingBinary {
        /// The executable that was looked for.
        binary: String,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// A Kubernetes tool built from the Go modules under `e2e/kube/` is missing.
    #[error(
        "`{0}` not found: build the Kubernetes tools with `./task kube-tools` (part of `./task deps`)"
    )]
    MissingKubeTool(String),
    /// A helper command ran but reported failure.
    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        /// The command line, for the reader.
        command: String,
        /// Exit status as printed by std.
        status: String,
        /// Captured stderr/stdout, trimmed.
        output: String,
    },
    /// A condition did not become true before its deadline.
    #[error("timed out after {waited:?} waiting for {what}{}", log_suffix(.log_tail))]
    Timeout {
        /// What was awaited, in words.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// Tail of the most relevant server log, when there is one.
        log_tail: Option<String>,
    },
    /// A server process exited while we expected it to run.
    #[error("{name} exited early ({status}); log {log:?}:\n{tail}")]
    ExitedEarly {
        /// Which server.
        name: String,
        /// Its exit status.
        status: String,
        /// Where its log is.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
    /// The harness needs a system user (for example `postgres`) that does not exist.
    #[error("system user `{0}` does not exist; install the `postgresql` package, which creates it")]
    MissingUser(String),
    /// Any other I/O failure, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn log_suffix(tail: &Option<String>) -> String {
    match tail {
        Some(t) if !t.trim().is_empty() => format!("; log tail:\n{t}"),
        _ => String::new(),
    }
}

/// Attaches a description of the current step to I/O errors.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| TestkitError::Io {
            context: what(),
            source,
        })
    }
}
