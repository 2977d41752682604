//! The alerts and the dashboard of `config/monitoring` with the real tools: `promtool check
//! rules` and `promtool test rules` on the shipped rules; `promtool check metrics` on a real
//! gateway's `/metrics` (the guide's own `wg_leader_leases_gauge` is the one accepted lint
//! exception); the Grafana dashboard's structure and every query's metric; and a real
//! Prometheus (Debian's 2.42, `scripts/install-deps.sh`) scraping a three-replica fleet with the
//! shipped rules, where killing one replica fires `WardengateReplicaDown` for it, and only that.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wardengate_e2e::{Deps, Fleet, proxy_command};
use wardengate_testkit::net::free_port;
use wardengate_testkit::process::{Service, run};
use wardengate_testkit::sandbox::Sandbox;
use wardengate_testkit::user::RunAs;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/monitoring")
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut cmd = Command::new("promtool");
    cmd.args(args)
        .current_dir(monitoring())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("promtool: run scripts/install-deps.sh (Debian package prometheus)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "wardengate.rules.yaml"], None);
    assert!(ok && out.contains("SUCCESS: 8 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "rules_test.yaml"], None);
    assert!(ok && out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test.
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(monitoring().join("wardengate.rules.yaml")).unwrap(),
    )
    .unwrap();
    let tests = std::fs::read_to_string(monitoring().join("rules_test.yaml")).unwrap();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!(
                    "alertname: {name}\n        exp_alerts:\n          -"
                )),
                "{name} has no test where it fires"
            );
        }
    }
}

/// Metric names a PromQL expression reads (`wg_…` and `up`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let word = &expr[start..i];
        if word.starts_with("wg_") || (word == "up" && b.get(i) == Some(&b'{')) {
            out.insert(word.to_string());
        }
        if i == start {
            i += 1;
        }
    }
    out
}

/// The dashboard's queries, with `$job` set to the scrape job.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(d["title"].is_string() && d["uid"] == "wardengate-fleet");
    assert!(d["schemaVersion"].as_i64().unwrap() >= 36);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "job"]);
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    let mut cells = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        let id = p["id"].as_i64().unwrap();
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(
            ["timeseries", "stat", "gauge", "table"].contains(&p["type"].as_str().unwrap()),
            "{p}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().unwrap(),
            g["y"].as_i64().unwrap(),
            g["w"].as_i64().unwrap(),
            g["h"].as_i64().unwrap(),
        );
        assert!(x >= 0 && w > 0 && x + w <= 24 && h > 0, "panel {id}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "panel {id} overlaps another at {cx},{cy}"
                );
            }
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {id} has no query");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "panel {id}: refIds repeat");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                expr.contains("job=\"$job\""),
                "panel {id}: {expr} ignores $job"
            );
            out.push((
                p["title"].as_str().unwrap().to_string(),
                expr.replace("$job", "wardengate"),
            ));
        }
    }
    out
}

/// Every `wg_…` name the gateway declares (gateway/src/metrics.rs), histograms with their
/// series suffixes.
fn declared_gateway_metrics() -> BTreeSet<String> {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/src/metrics.rs"),
    )
    .unwrap();
    let mut names = BTreeSet::new();
    for part in src.split('"').skip(1).step_by(2) {
        if part.starts_with("wg_") && !part.contains(' ') && !part.contains('{') {
            names.insert(part.to_string());
            if part.ends_with("_seconds") {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{part}{s}"));
                }
            }
        }
    }
    names.insert("up".into());
    names
}

#[test]
fn every_dashboard_and_alert_query_names_a_metric_the_gateway_or_operator_declares() {
    let mut declared = declared_gateway_metrics();
    let op = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../operator/src/metrics.rs"),
    )
    .unwrap();
    for part in op.split('"').skip(1).step_by(2) {
        if part.starts_with("wg_operator_") {
            declared.insert(part.to_string());
        }
    }
    assert!(
        declared.contains("wg_replica_up") && declared.contains("wg_operator_reconciles_total")
    );
    let mut exprs: Vec<String> = dashboard_queries().into_iter().map(|(_, e)| e).collect();
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(monitoring().join("wardengate.rules.yaml")).unwrap(),
    )
    .unwrap();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            exprs.push(r["expr"].as_str().unwrap().to_string());
        }
    }
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{e}");
        for n in names {
            assert!(
                declared.contains(&n),
                "{n} (in {e}) is not a declared metric"
            );
        }
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// Deadline poll of an async condition (Prometheus evaluates on its own clock).
async fn until<T>(what: &str, secs: u64, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_a_fleet_and_a_killed_replica_fires_its_alert() {
    let deps = Deps::start().unwrap();
    let mut fleet: Fleet = deps.fleet(3, &[]).await.unwrap();
    let env: std::collections::BTreeMap<String, String> = fleet.wgctl_env().into_iter().collect();
    let (ca, token_file) = (&env["WG_CA_CERT"], &env["WG_TOKEN_FILE"]);
    let token = std::fs::read_to_string(token_file).unwrap();

    // promtool's lint on a real replica's /metrics: the guide's name is the only finding.
    let tls = wardengate::tls::client_config(&fleet.ca_pem()).unwrap();
    let https = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let metrics = https
        .get(format!("{}/metrics", fleet.replica_addr(0)))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("wg_replica_up"), "{metrics}");
    let (_, lint) = promtool(&["check", "metrics"], Some(&metrics));
    let findings: Vec<&str> = lint.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        findings,
        ["wg_leader_leases_gauge metric name should not include type 'gauge'"],
        "{lint}"
    );

    // A real Prometheus with the shipped rules, scraping every replica each second. Only the
    // rules' `for:` durations shrink (1m/2m → 3s): promtool's unit tests cover their timing.
    let sandbox = Sandbox::new("prometheus").unwrap();
    let dir = sandbox.path();
    let rules = std::fs::read_to_string(monitoring().join("wardengate.rules.yaml"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for: ") {
                format!("{}for: 3s", &l[..l.len() - l.trim_start().len()])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    let targets: Vec<String> = fleet
        .replicas
        .iter()
        .map(|r| format!("\"127.0.0.1:{}\"", r.port))
        .collect();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}}\n\
         rule_files: [rules.yaml]\n\
         scrape_configs:\n\
         \x20 - job_name: wardengate\n\
         \x20   scheme: https\n\
         \x20   tls_config: {{ca_file: \"{ca}\"}}\n\
         \x20   authorization: {{credentials_file: \"{token_file}\"}}\n\
         \x20   static_configs: [{{targets: [{}]}}]\n",
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
    let port = free_port().unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.current_dir(dir).args([
        "--config.file=prometheus.yml",
        &format!("--storage.tsdb.path={}", dir.join("data").display()),
        &format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn",
    ]);
    let _prom = Service::spawn(&sandbox, "prometheus", cmd, &RunAs::current()).unwrap();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let query = async |q: &str| -> Option<Vec<Value>> {
        let url = reqwest::Url::parse_with_params(&format!("{api}/query"), &[("query", q)]).ok()?;
        let v = http
            .get(url)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()?;
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned()
    };
    until(
        "Prometheus to scrape three healthy replicas",
        60,
        async || {
            let r = query("sum(wg_replica_up{job=\"wardengate\"})").await?;
            (r.first()?["value"][1] == "3").then_some(())
        },
    )
    .await;

    // Relayed sessions, so the relay metrics exist too (a CounterVec has no series before).
    for word in ["one", "two", "three"] {
        let mut ssh = deps
            .sshd
            .ssh_via(&proxy_command(), &format!("echo {word}"))
            .unwrap();
        ssh.envs(fleet.wgctl_env());
        assert_eq!(run(&mut ssh, Duration::from_secs(60)).unwrap(), word);
    }
    // Every dashboard query evaluates on the real Prometheus (`query` asserts success), and
    // every panel shows data from the real fleet (a counter of refusals may rightly be empty
    // while nothing is refused, so per panel, not per query).
    let mut panels: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (title, expr) in dashboard_queries() {
        panels.entry(title).or_default().push(expr);
    }
    for (title, exprs) in &panels {
        until(
            &format!("data for panel {title}: {exprs:?}"),
            30,
            async || {
                let mut any = false;
                for e in exprs {
                    any |= !query(e).await?.is_empty();
                }
                any.then_some(())
            },
        )
        .await;
    }
    let firing = async || -> Option<Vec<Value>> {
        let v = get_json(&http, &format!("{api}/alerts")).await?;
        Some(
            v["data"]["alerts"]
                .as_array()?
                .iter()
                .filter(|a| a["state"] == "firing")
                .cloned()
                .collect(),
        )
    };
    let before = firing().await.unwrap();
    assert!(before.is_empty(), "alerts on a healthy fleet: {before:?}");

    // Kill one replica: its scrape fails, WardengateReplicaDown fires for that target.
    let killed = format!("127.0.0.1:{}", fleet.replicas[2].port);
    fleet.kill9(2);
    let alerts = until(
        "WardengateReplicaDown for the killed replica",
        60,
        async || {
            let f = firing().await?;
            f.iter()
                .any(|a| {
                    a["labels"]["alertname"] == "WardengateReplicaDown"
                        && a["labels"]["instance"] == killed.as_str()
                })
                .then_some(f)
        },
    )
    .await;
    // Two of three healthy is N-1: no page.
    assert!(
        alerts
            .iter()
            .all(|a| a["labels"]["alertname"] == "WardengateReplicaDown"),
        "{alerts:?}"
    );
    assert_eq!(alerts.len(), 1, "only the killed replica: {alerts:?}");
}
