//! `just bench`: Wardengate's speed and memory, each as a ratio against a baseline measured in
//! the same run on the same machine. Never a pass/fail on timing.
//!
//! - Relay throughput and round-trip latency to an echo target: direct TCP, through HAProxy (the
//!   L4 proxy of the HA guide), and through the gateway (`wgctl tunnel` → `wardengate` → target).
//! - Session setup: connect + first byte back, each connection a new session (authorise, claim,
//!   dial) through the gateway, against a direct TCP connect.
//! - Memory per idle session: the replica's RSS before and after holding idle sessions open.
//! - Operator: render cost per cluster, and a steady-state reconcile against the API fake
//!   (time and requests per reconcile).
//!
//! Run it with release binaries: `just bench` builds them and sets `WG_BIN_DIR`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wardengate_e2e::Fleet;
use wardengate_e2e::echo_server;
use wardengate_testkit::haproxy::{Backend, HaProxy, HealthCheck};
use wardengate_testkit::process::run;
use wardengate_testkit::{Postgres, RedisServer};

const BULK: usize = 64 * 1024 * 1024;
const PINGS: usize = 500;
const SETUPS: usize = 30;
const IDLE: usize = 100;

async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// MiB/s of `BULK` bytes sent and echoed back.
async fn throughput(addr: SocketAddr) -> f64 {
    let s = connect(addr).await;
    let (mut r, mut w) = s.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let buf = vec![0x5au8; 64 * 1024];
        let mut sent = 0;
        while sent < BULK {
            w.write_all(&buf).await.unwrap();
            sent += buf.len();
        }
        w
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < BULK {
        let n = r.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed after {got} bytes");
        got += n;
    }
    let _w = writer.await.unwrap();
    (BULK as f64 / (1024.0 * 1024.0)) / start.elapsed().as_secs_f64()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// p50 and p99 of a 64-byte round trip.
async fn latency(addr: SocketAddr) -> (Duration, Duration) {
    let mut s = connect(addr).await;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut times = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
        times.push(t.elapsed());
    }
    (percentile(&mut times, 0.5), percentile(&mut times, 0.99))
}

/// p50 of connect + first byte back.
async fn setup(addr: SocketAddr) -> Duration {
    let mut times = Vec::with_capacity(SETUPS);
    for _ in 0..SETUPS {
        let t = Instant::now();
        let mut s = connect(addr).await;
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        times.push(t.elapsed());
    }
    percentile(&mut times, 0.5)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn operator_costs() -> (Duration, Duration, usize) {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/three-zone-ha.yaml"
    ))
    .unwrap();
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(wardengate_operator::render::render(&yaml).unwrap());
    }
    let render = t.elapsed() / n;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (reconcile, reqs) = rt.block_on(async {
        let fake = wardengate_kube_fake::FakeApi::new();
        let mut cr: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        cr["metadata"]["namespace"] = "bench".into();
        for (name, key) in [("wardengate-pg", "password"), ("wardengate-redis", "password"), ("wardengate-recordings", "key")] {
            fake.create("v1/secrets", serde_json::json!({"metadata": {"name": name, "namespace": "bench"}, "data": {key: "eA=="}}));
        }
        fake.create("wardengate.io/v1alpha1/wardengateclusters", cr);
        let ctx = Arc::new(wardengate_operator::controller::Context::new(
            fake.client("bench"),
            "bench",
            wardengate_operator::metrics::Metrics::new(),
        ));
        let api: kube::Api<wardengate_crds::WardengateCluster> = kube::Api::namespaced(fake.client("read"), "bench");
        let get = || async { Arc::new(api.get("wardengate").await.unwrap()) };
        // Converge once, then measure steady reconciles.
        wardengate_operator::controller::reconcile(get().await, ctx.clone()).await.unwrap();
        for name in fake.names("apps/v1/deployments", Some("bench")) {
            let d = fake.get("apps/v1/deployments", Some("bench"), &name).unwrap();
            let r = d["spec"]["replicas"].clone();
            fake.patch_status("apps/v1/deployments", Some("bench"), &name, serde_json::json!({
                "observedGeneration": d["metadata"]["generation"], "replicas": r, "updatedReplicas": r,
                "readyReplicas": r, "availableReplicas": r}));
        }
        wardengate_operator::controller::reconcile(get().await, ctx.clone()).await.unwrap();
        let c = get().await;
        let m = 200u32;
        let mark = fake.mark();
        let t = Instant::now();
        for _ in 0..m {
            wardengate_operator::controller::reconcile(c.clone(), ctx.clone()).await.unwrap();
        }
        let per = t.elapsed() / m;
        let reqs = fake.requests_since(mark).iter().filter(|r| r.client == "bench").count() / m as usize;
        (per, reqs)
    });
    (render, reconcile, reqs)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    wardengate::tls::install_crypto_provider();
    let (render, reconcile, reqs) = operator_costs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pg = Postgres::start().unwrap();
        let redis = RedisServer::start().unwrap();
        let echo = echo_server().await;
        let fleet = Fleet::start(1, &pg.url(), &redis.url(), &[]).await.unwrap();
        let out = run(
            &mut fleet.wgctl(&["targets", "add", "echo", "--host", "127.0.0.1", "--port", &echo.to_string()]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(out.contains("added"), "{out}");
        let haproxy = HaProxy::tcp(&[Backend::new("echo", echo)], HealthCheck::Tcp).unwrap();
        let mut tunnel = fleet
            .wgctl(&["-o", "json", "tunnel", "echo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(tunnel.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let listen: serde_json::Value = serde_json::from_str(&line).unwrap();
        let gw: SocketAddr = listen["listen"].as_str().unwrap().parse().unwrap();
        let direct: SocketAddr = format!("127.0.0.1:{echo}").parse().unwrap();
        let lb: SocketAddr = format!("127.0.0.1:{}", haproxy.port()).parse().unwrap();

        let paths = [("direct", direct), ("haproxy", lb), ("gateway", gw)];
        let mut tput = Vec::new();
        let mut lat = Vec::new();
        let mut set = Vec::new();
        for (_, addr) in paths {
            tput.push(throughput(addr).await);
            lat.push(latency(addr).await);
            set.push(setup(addr).await);
        }

        let pid = fleet.pid(0).unwrap();
        let before = rss_kib(pid);
        let mut idle = Vec::new();
        for _ in 0..IDLE {
            let mut s = connect(gw).await;
            s.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            idle.push(s);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(pid);
        drop(idle);
        let _ = tunnel.kill();
        let _ = tunnel.wait();

        let profile = if cfg!(debug_assertions) { "DEBUG build: use `just bench`" } else { "release build" };
        println!("\nWardengate benchmark ({profile}, loopback, this machine; ratios against baselines measured in this run)\n");
        println!("{:<10} {:>14} {:>12} {:>12} {:>14}", "path", "throughput", "rtt p50", "rtt p99", "setup p50");
        for (i, (name, _)) in paths.iter().enumerate() {
            println!(
                "{:<10} {:>9.1} MiB/s {:>12} {:>12} {:>14}",
                name,
                tput[i],
                ms(lat[i].0),
                ms(lat[i].1),
                ms(set[i])
            );
        }
        println!(
            "\ngateway vs direct : throughput {:.2}×, rtt p50 {:.2}×, setup {:.1}×",
            tput[2] / tput[0],
            lat[2].0.as_secs_f64() / lat[0].0.as_secs_f64(),
            set[2].as_secs_f64() / set[0].as_secs_f64()
        );
        println!(
            "gateway vs haproxy: throughput {:.2}×, rtt p50 {:.2}×, setup {:.1}×",
            tput[2] / tput[1],
            lat[2].0.as_secs_f64() / lat[1].0.as_secs_f64(),
            set[2].as_secs_f64() / set[1].as_secs_f64()
        );
        println!(
            "memory per idle session: {:.1} KiB (replica RSS {} → {} KiB with {IDLE} idle sessions)",
            (after.saturating_sub(before)) as f64 / IDLE as f64,
            before,
            after
        );
        println!(
            "operator: render of the three-zone cluster {} ; steady reconcile {} with {} API requests, 0 writes",
            ms(render),
            ms(reconcile),
            reqs
        );
        println!("(the gateway path includes wgctl's local tunnel and TLS both ways; a new session per connection)");
    });
}
