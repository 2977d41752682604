//! `just bench`: Wardengate's speed and memory, each against a baseline of the same shape
//! measured in the same run on the same machine. Never a pass/fail on timing.
//!
//! - **Relay throughput and round trips** to an echo target, best of `ROUNDS` alternating runs
//!   (single runs vary ±15 % on a shared machine). Each gateway path is compared with a chain
//!   of HAProxies with as many relaying processes: `wgctl tunnel` →(TLS)→ `wardengate` → echo
//!   against HAProxy →(TLS 1.3, AES-128-GCM)→ HAProxy → echo (the same shape doing the same
//!   encryption) and against the plain-TCP pair; through the fleet's load balancer against the
//!   plain chain plus one HAProxy. Direct and single-hop figures are for information. The
//!   relaying processes' CPU time per MiB echoed is printed per path: unlike the rates, it
//!   holds on a busy machine.
//! - **`scp` of 1 GiB** through `wgctl connect` as ProxyCommand against direct `scp`, same sshd.
//! - **Session setup** (authorise + relay open + first byte back) through one replica with
//!   Postgres and Redis, p50/p99, and the sustained new-session rate of that replica.
//! - **Memory per idle relayed session** on the replica: cold (never carried data) and warm
//!   (after 1 MiB each way), as RSS and `smaps_rollup` deltas; then 10,000 concurrent idle
//!   sessions held by the one replica.
//! - **Operator**: render cost per cluster, and a steady-state reconcile against the API fake.
//!
//! `WG_BENCH_ONLY=throughput,scp,setup,memory,operator` picks sections; `WG_BENCH_PERF=1` runs
//! `perf stat` on `wardengate` and `wgctl` during the gateway throughput runs (CPU and
//! instructions per MiB). Run it with release binaries: `just bench` builds them and sets
//! `WG_BIN_DIR`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wardengate::client::{Client, with_retries};
use wardengate_e2e::{Fleet, echo_server, proxy_command};
use wardengate_testkit::haproxy::{Backend, HaProxy, HealthCheck, LbOptions};
use wardengate_testkit::process::run;
use wardengate_testkit::{Postgres, RedisServer, Sandbox, Sshd};

const BULK: usize = 64 * 1024 * 1024;
const ROUNDS: usize = 5;
const PINGS: usize = 500;
const SETUPS: usize = 300;
const RATE_WORKERS: usize = 16;
const RATE_FOR: Duration = Duration::from_secs(5);
const MEM_SESSIONS: usize = 500;
const WARM_BYTES: usize = 1024 * 1024;
const MANY: usize = 10_000;
/// Sessions whose Postgres statements and Redis commands are counted.
const RT_SESSIONS: usize = 50;
const SCP_BYTES: u64 = 1 << 30;
const SCP_ROUNDS: usize = 3;

fn wanted(section: &str) -> bool {
    match std::env::var("WG_BENCH_ONLY") {
        Ok(only) => only.split(',').any(|s| s.trim() == section),
        Err(_) => true,
    }
}

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

/// p50 of TCP connect + first byte back (the baseline for session setup).
async fn tcp_setup(addr: SocketAddr) -> Duration {
    let mut times = Vec::with_capacity(100);
    for _ in 0..100 {
        let t = Instant::now();
        let mut s = connect(addr).await;
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        times.push(t.elapsed());
    }
    percentile(&mut times, 0.5)
}

type Relay = wardengate::client::RelayStream;

/// Authorises a session to `echo` and opens its relay.
async fn open_session(c: &Client) -> Relay {
    // Like `wgctl`: a busy replica's 503 is retried (authorising and opening alike).
    let body = serde_json::json!({"target": "echo"});
    let created: serde_json::Value = with_retries(
        Duration::from_secs(60),
        |_| {},
        || c.call(Method::POST, "/v1/sessions", Some(&body)),
    )
    .await
    .unwrap();
    let id = created["id"].as_str().unwrap();
    with_retries(Duration::from_secs(60), |_| {}, || c.open_relay(id))
        .await
        .unwrap()
}

/// Sends `n` bytes through an open relay (in 16 KiB frames) and reads them back.
async fn echo_through(mut ws: Relay, n: usize) -> Relay {
    let (mut tx, mut rx) = (&mut ws).split();
    let send = async {
        let chunk = Bytes::from(vec![0x42u8; 16 * 1024]);
        let mut sent = 0;
        while sent < n {
            let k = chunk.len().min(n - sent);
            tx.send(Message::Binary(chunk.slice(..k))).await.unwrap();
            sent += k;
        }
    };
    let recv = async {
        let mut got = 0;
        while got < n {
            match rx.next().await {
                Some(Ok(Message::Binary(b))) => got += b.len(),
                Some(Ok(_)) => {}
                other => panic!("relay ended after {got} bytes: {other:?}"),
            }
        }
    };
    tokio::join!(send, recv);
    drop((tx, rx));
    ws
}

/// p50 of a fresh TLS connection to the replica (resumed after the first) and one HTTP exchange
/// that touches no database (`GET /healthz` as a WebSocket upgrade, refused with 200): the floor
/// under a one-request session setup, whatever the session core does.
async fn transport_floor(addr: &str, ca_pem: &str) -> Duration {
    let tls = wardengate::tls::client_config(ca_pem).unwrap();
    let url = format!("{}/healthz", addr.replacen("https://", "wss://", 1));
    let mut times = Vec::with_capacity(SETUPS);
    for i in 0..SETUPS + 10 {
        let t = Instant::now();
        let r = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            None,
            true,
            Some(tokio_tungstenite::Connector::Rustls(tls.clone())),
        )
        .await;
        let took = t.elapsed();
        match r {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert!(resp.status().is_success(), "{resp:?}")
            }
            other => panic!("GET /healthz as an upgrade: {other:?}"),
        }
        if i >= 10 {
            times.push(took);
        }
    }
    percentile(&mut times, 0.5)
}

/// How a session is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    /// `GET /v1/targets/echo/relay`: authorise and open in one request (what `wgctl` does
    /// first, for targets without approval).
    OneRequest,
    /// `POST /v1/sessions`, then the relay of that session (the path of approved sessions).
    TwoRequests,
}

/// One session, as a user's first connection sees it: authorise, open, first byte back.
async fn one_setup(c: &Client, how: Setup) -> (Duration, Relay) {
    let (total, _, ws) = timed_setup(c, how).await;
    (total, ws)
}

/// [`one_setup`], also returning the time until the relay was open (the upgrade answered).
async fn timed_setup(c: &Client, how: Setup) -> (Duration, Duration, Relay) {
    let t = Instant::now();
    let ws = match how {
        Setup::OneRequest => {
            with_retries(
                Duration::from_secs(60),
                |_| {},
                || c.open_target_relay("echo"),
            )
            .await
            .unwrap()
            .0
        }
        Setup::TwoRequests => open_session(c).await,
    };
    let open = t.elapsed();
    let ws = echo_through(ws, 1).await;
    (t.elapsed(), open, ws)
}

async fn close(mut ws: Relay) {
    let _ = ws.close(None).await;
}

/// Resident memory of a process, from `/proc`: (VmRSS, smaps_rollup Anonymous), KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (field(&status, "VmRSS:"), field(&rollup, "Anonymous:"))
}

/// CPU time a process has used so far (user + system), from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // `/proc` counts in USER_HZ, fixed at 100 by Linux's ABI.
    Duration::from_millis(ticks * 10)
}

/// Waits until the replica reports `n` active relays.
async fn wait_active(fleet: &Fleet, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if fleet.metric(0, "wg_sessions_active").await == Some(n as f64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica never reported {n} active relays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Postgres statements (each `execute` or simple statement the server logs with
/// `log_statement = all`: one round trip each) and Redis commands (`INFO commandstats`), by
/// statement or command, per session, while `sessions` runs `RT_SESSIONS` sessions. Waits until
/// every session's `session.ended` event is written (the end's background writes included).
async fn count_round_trips(
    pg: &Postgres,
    redis: &RedisServer,
    pg_log: &Path,
    sessions: impl Future<Output = ()>,
) -> (Vec<(String, f64)>, Vec<(String, f64)>) {
    const ENDED: &str = "select count(*) from events where kind = 'session.ended'";
    let ended = || pg.sql(ENDED).unwrap().parse::<usize>().unwrap();
    pg.sql("ALTER SYSTEM SET log_statement = 'all'").unwrap();
    pg.sql("SELECT pg_reload_conf()").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.sql("SHOW log_statement").unwrap() != "all" {
        assert!(
            Instant::now() < deadline,
            "log_statement never became `all`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended_before = ended();
    let from = std::fs::metadata(pg_log).unwrap().len();
    let redis_before = redis_calls(redis);
    sessions.await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ended() < ended_before + RT_SESSIONS {
        assert!(
            Instant::now() < deadline,
            "sessions' end events never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let redis_after = redis_calls(redis);
    pg.sql("ALTER SYSTEM RESET log_statement").unwrap();
    pg.sql("SELECT pg_reload_conf()").unwrap();
    let log = std::fs::read(pg_log).unwrap();
    let log = String::from_utf8_lossy(&log[from as usize..]);
    let mut pg_counts = std::collections::BTreeMap::<String, usize>::new();
    for line in log.lines() {
        let Some(at) = line.find("LOG:  ") else {
            continue;
        };
        let rest = &line[at + 6..];
        let stmt = if let Some(s) = rest.strip_prefix("statement: ") {
            s
        } else if rest.starts_with("execute ") {
            rest.split_once(": ").map_or(rest, |(_, s)| s)
        } else {
            continue;
        };
        // The counting itself is not the replica's.
        if stmt.contains("kind = 'session.ended'")
            || stmt.contains("log_statement")
            || stmt.contains("pg_reload_conf")
        {
            continue;
        }
        let key: String = stmt
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>()
            .join(" ");
        *pg_counts.entry(key).or_default() += 1;
    }
    let per = |n: usize| n as f64 / RT_SESSIONS as f64;
    let mut pg_counts: Vec<(String, f64)> =
        pg_counts.into_iter().map(|(k, n)| (k, per(n))).collect();
    pg_counts.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut redis_counts: Vec<(String, f64)> = redis_after
        .into_iter()
        .filter_map(|(cmd, n)| {
            let d = n - redis_before.get(&cmd).copied().unwrap_or(0);
            (d > 0 && cmd != "info").then(|| (cmd, per(d as usize)))
        })
        .collect();
    redis_counts.sort_by(|a, b| b.1.total_cmp(&a.1));
    (pg_counts, redis_counts)
}

/// Calls per Redis command so far.
fn redis_calls(redis: &RedisServer) -> std::collections::HashMap<String, u64> {
    let out = redis.cli(&["info", "commandstats"]).unwrap();
    out.lines()
        .filter_map(|l| {
            let (cmd, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((cmd.to_string(), calls))
        })
        .collect()
}

fn round_trip_report(pg: &[(String, f64)], redis: &[(String, f64)]) -> String {
    let total = |v: &[(String, f64)]| v.iter().map(|(_, n)| n).sum::<f64>();
    let list = |v: &[(String, f64)]| {
        v.iter()
            .map(|(k, n)| format!("{n:.2} × {k}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!(
        "round trips per session (one request, setup to close, {RT_SESSIONS} sessions; background writes included; health checks and jobs add a little): Postgres {:.1} statements [{}]; Redis {:.1} commands [{}]",
        total(pg),
        list(pg),
        total(redis),
        list(redis)
    )
}

/// Lets the allocator and the replica's background work settle before reading memory.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
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

/// Raises this process's open-file limit to its hard limit (children inherit it): 10,000
/// sessions need 2 fds each on the replica and 2 more here (client side and echo).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).unwrap().0
}

/// A `wgctl tunnel echo` against `addr`, and the local address it listens on.
fn tunnel(fleet: &Fleet, addr: &str) -> (Child, SocketAddr) {
    let mut child = fleet
        .wgctl(&[
            "--addr",
            addr,
            "-o",
            "json",
            "tunnel",
            "echo",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listen: serde_json::Value = serde_json::from_str(&line).unwrap();
    (child, listen["listen"].as_str().unwrap().parse().unwrap())
}

/// `perf stat` attached to `pid` until stopped; `None` when perf is not usable.
struct PerfStat {
    child: Child,
    out: PathBuf,
}

impl PerfStat {
    fn attach(pid: u32, out: PathBuf) -> Option<Self> {
        let child = Command::new("perf")
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                "task-clock,instructions,cycles",
                "-o",
            ])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { child, out })
    }

    /// Stops counting: (CPU ms, instructions).
    fn stop(mut self) -> (f64, f64) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let value = |event: &str| {
            text.lines()
                .find(|l| l.contains(event))
                .and_then(|l| l.split(',').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        (value("task-clock"), value("instructions"))
    }
}

struct PathResult {
    name: &'static str,
    what: &'static str,
    tput: f64,
    p50: Duration,
    p99: Duration,
    /// CPU of the path's relaying processes per MiB echoed (none for paths without them).
    cpu_per_mib: Option<Duration>,
}

/// One path measured: name, shape, where the bench connects, and its relaying processes.
struct PathSpec {
    name: &'static str,
    what: &'static str,
    addr: SocketAddr,
    relays: Vec<u32>,
}

/// Best of `ROUNDS` alternating runs per path: highest throughput, lowest p50 and p99; the
/// relaying processes' CPU time per MiB over all throughput runs (a figure that holds on a
/// busy machine, unlike the rates).
async fn measure_paths(paths: &[PathSpec]) -> Vec<PathResult> {
    let mut out: Vec<PathResult> = paths
        .iter()
        .map(|p| PathResult {
            name: p.name,
            what: p.what,
            tput: 0.0,
            p50: Duration::MAX,
            p99: Duration::MAX,
            cpu_per_mib: None,
        })
        .collect();
    let mut cpu = vec![Duration::ZERO; paths.len()];
    let cpu_of = |pids: &[u32]| pids.iter().map(|p| cpu_time(*p)).sum::<Duration>();
    for _ in 0..ROUNDS {
        for (i, p) in paths.iter().enumerate() {
            let before = cpu_of(&p.relays);
            out[i].tput = out[i].tput.max(throughput(p.addr).await);
            cpu[i] += cpu_of(&p.relays) - before;
            let (p50, p99) = latency(p.addr).await;
            out[i].p50 = out[i].p50.min(p50);
            out[i].p99 = out[i].p99.min(p99);
        }
    }
    let mib = (ROUNDS * BULK) as f64 / (1024.0 * 1024.0);
    for (i, p) in paths.iter().enumerate() {
        if !p.relays.is_empty() {
            out[i].cpu_per_mib = Some(cpu[i].div_f64(mib));
        }
    }
    out
}

/// Best-of-`SCP_ROUNDS` seconds for 1 GiB: (through `wgctl connect`, direct).
fn scp_pair(fleet: &Fleet, sshd: &Sshd, file: &Path) -> (Duration, Duration) {
    let (mut relayed, mut direct) = (Duration::MAX, Duration::MAX);
    for _ in 0..SCP_ROUNDS {
        let t = Instant::now();
        let mut scp = sshd.scp_via(&proxy_command(), file, "/dev/null").unwrap();
        scp.envs(fleet.wgctl_env());
        run(&mut scp, Duration::from_secs(600)).unwrap();
        relayed = relayed.min(t.elapsed());
        let t = Instant::now();
        run(
            &mut sshd.scp_direct(file, "/dev/null").unwrap(),
            Duration::from_secs(600),
        )
        .unwrap();
        direct = direct.min(t.elapsed());
    }
    (relayed, direct)
}

fn main() {
    let nofile = raise_nofile();
    wardengate::tls::install_crypto_provider();
    let profile = if cfg!(debug_assertions) {
        "DEBUG build: use `just bench`"
    } else {
        "release build"
    };
    let mut report = vec![format!(
        "\nWardengate benchmark ({profile}, loopback, this machine; ratios against baselines measured in this run)\n"
    )];
    if wanted("operator") {
        let (render, reconcile, reqs) = operator_costs();
        report.push(format!(
            "operator: render of the three-zone cluster {} ; steady reconcile {} with {} API requests, 0 writes",
            ms(render),
            ms(reconcile),
            reqs
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut pg = Postgres::start().unwrap();
        let redis = RedisServer::start().unwrap();
        let sshd = Sshd::start().unwrap();
        let echo = echo_server().await;
        // The production health cycle (1 s): every relay renews its grant once per cycle. One
        // token opens thousands of sessions from one address as fast as it can: the per-token
        // and per-address limits are off, or they would be what this measures.
        let fleet = Fleet::start(
            1,
            &pg.url(),
            &redis.url(),
            &[
                "--health-interval",
                "1s",
                "--requests-per-ip",
                "off",
                "--session-rate-per-token",
                "off",
                "--max-sessions-per-token",
                "0",
            ],
        )
        .await
        .unwrap();
        let out = run(
            &mut fleet.wgctl(&["targets", "add", "echo", "--host", "127.0.0.1", "--port", &echo.to_string()]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(out.contains("added"), "{out}");
        fleet.add_ssh_target(&sshd).unwrap();
        let replica = fleet.pid(0).unwrap();
        let client = fleet.client_for(0);

        if wanted("throughput") {
            let h1 = HaProxy::tcp(&[Backend::new("echo", echo)], HealthCheck::Tcp).unwrap();
            let h2 = HaProxy::tcp(&[Backend::new("h1", h1.port())], HealthCheck::Tcp).unwrap();
            let h3 = HaProxy::tcp(&[Backend::new("h2", h2.port())], HealthCheck::Tcp).unwrap();
            // The same shape with TLS between the two relays, as between wgctl and wardengate.
            let pem = Sandbox::new("bench-tls").unwrap();
            let pair = wardengate::tls::self_signed(&["127.0.0.1"]).unwrap();
            let pem_file = pem.path().join("haproxy.pem");
            std::fs::write(&pem_file, format!("{}{}", pair.cert, pair.key)).unwrap();
            let tls_lb = |backend: u16, opts: LbOptions| {
                HaProxy::start_with(
                    Arc::new(Sandbox::new("haproxy-tls").unwrap()),
                    &[Backend::new("next", backend)],
                    &HealthCheck::Tcp,
                    wardengate_testkit::haproxy::LB_TIMING,
                    &opts,
                )
                .unwrap()
            };
            let t1 = tls_lb(echo, LbOptions { tls_bind_pem: Some(pem_file.clone()), ..LbOptions::default() });
            let t2 = tls_lb(t1.port(), LbOptions { tls_to_backends: true, ..LbOptions::default() });
            let (mut t_direct, gw_direct) = tunnel(&fleet, &fleet.replica_addr(0));
            let (mut t_lb, gw_lb) = tunnel(&fleet, &fleet.lb_addr());
            let at = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
            let spec = |name, what, addr, relays: &[u32]| PathSpec { name, what, addr, relays: relays.to_vec() };
            let paths = [
                spec("direct", "bench → echo", at(echo), &[]),
                spec("haproxy", "bench → HAProxy → echo", at(h1.port()), &[h1.pid()]),
                spec("haproxy×2", "bench → HAProxy → HAProxy → echo", at(h2.port()), &[h2.pid(), h1.pid()]),
                spec("haproxy×2 tls", "bench → HAProxy →(TLS)→ HAProxy → echo", at(t2.port()), &[t2.pid(), t1.pid()]),
                spec("gateway", "bench → wgctl →(TLS)→ wardengate → echo", gw_direct, &[t_direct.id(), replica]),
                spec("haproxy×3", "bench → HAProxy ×3 → echo", at(h3.port()), &[h3.pid(), h2.pid(), h1.pid()]),
                spec("gateway+lb", "bench → wgctl →(TLS)→ LB → wardengate → echo", gw_lb, &[t_lb.id(), replica]),
            ];
            let perf = std::env::var("WG_BENCH_PERF").is_ok_and(|v| v == "1");
            let sandbox = Sandbox::new("bench-perf").unwrap();
            let counters = if perf {
                let w = PerfStat::attach(replica, sandbox.path().join("wardengate.perf"));
                let c = PerfStat::attach(t_direct.id(), sandbox.path().join("wgctl.perf"));
                let before = Instant::now();
                let mut mib = 0.0;
                for _ in 0..ROUNDS {
                    throughput(gw_direct).await;
                    mib += BULK as f64 / (1024.0 * 1024.0);
                }
                Some((w.map(PerfStat::stop), c.map(PerfStat::stop), mib, before.elapsed()))
            } else {
                None
            };
            let r = measure_paths(&paths).await;
            let _ = t_direct.kill();
            let _ = t_lb.kill();
            let _ = t_direct.wait();
            let _ = t_lb.wait();
            report.push(format!(
                "relay, best of {ROUNDS} alternating runs ({} MiB echoed per run; rtt = 64-byte round trip):",
                BULK >> 20
            ));
            report.push(format!("{:<13} {:>14} {:>11} {:>11} {:>15}   {}", "path", "throughput", "rtt p50", "rtt p99", "relay CPU/MiB", "shape"));
            for p in &r {
                report.push(format!(
                    "{:<13} {:>9.1} MiB/s {:>11} {:>11} {:>15}   {}",
                    p.name, p.tput, ms(p.p50), ms(p.p99), p.cpu_per_mib.map(ms).unwrap_or_else(|| "—".into()), p.what
                ));
            }
            let ratio = |a: usize, b: usize| {
                format!(
                    "throughput {:.2}×, rtt p50 {:.2}×, rtt p99 {:.2}×",
                    r[a].tput / r[b].tput,
                    r[a].p50.as_secs_f64() / r[b].p50.as_secs_f64(),
                    r[a].p99.as_secs_f64() / r[b].p99.as_secs_f64()
                )
            };
            report.push(format!("gateway    vs haproxy×2 tls (same shape, same encryption): {}", ratio(4, 3)));
            report.push(format!("gateway    vs haproxy×2 (same shape, no encryption): {}", ratio(4, 2)));
            report.push(format!("gateway+lb vs haproxy×3 (same shape, no encryption): {}", ratio(6, 5)));
            report.push(format!("(for information) gateway vs one HAProxy hop: {}; vs direct: {}", ratio(4, 1), ratio(4, 0)));
            if let Some((w, c, mib, took)) = counters {
                let per = |x: Option<(f64, f64)>| match x {
                    Some((cpu_ms, instr)) => format!(
                        "{:.2} ms CPU/MiB, {:.1} M instructions/MiB",
                        cpu_ms / mib,
                        instr / mib / 1e6
                    ),
                    None => "perf not available".into(),
                };
                report.push(format!(
                    "perf stat over {mib:.0} MiB echoed through the gateway path ({:.1} s): wardengate {}; wgctl {}",
                    took.as_secs_f64(),
                    per(w),
                    per(c)
                ));
            }
        }

        flush(&mut report);
        if wanted("scp") {
            let dir = Sandbox::new("bench-scp").unwrap();
            let file = dir.path().join("1GiB.bin");
            // Sparse: reading it costs no disk; SSH encrypts zeros like anything else.
            std::fs::File::create(&file).unwrap().set_len(SCP_BYTES).unwrap();
            let (relayed, direct) = scp_pair(&fleet, &sshd, &file);
            let mib = (SCP_BYTES >> 20) as f64;
            report.push(format!(
                "scp 1 GiB, best of {SCP_ROUNDS} alternating: through wgctl connect (LB → wardengate) {:.1} s = {:.0} MiB/s; direct {:.1} s = {:.0} MiB/s; ratio {:.2}×",
                relayed.as_secs_f64(),
                mib / relayed.as_secs_f64(),
                direct.as_secs_f64(),
                mib / direct.as_secs_f64(),
                direct.as_secs_f64() / relayed.as_secs_f64()
            ));
        }

        flush(&mut report);
        if wanted("setup") {
            // Warm the replica's pools and TLS resumption first.
            for _ in 0..10 {
                let (_, ws) = one_setup(&client, Setup::OneRequest).await;
                close(ws).await;
            }
            let tcp = tcp_setup(format!("127.0.0.1:{echo}").parse().unwrap()).await;
            let floor = transport_floor(client.addr(), &fleet.ca_pem()).await;
            report.push(format!(
                "the transport under it: fresh TLS connection to the replica (resumed) + one HTTP exchange with no database (GET /healthz), {SETUPS} sequential: p50 {}",
                ms(floor)
            ));
            for how in [Setup::OneRequest, Setup::TwoRequests] {
                let mut times = Vec::with_capacity(SETUPS);
                let mut opens = Vec::with_capacity(SETUPS);
                let cpu = cpu_time(replica);
                for _ in 0..SETUPS {
                    let (t, open, ws) = timed_setup(&client, how).await;
                    times.push(t);
                    opens.push(open);
                    close(ws).await;
                }
                let cpu = (cpu_time(replica) - cpu) / SETUPS as u32;
                let p50 = percentile(&mut times, 0.5);
                let p99 = percentile(&mut times, 0.99);
                report.push(format!(
                    "session setup through one replica, {} (authorise + relay open + first byte, {SETUPS} sequential): p50 {} p99 {} (relay open p50 {}); replica CPU {} per session, setup to close (direct TCP connect + first byte p50 {})",
                    match how {
                        Setup::OneRequest => "one request, wgctl's path",
                        Setup::TwoRequests => "two requests (POST, then relay)",
                    },
                    ms(p50),
                    ms(p99),
                    ms(percentile(&mut opens, 0.5)),
                    ms(cpu),
                    ms(tcp)
                ));
            }
            // Round trips of one session (one request, setup to close, with the background
            // writes it causes), counted at the servers over RT_SESSIONS sessions.
            let pg_log = pg
                .server()
                .data_dir()
                .parent()
                .and_then(Path::parent)
                .unwrap()
                .join("main.log");
            let (pg_counts, redis_counts) = count_round_trips(&pg, &redis, &pg_log, async {
                for _ in 0..RT_SESSIONS {
                    let (_, ws) = one_setup(&client, Setup::OneRequest).await;
                    close(ws).await;
                }
                wait_active(&fleet, 0).await;
            })
            .await;
            report.push(round_trip_report(&pg_counts, &redis_counts));
            let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let start = Instant::now();
            let workers: Vec<_> = (0..RATE_WORKERS)
                .map(|_| {
                    let (c, done) = (client.clone(), done.clone());
                    tokio::spawn(async move {
                        while start.elapsed() < RATE_FOR {
                            let (_, ws) = one_setup(&c, Setup::OneRequest).await;
                            close(ws).await;
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.await.unwrap();
            }
            let n = done.load(std::sync::atomic::Ordering::Relaxed);
            report.push(format!(
                "sustained new sessions on one replica ({RATE_WORKERS} concurrent clients, one request: authorise + open + first byte + close): {:.0} sessions/s ({n} in {:.1} s)",
                n as f64 / start.elapsed().as_secs_f64(),
                start.elapsed().as_secs_f64()
            ));
        }

        flush(&mut report);
        if wanted("memory") {
            wait_active(&fleet, 0).await;
            settle().await;
            let base = memory_kib(replica);
            let mut open = Vec::with_capacity(MEM_SESSIONS);
            for _ in 0..MEM_SESSIONS {
                open.push(open_session(&client).await);
            }
            wait_active(&fleet, MEM_SESSIONS).await;
            settle().await;
            let cold = memory_kib(replica);
            let warmed: Vec<Relay> = futures::stream::iter(open)
                .map(|ws| echo_through(ws, WARM_BYTES))
                .buffer_unordered(8)
                .collect()
                .await;
            settle().await;
            let warm = memory_kib(replica);
            let per = |m: (u64, u64)| {
                (
                    m.0.saturating_sub(base.0) as f64 / MEM_SESSIONS as f64,
                    m.1.saturating_sub(base.1) as f64 / MEM_SESSIONS as f64,
                )
            };
            let (cold_rss, cold_anon) = per(cold);
            let (warm_rss, warm_anon) = per(warm);
            eprintln!("memory: cold and warm measured");
            report.push(format!(
                "memory per idle relayed session on the replica ({MEM_SESSIONS} sessions; RSS delta, smaps_rollup Anonymous delta): cold {cold_rss:.1} KiB ({cold_anon:.1}), warm after 1 MiB each way {warm_rss:.1} KiB ({warm_anon:.1}); replica RSS {} → {} → {} KiB",
                base.0, cold.0, warm.0
            ));
            eprintln!("{}", report.last().unwrap());
            futures::future::join_all(warmed.into_iter().map(close)).await;
            wait_active(&fleet, 0).await;
            settle().await;

            // A relayed session costs the replica 2 fds (client and target), and the bench as
            // many again (its client side and the echo): fit under the open-file limit.
            let fit = (nofile as usize).saturating_sub(400) / 2;
            let many_n = MANY.min(fit);
            if many_n < MANY {
                report.push(format!(
                    "{MANY} idle sessions need {} fds in the replica; this machine's open-file limit is {nofile}, so {many_n} are held below",
                    MANY * 2 + 100
                ));
            }
            let base = memory_kib(replica);
            let start = Instant::now();
            let many: Vec<Relay> = futures::stream::iter(0..many_n)
                .map(|_| open_session(&client))
                .buffer_unordered(RATE_WORKERS)
                .collect()
                .await;
            wait_active(&fleet, many_n).await;
            let opened = start.elapsed();
            settle().await;
            let held = memory_kib(replica);
            let fds = std::fs::read_dir(format!("/proc/{replica}/fd")).map(|d| d.count()).unwrap_or(0);
            report.push(format!(
                "{many_n} concurrent idle sessions on one replica: opened in {:.1} s; replica RSS +{} KiB ({:.1} KiB/session), {fds} open fds (open-file limit {nofile}; a replica needs 2 fds per relayed session plus ~100)",
                opened.as_secs_f64(),
                held.0.saturating_sub(base.0),
                held.0.saturating_sub(base.0) as f64 / many_n as f64
            ));
            futures::future::join_all(many.into_iter().map(close)).await;
        }
    });
    flush(&mut report);
}

/// Prints the lines measured so far: a later section that fails loses nothing before it.
fn flush(report: &mut Vec<String>) {
    for line in report.drain(..) {
        println!("{line}");
    }
}
