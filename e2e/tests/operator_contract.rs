//! The contract between the operator (writer) and the gateway (reader): for every example, each
//! gateway container the operator renders gets its environment (`env` after `envFrom`, from the
//! Secrets and ConfigMaps the operator generates, with test values for the user's Secrets), its
//! files (the mounted Secret keys) and its command line (the image's entrypoint plus `args`),
//! and the gateway's own parser reads them: `wardengate serve`'s clap arguments with their
//! `WG_*` variables, `ServeArgs::validate` (which reads the TLS pair, the signing keys and the
//! admin token), `RedisTarget::parse` and the store's Postgres URL handling. The test then
//! asserts the parsed configuration means what the operator intended: role, ports, drain
//! timeout, admin socket, URLs down to the decoded credentials, and files that exist where the
//! variables point.
//!
//! clap reads variables from the process environment only, so each container is parsed in a
//! child process (this test binary re-run with exactly the container's environment): no
//! `set_var`, no races between containers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use clap::{CommandFactory, Parser, Subcommand};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{Value, json};
use wardengate::config::ServeArgs;
use wardengate::redis_url::RedisTarget;
use wardengate_crds::{GatewayPool, RedisMode, WardengateCluster};
use wardengate_operator::build::{
    ADMIN_SOCKET, AGENT_STATE_DIR, CONTROL_PLANE_CA_FILE, Credentials, Desired, JOIN_TOKEN_FILE,
    SPOOL_DIR, SecretMaterial, cluster_objects, pool_objects, remote_pool_objects,
};
use wardengate_operator::labels::{AGENT_PORT, HTTPS_PORT, names};
use wardengate_operator::material;
use wardengate_operator::validate::{
    ValidCluster, ValidPool, pool_version, validate, validate_pool,
};

/// Set in the child: the JSON argv to parse.
const CHILD: &str = "WG_CONTRACT_CHILD_ARGV";
const TEST_NAME: &str = "every_rendered_gateway_container_means_what_the_operator_intends";
/// Test credentials with every character a URL cares about.
const DB_USER: &str = "wg@ops";
const NASTY: &str = "p@ss:w/o%r#d?";
const POD: &str = "wardengate-cp-7d9f-abcde";

/// `wardengate`'s command line, as the binary declares it.
#[derive(Parser)]
#[command(name = "wardengate")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Serve(Box<ServeArgs>),
}

/// Child side: parse and validate with the process environment, print what it means.
fn child(argv: &str) {
    let argv: Vec<String> = serde_json::from_str(argv).unwrap();
    let Cmd::Serve(args) = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("clap refused {argv:?}: {e}"))
        .command;
    if args.control_plane.is_some() {
        return remote_child(*args);
    }
    let cfg = args
        .validate()
        .unwrap_or_else(|e| panic!("wardengate serve would not start: {e}"));
    // The store's URL handling: what `serve` hands the database URL to.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        wardengate::store::Store::connect_with(
            &cfg.database_url,
            cfg.statement_timeout,
            cfg.database_pool_mode,
        )
        .unwrap_or_else(|e| panic!("the store refuses the database URL: {e}"));
    });
    let pg = sqlx::postgres::PgConnectOptions::from_str(&cfg.database_url).unwrap();
    let redis = match cfg
        .redis
        .as_ref()
        .expect("a replica with a database has Redis")
    {
        RedisTarget::Standalone {
            addr,
            tls,
            password,
            ..
        } => {
            json!({"mode": "standalone", "hosts": [addr.to_string()], "tls": tls, "password": password})
        }
        RedisTarget::Sentinel {
            sentinels,
            master,
            password,
            tls,
            ..
        } => {
            json!({"mode": "sentinel", "hosts": sentinels.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "master": master, "tls": tls, "password": password})
        }
        RedisTarget::Cluster {
            nodes,
            tls,
            password,
            ..
        } => {
            json!({"mode": "cluster", "hosts": nodes.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "tls": tls, "password": password})
        }
    };
    let out = json!({
        "role": format!("{:?}", cfg.role),
        "listen": cfg.listen.to_string(),
        "agent_listen": cfg.agent_listen.to_string(),
        "database": {
            "host": pg.get_host(), "port": pg.get_port(), "user": pg.get_username(),
            "database": pg.get_database(), "ssl_mode": format!("{:?}", pg.get_ssl_mode()),
            "debug": format!("{pg:?}"),
        },
        "redis": redis,
        "drain_timeout_s": cfg.drain_timeout.as_secs(),
        "statement_timeout_ms": cfg.statement_timeout.as_millis() as u64,
        "admin_socket": cfg.admin_socket,
        "admin_token": cfg.admin_token.is_some(),
        "recordings_url": cfg.recordings_url,
        "recordings_spool": cfg.recordings_spool,
        "replica_id": cfg.replica_id,
        "aws_key": std::env::var("AWS_ACCESS_KEY_ID").ok(),
        "ssh_listen": cfg.ssh.as_ref().map(|s| s.listen.to_string()),
        "ssh_host_key": cfg.ssh.as_ref().map(|s| wardengate::ssh::keys::public_line(s.keys.host.public_key())),
    });
    println!("CONTRACT {out}");
}

/// Child side of a remote gateway (`--control-plane`): what clap read, and what
/// `ServeArgs::validate` makes of it. The operator gives a remote gateway no database, Redis or
/// internal key; if `validate` still wants them (the gateway side of issue 15 lifts that), the
/// child says which setting it named first, then supplies exactly those three and validates
/// again, so every other setting is still checked by the gateway's own code.
fn remote_child(mut args: ServeArgs) {
    let rendered = json!({
        "database_url": args.database_url, "redis_url": args.redis_url,
        "internal_key_file": args.internal_key_file,
    });
    let gap = args.validate().err().map(|e| e.setting);
    let keys = tempfile::NamedTempFile::new().unwrap();
    if gap.is_some() {
        std::fs::write(
            keys.path(),
            wardengate::signing::Keyring::generate_file("k1"),
        )
        .unwrap();
        args.database_url = Some("postgres://unused@127.0.0.1:1/unused".into());
        args.redis_url = Some("redis://127.0.0.1:1".into());
        args.internal_key_file = Some(keys.path().to_path_buf());
    }
    let cfg = args
        .validate()
        .unwrap_or_else(|e| panic!("wardengate serve would not start: {e}"));
    let link = cfg
        .agent_link
        .as_ref()
        .expect("--control-plane makes an agent link");
    let out = json!({
        "remote": true,
        "rendered": rendered,
        "gap": gap,
        "role": format!("{:?}", cfg.role),
        "listen": cfg.listen.to_string(),
        "control_plane": link.control_plane.to_string(),
        "control_plane_ca": link.control_plane_ca.is_some(),
        "join_token_file": link.join_token_file,
        "region": link.region,
        "state_dir": link.state_dir,
        "drain_timeout_s": cfg.drain_timeout.as_secs(),
        "admin_socket": cfg.admin_socket,
        "admin_token": cfg.admin_token.is_some(),
        "replica_id": cfg.replica_id,
    });
    println!("CONTRACT {out}");
}

/// Everything the rendered pods can reference: Secrets and ConfigMaps by name, as key → bytes.
type Store = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// The user's Secrets a spec references, with test values.
fn user_secrets(v: &ValidCluster, out: &mut Store) {
    let s = &v.spec;
    let mut put = |name: &str, key: &str, value: &[u8]| {
        out.entry(name.to_string())
            .or_default()
            .insert(key.to_string(), value.to_vec());
    };
    if let Some(e) = &s.postgres.external {
        put(
            &e.url_secret_ref.name,
            &e.url_secret_ref.key,
            b"postgres://ext:secret@db.example.com:6543/wg_ext?sslmode=require",
        );
    }
    if let Some(c) = &s.postgres.cloud_native_pg {
        let uri = format!(
            "postgresql://app:secret@{}-rw.{}:5432/app",
            c.cluster_name, v.namespace
        );
        put(&format!("{}-app", c.cluster_name), "uri", uri.as_bytes());
    }
    if let Some(r) = s
        .recordings
        .as_ref()
        .and_then(|r| r.credentials_secret_ref.as_ref())
    {
        put(&r.name, "AWS_ACCESS_KEY_ID", b"AKIATEST");
        put(&r.name, "AWS_SECRET_ACCESS_KEY", b"secret");
    }
    if let Some(t) = &s.tls.secret_name {
        let pair = material::tls(&v.name, &["localhost".to_string()]).unwrap();
        for (k, b) in pair {
            put(t, &k, &b.0);
        }
    }
}

fn credentials(v: &ValidCluster) -> Credentials {
    Credentials {
        database_user: v.spec.postgres.patroni.as_ref().map(|_| DB_USER.into()),
        database_password: v.spec.postgres.patroni.as_ref().map(|_| NASTY.into()),
        redis_password: v
            .spec
            .redis
            .password_secret_ref
            .as_ref()
            .map(|_| NASTY.into()),
    }
}

fn bytes(m: &Option<BTreeMap<String, ByteString>>) -> BTreeMap<String, Vec<u8>> {
    m.iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Adds what the operator renders to `store`.
fn owned(d: &Desired, store: &mut Store) {
    for s in &d.secrets {
        let mut data = bytes(&s.data);
        data.extend(
            s.string_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
        );
        store.insert(s.metadata.name.clone().unwrap(), data);
    }
    if let Some(c) = &d.config_map {
        store.insert(
            c.metadata.name.clone().unwrap(),
            c.data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect(),
        );
    }
}

fn text(store: &Store, name: &str, key: &str) -> String {
    let data = store
        .get(name)
        .unwrap_or_else(|| panic!("the pod references {name}, which nothing provides"));
    let b = data
        .get(key)
        .unwrap_or_else(|| panic!("{name} has no key {key} (it has {:?})", data.keys()));
    String::from_utf8(b.clone()).unwrap()
}

/// The container's environment as the kubelet builds it: `envFrom` in order, then `env`
/// (which wins), with `$(VAR)` expanded from earlier variables.
fn environment(c: &Container, store: &Store) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in c.env_from.iter().flatten() {
        let name = from
            .config_map_ref
            .as_ref()
            .map(|r| r.name.clone())
            .or_else(|| from.secret_ref.as_ref().map(|r| r.name.clone()))
            .unwrap();
        let data = store
            .get(&name)
            .unwrap_or_else(|| panic!("envFrom {name}: nothing provides it"));
        for (k, v) in data {
            env.insert(
                format!("{}{k}", from.prefix.clone().unwrap_or_default()),
                String::from_utf8(v.clone()).unwrap(),
            );
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => expand(v, &env),
            (None, Some(src)) => {
                if let Some(r) = &src.secret_key_ref {
                    text(store, &r.name, &r.key)
                } else if let Some(r) = &src.config_map_key_ref {
                    text(store, &r.name, &r.key)
                } else if let Some(f) = &src.field_ref {
                    assert_eq!(f.field_path, "metadata.name", "{}", e.name);
                    POD.to_string()
                } else {
                    panic!("{}: unsupported valueFrom", e.name)
                }
            }
            (None, None) => String::new(),
        };
        env.insert(e.name.clone(), value);
    }
    env
}

fn expand(v: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = v.to_string();
    for (k, val) in env {
        out = out.replace(&format!("$({k})"), val);
    }
    out
}

/// The files the container sees: mount path → (file path → content), and the writable mounts.
struct Files {
    files: BTreeMap<PathBuf, Vec<u8>>,
    writable_dirs: Vec<PathBuf>,
}

fn files(pod: &PodSpec, c: &Container, store: &Store) -> Files {
    let mut out = Files {
        files: BTreeMap::new(),
        writable_dirs: Vec::new(),
    };
    for m in c.volume_mounts.iter().flatten() {
        let vol = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap_or_else(|| panic!("mount {} names no volume", m.name));
        let dir = PathBuf::from(&m.mount_path);
        if vol.empty_dir.is_some() {
            assert_ne!(m.read_only, Some(true), "{}", m.name);
            out.writable_dirs.push(dir);
            continue;
        }
        let (name, items) = if let Some(s) = &vol.secret {
            (s.secret_name.clone().unwrap(), s.items.clone())
        } else if let Some(cm) = &vol.config_map {
            (cm.name.clone(), cm.items.clone())
        } else {
            panic!("volume {}: unsupported source", vol.name)
        };
        let data = store
            .get(&name)
            .unwrap_or_else(|| panic!("volume {} mounts {name}, which nothing provides", vol.name));
        match items {
            Some(items) => {
                for i in items {
                    let b = data
                        .get(&i.key)
                        .unwrap_or_else(|| panic!("{name} has no key {}", i.key));
                    out.files.insert(dir.join(&i.path), b.clone());
                }
            }
            None => {
                for (k, b) in data {
                    out.files.insert(dir.join(k), b.clone());
                }
            }
        }
    }
    out
}

/// The gateway image's entrypoint, from the Dockerfile the image is built from.
fn entrypoint() -> Vec<String> {
    let dockerfile =
        std::fs::read_to_string(repo().join("Dockerfile")).expect("the repository's Dockerfile");
    dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ENTRYPOINT "))
        .map(|a| serde_json::from_str::<Vec<String>>(a).unwrap())
        .find(|a| a.first().is_some_and(|b| b.ends_with("/wardengate")))
        .expect("an ENTRYPOINT running wardengate")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One rendered gateway Deployment with what the operator meant by it.
struct Case {
    what: String,
    v: ValidCluster,
    /// A remote pool: checked by [`check_remote`] instead.
    remote: Option<ValidPool>,
    pool: bool,
    drain_seconds: i64,
    desired: Desired,
    store: Store,
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---")
        .map(|d| serde_yaml::from_str::<Value>(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn cases() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut clusters = Vec::new();
    let mut pools = Vec::new();
    for f in &files {
        for d in docs(f) {
            let file = f.file_name().unwrap().to_string_lossy().to_string();
            match d["kind"].as_str() {
                Some("WardengateCluster") => {
                    let c: WardengateCluster = serde_json::from_value(d).unwrap();
                    clusters.push((file, validate(&c).unwrap()));
                }
                Some("GatewayPool") => {
                    let p: GatewayPool = serde_json::from_value(d).unwrap();
                    pools.push((file, validate_pool(&p).unwrap()));
                }
                other => panic!("{file}: unexpected kind {other:?}"),
            }
        }
    }
    assert!(clusters.len() >= 4, "the examples hold clusters");
    assert!(!pools.is_empty(), "the examples hold a pool");
    let mut out = Vec::new();
    for (file, v) in &clusters {
        // Material as the controller generates it, and the credentials it reads.
        let material = SecretMaterial {
            internal: material::internal(),
            tls: if v.spec.tls.secret_name.is_some() {
                BTreeMap::new()
            } else {
                material::tls(
                    &v.name,
                    &material::serving_names(&names::service(&v.name), &v.namespace),
                )
                .unwrap()
            },
            ssh: material::ssh_keys().unwrap(),
            credentials: credentials(v),
        };
        let desired = cluster_objects(v, None, &material);
        let mut store = Store::new();
        user_secrets(v, &mut store);
        owned(&desired, &mut store);
        for (pfile, p) in pools
            .iter()
            .filter(|(_, p)| p.cluster_ref() == Some(v.name.as_str()) && p.namespace == v.namespace)
        {
            let version = pool_version(p.spec.version.as_deref(), Some(&v.spec.version)).unwrap();
            out.push(Case {
                what: format!("{pfile} (GatewayPool {}) with {file}", p.name),
                v: v.clone(),
                remote: None,
                pool: true,
                drain_seconds: p.spec.drain.timeout_seconds,
                desired: pool_objects(p, v, &version, None),
                // A pool's pods use its cluster's ConfigMap and Secrets.
                store: store.clone(),
            });
        }
        out.push(Case {
            what: format!("{file} (WardengateCluster {})", v.name),
            v: v.clone(),
            remote: None,
            pool: false,
            drain_seconds: v.spec.drain.timeout_seconds,
            desired,
            store,
        });
    }
    assert!(
        out.iter().any(|c| c.pool),
        "a pool is paired with its cluster"
    );
    // Remote pools stand alone: their pods reference the pool's own Secrets only (test values
    // here: a real certificate, a token, a CA).
    for (pfile, p) in pools.iter().filter(|(_, p)| p.remote.is_some()) {
        let r = p.remote.as_ref().unwrap();
        let mut store = Store::new();
        let pair = material::tls(&p.name, &["localhost".to_string()]).unwrap();
        for (k, b) in pair {
            store
                .entry(r.tls_secret.clone())
                .or_default()
                .insert(k, b.0);
        }
        store
            .entry(r.join_token.name.clone())
            .or_default()
            .insert(r.join_token.key.clone(), b"wgj_test-join-token\n".to_vec());
        if let Some(ca) = &r.ca {
            let ca_pem = store[&r.tls_secret]["ca.crt"].clone();
            store
                .entry(ca.name.clone())
                .or_default()
                .insert(ca.key.clone(), ca_pem);
        }
        out.push(Case {
            what: format!("{pfile} (remote GatewayPool {})", p.name),
            // Only for the statement timeout the remote gateway does not use.
            v: clusters[0].1.clone(),
            remote: Some(p.clone()),
            pool: true,
            drain_seconds: p.spec.drain.timeout_seconds,
            desired: remote_pool_objects(p, r, &r.version, None),
            store,
        });
    }
    assert!(
        out.iter().any(|c| c.remote.is_some()),
        "the examples hold a remote pool"
    );
    out
}

/// Runs the gateway's parser on `c` in a child process with exactly its environment, with the
/// container's files materialised under `root` (and the variables that name them pointed there).
fn parse_in_child(c: &Container, env: &BTreeMap<String, String>, root: &Path) -> Value {
    let mut argv = entrypoint();
    assert!(c.command.is_none(), "the image's entrypoint runs");
    argv.extend(c.args.clone().unwrap_or_default());
    let rooted = |v: &String| {
        if v.starts_with('/') {
            root.join(v.trim_start_matches('/')).display().to_string()
        } else {
            v.clone()
        }
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.clone(), rooted(v))))
        .env(CHILD, serde_json::to_string(&argv).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CONTRACT ").map(|(_, json)| json))
        .unwrap_or_else(|| {
            panic!(
                "the gateway's parser failed on {argv:?} with {env:#?}:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

#[test]
fn every_rendered_gateway_container_means_what_the_operator_intends() {
    if let Ok(argv) = std::env::var(CHILD) {
        return child(&argv);
    }
    let mut checked = 0;
    for case in cases() {
        for z in &case.desired.zones {
            let pod = z.deployment.spec.template.spec.clone().unwrap();
            for c in &pod.containers {
                check(&case, &pod, c);
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "{checked} containers checked");
}

/// Every variable `wardengate serve` reads.
fn serve_variables() -> BTreeSet<String> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    serve
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

fn check(case: &Case, pod: &PodSpec, c: &Container) {
    if let Some(p) = &case.remote {
        return check_remote(case, p, pod, c);
    }
    let what = &case.what;
    let v = &case.v;
    let env = environment(c, &case.store);
    let f = files(pod, c, &case.store);

    // Every `WG_*` variable the operator sets is one the gateway reads (a renamed variable
    // would otherwise fall back to the gateway's default silently).
    let known = serve_variables();
    assert!(known.contains("WG_ROLE") && known.len() > 10, "{known:?}");
    for name in env.keys().filter(|k| k.starts_with("WG_")) {
        assert!(
            known.contains(name),
            "{what}: the operator sets {name}, which `wardengate serve` does not read"
        );
    }

    // Files the variables name exist under the mounts; the admin token only for the control
    // plane.
    for var in ["WG_TLS_CERT", "WG_TLS_KEY", "WG_INTERNAL_KEY_FILE"] {
        let p = env
            .get(var)
            .unwrap_or_else(|| panic!("{what}: {var} unset"));
        assert!(
            f.files.contains_key(Path::new(p)),
            "{what}: {var}={p} is not a mounted file ({:?})",
            f.files.keys()
        );
    }
    match env.get("WG_ADMIN_TOKEN_FILE") {
        Some(p) => {
            assert!(
                !case.pool,
                "{what}: gateways never bootstrap an admin token"
            );
            assert!(
                f.files.contains_key(Path::new(p)),
                "{what}: {p} not mounted"
            );
        }
        None => assert!(case.pool, "{what}: the control plane needs its admin token"),
    }
    if case.pool {
        assert!(
            !f.files.keys().any(|p| p.ends_with("admin-token")),
            "{what}: a gateway pod must not see the admin token"
        );
    }
    // The admin socket and the spool live on writable volumes (the root file system is not).
    assert_eq!(
        c.security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem),
        Some(true)
    );
    for var in ["WG_ADMIN_SOCKET", "WG_RECORDINGS_SPOOL"] {
        if let Some(p) = env.get(var) {
            assert!(
                f.writable_dirs.iter().any(|d| Path::new(p).starts_with(d)),
                "{what}: {var}={p} is not on a writable volume ({:?})",
                f.writable_dirs
            );
        }
    }

    let root = tempfile::tempdir().unwrap();
    for (p, b) in &f.files {
        let at = root.path().join(p.strip_prefix("/").unwrap());
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, b).unwrap();
    }
    for d in &f.writable_dirs {
        std::fs::create_dir_all(root.path().join(d.strip_prefix("/").unwrap())).unwrap();
    }
    let got = parse_in_child(c, &env, root.path());

    // Role, ports (the ones the container declares), drain and timeouts.
    let role = if case.pool { "Gateway" } else { "All" };
    assert_eq!(got["role"], role, "{what}");
    let port = |name: &str| {
        c.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap()
            .container_port
    };
    assert_eq!(port("https"), HTTPS_PORT);
    assert_eq!(port("agent"), AGENT_PORT);
    assert_eq!(got["listen"], format!("0.0.0.0:{HTTPS_PORT}"), "{what}");
    assert_eq!(
        got["agent_listen"],
        format!("0.0.0.0:{AGENT_PORT}"),
        "{what}"
    );
    assert_eq!(got["drain_timeout_s"], case.drain_seconds, "{what}");
    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone())
        .unwrap();
    assert_eq!(
        pre_stop.last().unwrap(),
        &format!("{}s", case.drain_seconds),
        "{what}: the preStop drain and SIGTERM's drain agree"
    );
    assert!(case.drain_seconds < pod.termination_grace_period_seconds.unwrap());
    assert_eq!(
        got["statement_timeout_ms"],
        v.statement_timeout.as_millis() as u64,
        "{what}"
    );
    assert_eq!(
        got["admin_socket"],
        root.path()
            .join(ADMIN_SOCKET.trim_start_matches('/'))
            .display()
            .to_string(),
        "{what}"
    );
    assert_eq!(got["admin_token"], !case.pool, "{what}");
    assert_eq!(got["replica_id"], POD, "{what}");

    // Postgres: the URL the operator meant, credentials decoded.
    let db = &got["database"];
    let pg = &v.spec.postgres;
    if let Some(p) = &pg.patroni {
        assert_eq!(db["host"], p.primary_host.as_str(), "{what}");
        assert_eq!(db["port"], p.port, "{what}");
        assert_eq!(db["database"], p.database.as_str(), "{what}");
        assert_eq!(db["user"], DB_USER, "{what}");
        let debug = db["debug"].as_str().unwrap();
        assert!(
            debug.contains(&format!("password: Some({NASTY:?})")),
            "{what}: the password is not decoded back to the Secret's: {debug}"
        );
        if let Some(m) = &p.ssl_mode {
            assert_eq!(
                db["ssl_mode"].as_str().unwrap().to_lowercase(),
                m.replace('-', ""),
                "{what}"
            );
        }
    } else if pg.external.is_some() {
        assert_eq!(
            (&db["host"], &db["port"], &db["user"], &db["database"]),
            (
                &json!("db.example.com"),
                &json!(6543),
                &json!("ext"),
                &json!("wg_ext")
            ),
            "{what}"
        );
    } else if let Some(cnpg) = &pg.cloud_native_pg {
        assert_eq!(
            db["host"],
            format!("{}-rw.{}", cnpg.cluster_name, v.namespace),
            "{what}"
        );
        assert_eq!(db["user"], "app", "{what}");
    } else {
        panic!("{what}: no Postgres source");
    }

    // Redis: mode, hosts, TLS and the decoded password.
    let r = &got["redis"];
    let spec = &v.spec.redis;
    let (mode, hosts) = match spec.mode {
        RedisMode::Standalone => ("standalone", spec.hosts[..1].to_vec()),
        RedisMode::Sentinel => ("sentinel", spec.sentinels.clone()),
        RedisMode::Cluster => ("cluster", spec.hosts.clone()),
    };
    assert_eq!(r["mode"], mode, "{what}");
    assert_eq!(r["hosts"], json!(hosts), "{what}");
    assert_eq!(r["tls"], spec.tls, "{what}");
    if spec.mode == RedisMode::Sentinel {
        assert_eq!(r["master"], spec.master_name.as_deref().unwrap(), "{what}");
    }
    let password = spec.password_secret_ref.as_ref().map(|_| NASTY);
    assert_eq!(r["password"], json!(password), "{what}");

    // Recordings: destination, spool on its volume, credentials as variables.
    match &v.spec.recordings {
        Some(rec) => {
            assert_eq!(got["recordings_url"], rec.url.as_str(), "{what}");
            assert_eq!(
                got["recordings_spool"],
                root.path()
                    .join(SPOOL_DIR.trim_start_matches('/'))
                    .display()
                    .to_string(),
                "{what}"
            );
            if rec.credentials_secret_ref.is_some() {
                assert_eq!(got["aws_key"], "AKIATEST", "{what}");
            }
        }
        None => assert_eq!(got["recordings_url"], Value::Null, "{what}"),
    }

    // Terminating SSH: on the control plane when the spec asks for it, listening on the port
    // the container declares, with the host key of the generated SSH Secret; never on a pool.
    match v.spec.ssh.as_ref().filter(|_| !case.pool) {
        Some(ssh) => {
            assert_eq!(got["ssh_listen"], format!("0.0.0.0:{}", ssh.port), "{what}");
            assert_eq!(port("ssh"), ssh.port, "{what}");
            let generated = root.path().join("generated-host-key");
            std::fs::write(
                &generated,
                text(
                    &case.store,
                    &names::ssh_secret(&v.name),
                    material::SSH_HOST_KEY,
                ),
            )
            .unwrap();
            let key = wardengate::ssh::keys::read_key(&generated).unwrap();
            assert_eq!(
                got["ssh_host_key"],
                wardengate::ssh::keys::public_line(key.public_key()),
                "{what}: the gateway reads the host key the operator generated"
            );
        }
        None => {
            assert_eq!(got["ssh_listen"], Value::Null, "{what}: no SSH front end");
            assert!(
                !c.ports
                    .iter()
                    .flatten()
                    .any(|p| p.name.as_deref() == Some("ssh")),
                "{what}: no SSH port"
            );
        }
    }
}

/// A remote gateway: the variables it gets are ones `wardengate serve` reads, its files are
/// mounted, and the gateway's parser turns its command line into the agent link the pool names,
/// with no database or Redis and no cluster material.
fn check_remote(case: &Case, p: &ValidPool, pod: &PodSpec, c: &Container) {
    let what = &case.what;
    let r = p.remote.as_ref().unwrap();
    let env = environment(c, &case.store);
    let f = files(pod, c, &case.store);
    let known = serve_variables();
    for name in env.keys().filter(|k| k.starts_with("WG_")) {
        assert!(
            known.contains(name),
            "{what}: the operator sets {name}, which `wardengate serve` does not read"
        );
    }
    for gone in [
        "WG_DATABASE_URL",
        "WG_REDIS_URL",
        "WG_INTERNAL_KEY_FILE",
        "WG_ADMIN_TOKEN_FILE",
        "WG_OBSERVER_TOKEN_FILE",
        "WG_RECORDING_KEY_FILE",
    ] {
        assert!(
            !env.contains_key(gone),
            "{what}: a remote gateway gets {gone}"
        );
    }
    for (var, file) in [
        (
            "WG_TLS_CERT",
            env.get("WG_TLS_CERT").cloned().unwrap_or_default(),
        ),
        (
            "WG_TLS_KEY",
            env.get("WG_TLS_KEY").cloned().unwrap_or_default(),
        ),
        ("--join-token-file", JOIN_TOKEN_FILE.to_string()),
        ("--control-plane-ca", CONTROL_PLANE_CA_FILE.to_string()),
    ] {
        assert!(
            f.files.contains_key(Path::new(&file)),
            "{what}: {var}={file} is not a mounted file ({:?})",
            f.files.keys()
        );
    }
    assert!(
        f.writable_dirs
            .iter()
            .any(|d| d == Path::new(AGENT_STATE_DIR)),
        "{what}: the agent state dir is not writable ({:?})",
        f.writable_dirs
    );
    assert!(
        !f.files
            .keys()
            .any(|p| p.starts_with("/etc/wardengate/internal")),
        "{what}: a remote gateway mounts no cluster material"
    );
    let root = tempfile::tempdir().unwrap();
    for (p, b) in &f.files {
        let at = root.path().join(p.strip_prefix("/").unwrap());
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, b).unwrap();
    }
    for d in &f.writable_dirs {
        std::fs::create_dir_all(root.path().join(d.strip_prefix("/").unwrap())).unwrap();
    }
    // The command line's file paths are not variables: point them under the root too.
    let mut c = c.clone();
    c.args = c.args.map(|a| {
        a.into_iter()
            .map(|x| {
                if x.starts_with("/etc/") || x.starts_with("/var/") {
                    root.path()
                        .join(x.trim_start_matches('/'))
                        .display()
                        .to_string()
                } else {
                    x
                }
            })
            .collect()
    });
    let got = parse_in_child(&c, &env, root.path());
    assert_eq!(got["remote"], true, "{what}");
    assert_eq!(
        got["rendered"],
        json!({"database_url": null, "redis_url": null, "internal_key_file": null}),
        "{what}: no database, Redis or internal key reaches a remote gateway"
    );
    // Today's gateway still asks for its database first; nothing else is missing.
    assert!(
        got["gap"].is_null() || got["gap"] == "--database-url / WG_DATABASE_URL",
        "{what}: {}",
        got["gap"]
    );
    assert_eq!(got["role"], "Gateway", "{what}");
    assert_eq!(got["listen"], format!("0.0.0.0:{HTTPS_PORT}"), "{what}");
    assert_eq!(
        got["control_plane"].as_str().unwrap().trim_end_matches('/'),
        r.url,
        "{what}"
    );
    assert_eq!(got["region"], r.region.as_str(), "{what}");
    assert_eq!(got["control_plane_ca"], r.ca.is_some(), "{what}");
    let under = |p: &str| {
        root.path()
            .join(p.trim_start_matches('/'))
            .display()
            .to_string()
    };
    assert_eq!(got["join_token_file"], under(JOIN_TOKEN_FILE), "{what}");
    assert_eq!(got["state_dir"], under(AGENT_STATE_DIR), "{what}");
    assert_eq!(got["drain_timeout_s"], case.drain_seconds, "{what}");
    assert_eq!(got["admin_socket"], under(ADMIN_SOCKET), "{what}");
    assert_eq!(got["admin_token"], false, "{what}");
    assert_eq!(got["replica_id"], POD, "{what}");
    assert_eq!(
        c.ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect::<Vec<_>>(),
        [HTTPS_PORT],
        "{what}"
    );
}
