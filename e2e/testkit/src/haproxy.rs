//! HAProxy on loopback: the L4 load balancer of the HA guide (TCP mode, no affinity, generous
//! timeouts for long-lived streams), and the Patroni read-write router (`httpchk GET /primary`).

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::deps::require;
use crate::error::{IoContext, Result};
use crate::net::free_port;
use crate::process::{Service, run};
use crate::sandbox::Sandbox;
use crate::user::RunAs;

/// Check timing of the HA guide's load balancer, scaled to tests: every 1 s, 3 failures to mark
/// down, 2 successes to mark up.
pub const LB_TIMING: &str = "inter 1s fall 3 rise 2";

/// Check timing for routing to the Patroni primary: quick to follow a failover.
pub const PATRONI_TIMING: &str = "inter 500ms fall 2 rise 1";

/// One server behind the proxy.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Server name in the config and stats.
    pub name: String,
    /// Port the traffic goes to on 127.0.0.1.
    pub port: u16,
    /// Port the health check goes to, when it differs (Patroni's REST API).
    pub check_port: Option<u16>,
}

impl Backend {
    /// A backend checked on its own port.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            port,
            check_port: None,
        }
    }
}

/// How HAProxy decides a backend is healthy.
#[derive(Debug, Clone)]
pub enum HealthCheck {
    /// TCP connect check every `interval`.
    Tcp,
    /// `GET path` on the backend's check port must return 200.
    Http {
        /// Request path, e.g. `/primary` or `/healthz`.
        path: String,
        /// Use TLS for the check (the gateway's HTTPS 8443), without verifying the certificate.
        tls: bool,
    },
}

/// How the load balancer treats connections beyond the HA guide's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbOptions {
    /// Send a PROXY protocol v2 header to every backend, health checks included (as a cloud
    /// load balancer that does not preserve client addresses).
    pub send_proxy_v2: bool,
    /// Cut connections idle for this long (as AWS ALB after 60 s), instead of 30 minutes.
    pub idle_timeout: Option<Duration>,
    /// Terminate TLS on the frontend with this PEM file (certificate and key in one file).
    pub tls_bind_pem: Option<std::path::PathBuf>,
    /// Speak TLS to the backends (without verifying them), as a relay between two sites does.
    pub tls_to_backends: bool,
}

/// A running HAProxy with one `listen` section.
#[derive(Debug)]
pub struct HaProxy {
    port: u16,
    _service: Service,
    _sandbox: Arc<Sandbox>,
}

impl HaProxy {
    /// The HA guide's load balancer in front of `backends`: `mode tcp`, round robin, no
    /// stickiness, health check every 1 s (fall 3, rise 2), 30-minute client/server timeouts.
    pub fn tcp(backends: &[Backend], check: HealthCheck) -> Result<Self> {
        Self::start(
            Arc::new(Sandbox::new("haproxy")?),
            backends,
            &check,
            LB_TIMING,
        )
    }

    /// Starts HAProxy in an existing sandbox; `timing` is the `default-server` check timing,
    /// e.g. [`LB_TIMING`].
    pub fn start(
        sandbox: Arc<Sandbox>,
        backends: &[Backend],
        check: &HealthCheck,
        timing: &str,
    ) -> Result<Self> {
        Self::start_with(sandbox, backends, check, timing, &LbOptions::default())
    }

    /// [`HaProxy::start`] with [`LbOptions`].
    pub fn start_with(
        sandbox: Arc<Sandbox>,
        backends: &[Backend],
        check: &HealthCheck,
        timing: &str,
        opts: &LbOptions,
    ) -> Result<Self> {
        let bin = require("haproxy")?;
        let port = free_port()?;
        let config = sandbox.path().join(format!("haproxy-{port}.cfg"));
        std::fs::write(&config, render_config(port, backends, check, timing, opts))
            .context(|| "writing haproxy config".into())?;
        run(
            Command::new(&bin).args(["-c", "-q", "-f"]).arg(&config),
            Duration::from_secs(10),
        )?;
        let mut cmd = Command::new(bin);
        cmd.arg("-f").arg(&config);
        let svc = Service::spawn_listening(
            &sandbox,
            &format!("haproxy-{port}"),
            cmd,
            &RunAs::current(),
            port,
            Duration::from_secs(10),
        )?;
        Ok(Self {
            port,
            _service: svc,
            _sandbox: sandbox,
        })
    }

    /// The frontend port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HAProxy process (to read its CPU time).
    pub fn pid(&self) -> u32 {
        self._service.pid()
    }
}

fn render_config(
    port: u16,
    backends: &[Backend],
    check: &HealthCheck,
    timing: &str,
    opts: &LbOptions,
) -> String {
    let idle = opts
        .idle_timeout
        .map(|d| format!("{}ms", d.as_millis()))
        .unwrap_or_else(|| "30m".into());
    // TLS 1.3 with AES-128-GCM, the suite the gateway prefers, so TLS chains compare like with
    // like.
    let tls13 = "    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256\n    \
                 ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256\n    \
                 ssl-default-bind-options ssl-min-ver TLSv1.3\n    \
                 ssl-default-server-options ssl-min-ver TLSv1.3\n";
    let tls_global = if opts.tls_bind_pem.is_some() || opts.tls_to_backends {
        tls13
    } else {
        ""
    };
    let mut c = format!(
        "global\n    maxconn 2000\n{tls_global}\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
         timeout client {idle}\n    timeout server {idle}\n    timeout check 2s\n\n",
    );
    // redispatch: a connect to a backend that just died is retried on another one, as a cloud
    // L4 balancer does before its health check has noticed.
    let _ = writeln!(
        c,
        "listen wg\n    bind 127.0.0.1:{port}{}\n    balance roundrobin\n    option redispatch\n    retries 2",
        opts.tls_bind_pem
            .as_ref()
            .map(|p| format!(" ssl crt {}", p.display()))
            .unwrap_or_default()
    );
    match check {
        HealthCheck::Tcp => {}
        HealthCheck::Http { path, .. } => {
            let _ = writeln!(
                c,
                "    option httpchk GET {path}\n    http-check expect status 200"
            );
        }
    }
    let _ = writeln!(
        c,
        "    default-server {timing} on-marked-down shutdown-sessions"
    );
    for b in backends {
        let _ = write!(c, "    server {} 127.0.0.1:{} check", b.name, b.port);
        if let Some(cp) = b.check_port {
            let _ = write!(c, " port {cp}");
        }
        if let HealthCheck::Http { tls: true, .. } = check {
            c.push_str(" check-ssl verify none");
        }
        if opts.send_proxy_v2 {
            c.push_str(" send-proxy-v2 check-send-proxy");
        }
        if opts.tls_to_backends {
            c.push_str(" ssl verify none");
        }
        c.push('\n');
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_l4_without_affinity() {
        let c = render_config(
            9000,
            &[
                Backend::new("a", 1),
                Backend {
                    name: "b".into(),
                    port: 2,
                    check_port: Some(3),
                },
            ],
            &HealthCheck::Http {
                path: "/healthz".into(),
                tls: true,
            },
            LB_TIMING,
            &LbOptions::default(),
        );
        assert!(c.contains("mode tcp"));
        assert!(c.contains("balance roundrobin"));
        assert!(c.contains("option redispatch"));
        assert!(!c.contains("stick"));
        assert!(c.contains("timeout client 30m"));
        assert!(c.contains("server b 127.0.0.1:2 check port 3 check-ssl verify none"));
    }
}
