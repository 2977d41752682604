//! `wgctl` against real TLS servers whose certificates it cannot trust: each failure ends with
//! exit code 2 and a sentence that says what to do, instead of rustls's enum names. A server
//! with a good certificate is the control: the same client then reaches HTTP (and exits 3 on the
//! server's 401).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum_server::tls_rustls::RustlsConfig;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use wardengate::tls::{PemPair, server_config};

/// A CA: its PEM certificate and an issuer to sign leaves with.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `names` signed by `ca`; `expired` puts its validity in 2020.
fn leaf(ca: &Ca, names: &[&str], expired: bool) -> PemPair {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 6, 1);
    }
    let key = KeyPair::generate().unwrap();
    PemPair {
        cert: params.signed_by(&key, &ca.issuer).unwrap().pem(),
        key: key.serialize_pem(),
    }
}

/// Serves HTTPS on a random loopback port with `pair`; every request gets a JSON 401, so a
/// client that got through TLS exits 3.
fn serve(rt: &tokio::runtime::Runtime, pair: &PemPair) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = RustlsConfig::from_config(Arc::new(server_config(pair).unwrap()));
    let app = Router::new().fallback(|| async {
        (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            r#"{"code":"unauthorized","message":"test server says no"}"#,
        )
    });
    rt.spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)
            .unwrap()
            .serve(app.into_make_service())
            .await
    });
    addr
}

struct Run {
    code: i32,
    stderr: String,
    took: Duration,
}

/// Runs the real `wgctl` against `addr` (host part as given) with `args`. `SSL_CERT_FILE`
/// points the "system roots" at an unrelated CA, so the no-`--ca-cert` case does not depend on
/// this machine's CA bundle.
fn wgctl(dir: &Path, url: &str, ca_file: Option<&Path>, args: &[&str]) -> Run {
    let unrelated = dir.join("system-roots.pem");
    if !unrelated.exists() {
        std::fs::write(&unrelated, ca("Some Public Root").pem).unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgctl"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SSL_CERT_FILE", &unrelated)
        .env("WG_TOKEN", "test-token-test-token-test-token")
        .args(["--addr", url]);
    if let Some(f) = ca_file {
        cmd.arg("--ca-cert").arg(f);
    }
    let start = Instant::now();
    let out = cmd.args(args).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn assert_advice(run: &Run, wants: &[&str]) {
    assert_eq!(run.code, 2, "exit code; stderr: {}", run.stderr);
    for w in wants {
        assert!(run.stderr.contains(w), "missing `{w}` in: {}", run.stderr);
    }
    for raw in [
        "UnknownIssuer",
        "CaUsedAsEndEntity",
        "invalid peer certificate",
    ] {
        assert!(
            !run.stderr.contains(raw),
            "raw rustls `{raw}` in: {}",
            run.stderr
        );
    }
}

#[test]
fn tls_failures_become_advice() {
    wardengate::tls::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ours = ca("Wardengate Test CA");
    let other = ca("Another CA");
    let ours_file = write(d, "ours.pem", &ours.pem);
    let other_file = write(d, "other.pem", &other.pem);

    // Control: a good certificate, the right CA and a name it holds → TLS works, HTTP says 401.
    let good = serve(&rt, &leaf(&ours, &["localhost", "127.0.0.1"], false));
    let url = format!("https://127.0.0.1:{}", good.port());
    let ok = wgctl(d, &url, Some(&ours_file), &["targets", "list"]);
    assert_eq!(ok.code, 3, "control run: {}", ok.stderr);
    assert!(ok.stderr.contains("test server says no"), "{}", ok.stderr);

    // The CA that signed it is not given: say to pass it.
    let run = wgctl(d, &url, None, &["targets", "list"]);
    assert_advice(
        &run,
        &[
            "cannot trust",
            "not signed by a CA this machine trusts",
            "--ca-cert",
            "WG_CA_CERT",
        ],
    );
    // A different CA is given: say that one did not sign it.
    let run = wgctl(d, &url, Some(&other_file), &["targets", "list"]);
    assert_advice(
        &run,
        &["not signed by the CA given with --ca-cert / WG_CA_CERT"],
    );
    // Not retried as if the server were down: `connect` retries transport errors for 30 s.
    let run = wgctl(d, &url, None, &["connect", "db", "--retry-for", "20s"]);
    assert_advice(&run, &["--ca-cert"]);
    assert!(
        run.took < Duration::from_secs(10),
        "retried for {:?}",
        run.took
    );

    // A name mismatch names both sides and suggests an address that works.
    let named = serve(&rt, &leaf(&ours, &["gw.example.com", "gw.internal"], false));
    let url = format!("https://127.0.0.1:{}", named.port());
    let run = wgctl(d, &url, Some(&ours_file), &["targets", "list"]);
    assert_advice(
        &run,
        &[
            "gw.example.com, gw.internal",
            "`127.0.0.1`",
            &format!("https://gw.example.com:{}", named.port()),
        ],
    );

    // An expired certificate says so, with the date.
    let expired = serve(&rt, &leaf(&ours, &["127.0.0.1"], true));
    let url = format!("https://127.0.0.1:{}", expired.port());
    let run = wgctl(d, &url, Some(&ours_file), &["targets", "list"]);
    assert_advice(&run, &["expired at 2020-06-01", "renew"]);

    // The CA's own certificate served as the server certificate.
    let mut ca_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_as_server = PemPair {
        cert: ca_params.self_signed(&ca_key).unwrap().pem(),
        key: ca_key.serialize_pem(),
    };
    let ca_as_server_file = write(d, "ca-as-server.pem", &ca_as_server.cert);
    let served = serve(&rt, &ca_as_server);
    let url = format!("https://127.0.0.1:{}", served.port());
    let run = wgctl(d, &url, Some(&ca_as_server_file), &["targets", "list"]);
    assert_advice(
        &run,
        &["presents a CA certificate as its own", "--tls-cert"],
    );
}

/// A token on the command line is readable by every user through the process list: `wgctl`
/// says so and names the safe alternatives; from the environment or a file it stays quiet.
#[test]
fn a_token_on_the_command_line_draws_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9: the command fails after the warning.
    let noisy = wgctl(
        dir.path(),
        "https://127.0.0.1:9",
        None,
        &["--token", "secret-secret-secret-secret", "targets", "list"],
    );
    assert!(
        noisy.stderr.contains("process list") && noisy.stderr.contains("WG_TOKEN_FILE"),
        "{}",
        noisy.stderr
    );
    let quiet = wgctl(
        dir.path(),
        "https://127.0.0.1:9",
        None,
        &["targets", "list"],
    );
    assert!(!quiet.stderr.contains("process list"), "{}", quiet.stderr);
}
