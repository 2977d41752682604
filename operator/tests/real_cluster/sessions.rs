//! Session-aware rollouts on the real control plane: each kwok pod of a cluster is backed by a
//! real `wardengate serve` bound to the pod's IP (kwok hands out 127.10.0.0/16, loopback), with
//! real Postgres, Redis and sshd. A small "kubelet" thread plays the node's part: it starts a
//! gateway for every new pod (configured from the Secrets the operator generated, as the pod's
//! mounts would), holds a finalizer on the pod, and on deletion sends the gateway SIGTERM (its
//! drain) and releases the pod only when the process has exited — so a pod with a live session
//! stays Terminating exactly as long as a real pod's preStop drain would.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use wardengate_testkit::sshd::HOST_ALIAS;
use wardengate_testkit::{Postgres, RedisServer, Sshd};

use super::{Env, cr, plugin};

const NS: &str = "e2e-sessions";
const NAME: &str = "sess";
const FINALIZER: &str = "e2e.wardengate.io/kubelet";

/// A binary of the gateway package, next to this test's directory (`cargo build -p wardengate`).
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build -p wardengate` first",
        p.display()
    );
    p
}

/// Forwards 127.0.0.1:<returned port> to `to` (the serving certificate names 127.0.0.1, not
/// the pod IP, so `wgctl` reaches a pod through this).
fn forward(to: SocketAddr) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let Ok(s) = TcpStream::connect(to) else {
                continue;
            };
            for (mut a, mut b) in [(c.try_clone().unwrap(), s.try_clone().unwrap()), (s, c)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    port
}

fn secret_data(env: &Env, name: &str) -> BTreeMap<String, Vec<u8>> {
    let s = env.json(&["get", "secret", name, "-n", NS]);
    s["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let b = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            (k.clone(), b)
        })
        .collect()
}

/// The files a pod mounts, written once.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn write(env: &Env, dir: &Path) -> Self {
        let tls = secret_data(env, &format!("{NAME}-tls"));
        let internal = secret_data(env, &format!("{NAME}-internal"));
        for (file, data) in [
            ("tls.crt", &tls["tls.crt"]),
            ("tls.key", &tls["tls.key"]),
            ("ca.crt", &tls["ca.crt"]),
            ("keys", &internal["keys"]),
            ("admin-token", &internal["admin-token"]),
            ("observer-token", &internal["observer-token"]),
        ] {
            std::fs::write(dir.join(file), data).unwrap();
        }
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

/// One backed pod.
struct Backed {
    proc: Child,
    ip: String,
    signalled: bool,
}

fn exited(p: &mut Child) -> bool {
    !matches!(p.try_wait(), Ok(None))
}

/// The node's part for the cluster's pods (see the module doc).
struct Kubelet {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    backed: Arc<Mutex<BTreeMap<String, Backed>>>,
}

impl Kubelet {
    fn start(env: &Env, files: Arc<Files>, pg_url: String, redis_url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let backed: Arc<Mutex<BTreeMap<String, Backed>>> = Arc::default();
        let (kubectl, admin) = (env.kubectl.clone(), env.admin.clone());
        let (st, bk) = (stop.clone(), backed.clone());
        let k = move |args: &[&str]| {
            wardengate_testkit::kube::kubectl_ok(&kubectl, &admin, args).map_err(|e| e.to_string())
        };
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok(out) = k(&[
                    "get",
                    "pods",
                    "-n",
                    NS,
                    "-l",
                    &format!("app.kubernetes.io/instance={NAME}"),
                    "-o",
                    "json",
                ]) else {
                    continue;
                };
                let pods: Value = serde_json::from_str(&out).unwrap_or_default();
                let mut b = bk.lock().unwrap();
                for p in pods["items"].as_array().cloned().unwrap_or_default() {
                    let name = p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let ip = p["status"]["podIP"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let deleting = p["metadata"]["deletionTimestamp"].is_string();
                    // (signalled, exited) of a backed pod.
                    let state = b
                        .get_mut(&name)
                        .map(|back| (back.signalled, back.signalled && exited(&mut back.proc)));
                    match state {
                        None if !ip.is_empty() && !deleting => {
                            let _ = k(&[
                                "patch",
                                "pod",
                                &name,
                                "-n",
                                NS,
                                "--type=merge",
                                "-p",
                                &json!({"metadata": {"finalizers": [FINALIZER]}}).to_string(),
                            ]);
                            let mut cmd = Command::new(bin("wardengate"));
                            cmd.arg("serve")
                                .env("WG_LISTEN", format!("{ip}:8443"))
                                .env("WG_AGENT_LISTEN", format!("{ip}:8444"))
                                .env("WG_DATABASE_URL", &pg_url)
                                .env("WG_REDIS_URL", &redis_url)
                                .env("WG_TLS_CERT", files.path("tls.crt"))
                                .env("WG_TLS_KEY", files.path("tls.key"))
                                .env("WG_INTERNAL_KEY_FILE", files.path("keys"))
                                .env("WG_ADMIN_TOKEN_FILE", files.path("admin-token"))
                                .env("WG_OBSERVER_TOKEN_FILE", files.path("observer-token"))
                                .env("WG_REPLICA_ID", &name)
                                .env("WG_DRAIN_TIMEOUT", "180s")
                                .env("WG_HEALTH_INTERVAL", "500ms")
                                .env("WG_ISOLATION_GRACE", "2s")
                                .env("WG_RECORDINGS_SPOOL", files.path(&format!("spool-{name}")))
                                .env("RUST_LOG", "info");
                            let log = std::fs::File::create(files.path(&format!("{name}.log")));
                            if let Ok(log) = log {
                                cmd.stdout(log.try_clone().unwrap()).stderr(log);
                            }
                            if let Ok(proc) = cmd.spawn() {
                                b.insert(
                                    name,
                                    Backed {
                                        proc,
                                        ip,
                                        signalled: false,
                                    },
                                );
                            }
                        }
                        Some((false, _)) if deleting => {
                            // The preStop drain: SIGTERM drains, then the process exits.
                            if let Some(back) = b.get_mut(&name) {
                                let _ = Command::new("kill")
                                    .args(["-TERM", &back.proc.id().to_string()])
                                    .status();
                                back.signalled = true;
                            }
                        }
                        Some((true, true)) => {
                            let _ = k(&[
                                "patch",
                                "pod",
                                &name,
                                "-n",
                                NS,
                                "--type=json",
                                "-p",
                                r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
                            ]);
                            b.remove(&name);
                        }
                        _ => {}
                    }
                }
                drop(b);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Self {
            stop,
            thread: Some(thread),
            backed,
        }
    }

    fn ip_of(&self, pod: &str) -> Option<String> {
        self.backed.lock().unwrap().get(pod).map(|b| b.ip.clone())
    }

    fn shutdown(&mut self, env: &Env) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for (name, mut b) in std::mem::take(&mut *self.backed.lock().unwrap()) {
            let _ = b.proc.kill();
            let _ = b.proc.wait();
            let _ = env.try_k(&[
                "patch",
                "pod",
                &name,
                "-n",
                NS,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
            ]);
        }
    }
}

fn wgc(env: &Env) -> Value {
    env.json(&["get", "wgc", NAME, "-n", NS])
}

/// The `status:` part of `kubectl get wgc -o yaml`.
fn status_yaml(env: &Env) -> String {
    let y = env.k(&["get", "wgc", NAME, "-n", NS, "-o", "yaml"]);
    y.find("\nstatus:")
        .map(|i| y[i + 1..].to_string())
        .unwrap_or(y)
}

/// Pod name → (zone label, deletion cost, terminating).
fn pod_table(env: &Env) -> BTreeMap<String, (String, Option<String>, bool)> {
    env.json(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        &format!("app.kubernetes.io/instance={NAME}"),
    ])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    p["metadata"]["labels"]["wardengate.io/zone"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
                        .as_str()
                        .map(String::from),
                    p["metadata"]["deletionTimestamp"].is_string(),
                ),
            )
        })
        .collect()
}

fn zone<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["status"]["zones"]
        .as_array()
        .and_then(|zs| zs.iter().find(|z| z["name"] == name))
        .unwrap_or(&Value::Null)
}

fn reason(c: &Value, type_: &str) -> String {
    c["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|x| x["type"] == type_))
        .map(|x| {
            format!(
                "{}/{}",
                x["status"].as_str().unwrap_or(""),
                x["reason"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

fn images(env: &Env) -> BTreeMap<String, String> {
    env.json(&[
        "get",
        "deployments",
        "-n",
        NS,
        "-l",
        &format!("app.kubernetes.io/instance={NAME}"),
    ])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_string(),
                d["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

/// The issue's real-cluster list; returns the status at the three moments, and the
/// `kubectl wardengate status` screen while the pod drains with its session.
pub(super) fn sessions_through_real_gateways(env: &Env) -> [String; 4] {
    let pg = Postgres::start().unwrap();
    let mut redis = RedisServer::start().unwrap();
    let sshd = Sshd::start().unwrap();
    let zones: Vec<String> = env.zones.iter().take(2).cloned().collect();
    env.namespace(NS);
    env.apply_json(
        "sessions-db",
        &[json!({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": "db", "namespace": NS},
                 "stringData": {"url": pg.url()}})],
    );
    let spec = json!({
        "version": "0.1.0", "replicas": 2, "zones": zones,
        "postgres": {"external": {"urlSecretRef": {"name": "db", "key": "url"}}},
        "redis": {"mode": "standalone", "hosts": [format!("127.0.0.1:{}", redis.port())]},
        "drain": {"timeoutSeconds": 180},
        "service": {"type": "ClusterIP"},
    });
    env.apply_json(
        "sessions-cluster",
        &[cr("WardengateCluster", NS, NAME, spec)],
    );
    env.wait("the cluster's generated Secrets", 60, || {
        env.try_k(&["get", "secret", &format!("{NAME}-internal"), "-n", NS])
            .is_ok()
            && env
                .try_k(&["get", "secret", &format!("{NAME}-tls"), "-n", NS])
                .is_ok()
    });
    let dir = env.work.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let files = Arc::new(Files::write(env, &dir));
    let mut kubelet = Kubelet::start(env, files.clone(), pg.url(), redis.url());

    // Every pod answers: no pod listed as unreachable, Ready.
    env.wait("both pods answering the operator, Ready", 180, || {
        let c = wgc(env);
        c["status"]["phase"] == "Ready"
            && zones.iter().all(|z| {
                let zs = zone(&c, z);
                zs["ready"] == 1 && zs["unreachable"].is_null() && zs["version"] == "0.1.0"
            })
    });
    env.step("sessions: both kwok pods backed by real gateways, answering the operator");

    // A real SSH session through the pod of the first zone.
    let table = pod_table(env);
    let (pod_a, _) = table
        .iter()
        .find(|(_, (z, _, _))| z == &zones[0])
        .map(|(n, v)| (n.clone(), v.clone()))
        .unwrap();
    let ip_a = kubelet.ip_of(&pod_a).unwrap();
    let port_a = forward(format!("{ip_a}:8443").parse().unwrap());
    let wg_env = [
        ("WG_ADDR", format!("https://127.0.0.1:{port_a}")),
        ("WG_CA_CERT", files.path("ca.crt")),
        ("WG_TOKEN_FILE", files.path("admin-token")),
    ];
    let mut add = Command::new(bin("wgctl"));
    add.args([
        "targets",
        "add",
        HOST_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
    ])
    .arg(sshd.port().to_string())
    .envs(wg_env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = add.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proxy = format!("{} connect %h", bin("wgctl").display());
    let mut ssh = sshd.ssh_via(&proxy, "read line; echo ended").unwrap();
    ssh.envs(wg_env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut session: Child = ssh.spawn().unwrap();

    env.wait(
        "status to show the session on zone a and deletion costs to follow",
        120,
        || {
            let c = wgc(env);
            let t = pod_table(env);
            c["status"]["sessions"] == 1
                && zone(&c, &zones[0])["sessions"] == 1
                && zone(&c, &zones[1])["sessions"] == 0
                && t.iter().all(|(n, (_, cost, _))| {
                    cost.as_deref() == Some(if *n == pod_a { "1" } else { "0" })
                })
        },
    );
    let before = status_yaml(env);
    env.step(&format!(
        "sessions: one SSH session on {pod_a}, shown in status (before)"
    ));

    // The version bump: zone a rolls; its old pod drains with the session for as long as it lasts.
    let started = Instant::now();
    env.k(&[
        "patch",
        "wgc",
        NAME,
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"version":"0.2.0"}}"#,
    ]);
    env.wait(
        "the old pod of zone a draining with its session",
        120,
        || {
            let c = wgc(env);
            let d = &zone(&c, &zones[0])["draining"];
            d.as_array().is_some_and(|d| {
                d.iter()
                    .any(|p| p["name"] == pod_a.as_str() && p["sessions"] == 1)
            }) && c["status"]["rollout"]["sessionsDraining"] == 1
                && reason(&c, "Reconciling") == "True/Draining"
        },
    );
    let during = status_yaml(env);
    env.step(&format!(
        "sessions: {pod_a} drains with the session, shown in status (during)"
    ));
    // The plugin's screen: the draining pod with its session, asked from the pod itself.
    let screen = plugin::ok(env, &["status", NAME, "-n", NS]);
    let row = plugin::row(&screen, &pod_a);
    assert_eq!(row[1], zones[0], "{screen}");
    assert_eq!(row[4], "1", "sessions of {pod_a}: {screen}");
    assert!(row.contains(&"Terminating"), "{screen}");
    let zrow = plugin::row(&screen, &zones[0]);
    assert!(zrow.contains(&format!("{pod_a}(1)").as_str()), "{screen}");
    assert_eq!(
        plugin::row(&screen, "Reconciling")[1..3],
        ["True", "Draining"],
        "{screen}"
    );
    assert!(
        screen.contains("\nEvents\n") && screen.contains("Applied"),
        "{screen}"
    );
    let snap: Value =
        serde_json::from_str(&plugin::ok(env, &["status", NAME, "-n", NS, "-o", "json"])).unwrap();
    let p = snap["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pod_a.as_str())
        .unwrap();
    assert_eq!(
        (&p["sessions"], &p["draining"]),
        (&json!(1), &json!(true)),
        "{p}"
    );
    env.step("kubectl wardengate status: the draining pod with its one session");
    // It keeps draining while the session lives (several operator passes).
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(12) {
        let c = wgc(env);
        assert_eq!(
            c["status"]["rollout"]["sessionsDraining"], 1,
            "{}",
            c["status"]
        );
        assert!(
            pod_table(env).get(&pod_a).is_some_and(|p| p.2),
            "the old pod left mid-session"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The session ends: the pod goes, the rollout finishes.
    session.stdin.take().unwrap().write_all(b"bye\n").unwrap();
    let out = session.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ended"),
        "the session was cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait("the rollout to finish after the session", 240, || {
        let c = wgc(env);
        c["status"]["phase"] == "Ready"
            && c["status"]["version"] == "0.2.0"
            && c["status"]["rollout"]["sessionsDraining"] == 0
            && c["status"]["rollout"]["podsDraining"] == 0
            && zones
                .iter()
                .all(|z| zone(&c, z)["version"] == "0.2.0" && zone(&c, z)["unreachable"].is_null())
    });
    let after = status_yaml(env);
    assert!(!pod_table(env).contains_key(&pod_a));
    env.step(&format!(
        "sessions: rollout done {:.0}s after the bump (the session held the old pod)",
        started.elapsed().as_secs_f64()
    ));
    env.wait("idle pods to cost 0", 60, || {
        pod_table(env)
            .values()
            .all(|(_, cost, _)| cost.as_deref() == Some("0"))
    });

    // A Redis outage stops the next rollout with DependencyUnavailable; recovery resumes it.
    redis.kill9();
    let observer = std::fs::read_to_string(files.path("observer-token")).unwrap();
    let ca = std::fs::read(files.path("ca.crt")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pods_now: Vec<String> = pod_table(env).keys().cloned().collect();
    env.wait("every gateway to report Redis failing", 60, || {
        pods_now.iter().all(|p| {
            let Some(ip) = kubelet.ip_of(p) else {
                return false;
            };
            let client = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
                .resolve(
                    &format!("{NAME}.{NS}.svc"),
                    format!("{ip}:8443").parse().unwrap(),
                )
                .build()
                .unwrap();
            rt.block_on(async {
                let r = client
                    .get(format!("https://{NAME}.{NS}.svc:8443/v1/system/status"))
                    .bearer_auth(observer.trim())
                    .send()
                    .await;
                match r {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|s| s["dependencies"]["redis"] == false),
                    Err(_) => false,
                }
            })
        })
    });
    let held = images(env);
    env.k(&[
        "patch",
        "wgc",
        NAME,
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"version":"0.3.0"}}"#,
    ]);
    env.wait("Stalled/DependencyUnavailable naming Redis", 90, || {
        let c = wgc(env);
        c["status"]["observedGeneration"] == c["metadata"]["generation"]
            && reason(&c, "Stalled") == "True/DependencyUnavailable"
            && c["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| {
                    x["type"] == "Stalled" && x["message"].as_str().unwrap_or("").contains("Redis")
                })
    });
    assert_eq!(
        images(env),
        held,
        "a Deployment changed while Redis was down"
    );
    env.step(
        "sessions: Redis down: rollout stopped with DependencyUnavailable, no Deployment changed",
    );
    redis.restart().unwrap();
    env.wait("the rollout to resume once Redis is back", 120, || {
        images(env).values().any(|i| i.ends_with(":0.3.0"))
    });
    env.step("sessions: Redis back: the rollout resumed");

    // kubectl wardengate drain: refused with the read-only observer token, done with the admin
    // token it reads from the cluster's internal Secret.
    env.wait("the rollout to 0.3.0 to finish", 240, || {
        let c = wgc(env);
        c["status"]["phase"] == "Ready" && c["status"]["version"] == "0.3.0"
    });
    let victim = pod_table(env)
        .into_iter()
        .find(|(_, (_, _, terminating))| !terminating)
        .map(|(n, _)| n)
        .unwrap();
    let out = plugin::run(
        env,
        &[
            "drain",
            &victim,
            "-n",
            NS,
            "--timeout",
            "20s",
            "--token-file",
            &files.path("observer-token"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("admin token"), "{err}");
    let t0 = Instant::now();
    let out = plugin::ok(env, &["drain", &victim, "-n", NS, "--timeout", "20s"]);
    assert!(
        out.lines()
            .last()
            .unwrap_or_default()
            .starts_with(&format!("pod {victim} drained (drained) in ")),
        "{out}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "an idle pod drains at once"
    );
    let snap: Value =
        serde_yaml::from_str(&plugin::ok(env, &["status", NAME, "-n", NS, "-o", "yaml"])).unwrap();
    let p = snap["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == victim.as_str())
        .unwrap();
    assert_eq!(p["draining"], true, "{p}");
    env.step(&format!(
        "kubectl wardengate drain {victim}: observer token refused, admin token from the Secret drained it: {}",
        out.trim()
    ));

    kubelet.shutdown(env);
    let _ = env.try_k(&["delete", "namespace", NS, "--wait=false"]);
    [before, during, after, screen]
}
