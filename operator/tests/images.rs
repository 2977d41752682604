//! The images and the manifests that run them agree, checked without a container engine:
//!
//! - the Dockerfile builds one target per image the README's build commands name (tagged with
//!   the crate version), and every binary a final stage copies is one the build stage's
//!   `cargo build` produces;
//! - for every container in `config/` and in every rendered example, the effective command line
//!   (the image's ENTRYPOINT/CMD overridden by the container's command/args, as Kubernetes does)
//!   starts a binary that image contains, and that binary — built by cargo — accepts those
//!   arguments (run with `--help` appended); the same for `preStop` and exec probes; every
//!   `WG_*` variable the container gets is one that binary reads; HTTP probes name a declared
//!   port;
//! - the CRD's default image is the gateway image, and `.dockerignore` keeps build output, tools,
//!   the dev server's data (an admin token) and `.git` out of the build context.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use support::dockerfile::{self, Source, Stage};
use support::kustomize;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `docker build … --target T … -t REPO:TAG` lines of `text`: `(target, repo, tag)`.
fn build_commands(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(|l| l.trim_start_matches(['#', ' ']))
        .filter(|l| l.starts_with("docker build "))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
                .map(|s| s.to_string())
        };
        let (Some(target), Some(image)) = (after("--target"), after("-t")) else {
            panic!("`{line}`: a build command names its --target and its -t image");
        };
        let (repo, tag) = image.rsplit_once(':').unwrap();
        out.push((target, repo.to_string(), tag.to_string()));
    }
    out
}

/// The Dockerfile's stages and which target each image repository is built from.
struct Images {
    stages: Vec<Stage>,
    /// Repository → target stage.
    targets: BTreeMap<String, String>,
}

fn images() -> Images {
    let stages = dockerfile::parse(&read("Dockerfile"));
    let readme = build_commands(&read("README.md"));
    let mut targets = BTreeMap::new();
    for (target, repo, tag) in &readme {
        assert_eq!(
            tag, VERSION,
            "README: `{repo}:{tag}` should carry the crate version {VERSION}"
        );
        dockerfile::stage(&stages, target);
        targets.insert(repo.clone(), target.clone());
    }
    assert!(
        targets.len() >= 2,
        "README documents building both images (gateway and operator): {readme:?}"
    );
    assert_eq!(
        build_commands(&read("Dockerfile")),
        readme,
        "the Dockerfile's header and the README show the same build commands"
    );
    Images { stages, targets }
}

/// Binary name → package, for every binary of the workspace.
fn cargo_bins() -> BTreeMap<String, String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut bins = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            if t["kind"].as_array().unwrap().iter().any(|k| k == "bin") {
                bins.insert(
                    t["name"].as_str().unwrap().to_string(),
                    p["name"].as_str().unwrap().to_string(),
                );
            }
        }
    }
    bins
}

/// The cargo binary an image file is, when `src` is a binary its build stage's `cargo build`
/// produces (`<workdir>/target/<profile>/<bin>` of a package that build selects).
fn built_by_cargo(stages: &[Stage], src: &Source) -> Result<String, String> {
    let from = src
        .from
        .as_deref()
        .ok_or_else(|| format!("{} is copied from the build context, not built", src.path))?;
    let build = dockerfile::stage(stages, from);
    let bins = cargo_bins();
    let bin = src.path.rsplit('/').next().unwrap_or_default().to_string();
    let package = bins
        .get(&bin)
        .ok_or_else(|| format!("{}: no workspace binary is named `{bin}`", src.path))?;
    for run in build.runs.iter().filter(|r| r.contains("cargo build")) {
        let words: Vec<&str> = run.split_whitespace().collect();
        let packages: BTreeSet<&str> = words
            .windows(2)
            .filter(|w| w[0] == "-p" || w[0] == "--package")
            .map(|w| w[1])
            .collect();
        let profile = if words.contains(&"--release") {
            "release"
        } else {
            "debug"
        };
        let path = format!(
            "{}/target/{profile}/{bin}",
            build.workdir.trim_end_matches('/')
        );
        if packages.contains(package.as_str()) && path == src.path {
            return Ok(bin);
        }
    }
    Err(format!(
        "{}: stage `{from}` has no `cargo build` of package {package} that leaves it there (runs: {:?})",
        src.path, build.runs
    ))
}

/// The cargo-built binary `name`: this crate's own from cargo (`CARGO_BIN_EXE_*`), the
/// gateway's built here first (`cargo build -p wardengate --bins`, a no-op when fresh) into the
/// same target directory and profile as this test.
fn binary(name: &str) -> PathBuf {
    if name == "wardengate-operator" {
        return PathBuf::from(env!("CARGO_BIN_EXE_wardengate-operator"));
    }
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // <target>/<profile>/deps/images-<hash>
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev".to_string(),
            other => other.to_string(),
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "--bins", "-p", "wardengate", "--profile", &profile])
            .arg("--target-dir")
            .arg(profile_dir.parent().unwrap())
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p wardengate --bins failed");
        profile_dir
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// One container as a manifest declares it, with the environment it gets.
#[derive(Debug, Clone)]
struct Container {
    /// Where it comes from, for messages.
    origin: String,
    image: String,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    /// Literal variables from `env` and from `envFrom` ConfigMaps (Secret-backed ones by name,
    /// with an empty value).
    env: BTreeMap<String, String>,
    /// Declared ports: name → number.
    ports: BTreeMap<String, i64>,
    pre_stop: Option<Vec<String>>,
    /// `(kind, probe)`.
    probes: Vec<(String, Value)>,
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
}

/// Every container of every workload in `objs` (ConfigMaps in `objs` feed `envFrom`).
fn containers(origin: &str, objs: &[Value]) -> Vec<Container> {
    let config_maps: BTreeMap<&str, &Value> = objs
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .map(|o| (o["metadata"]["name"].as_str().unwrap(), &o["data"]))
        .collect();
    let mut out = Vec::new();
    for o in objs {
        let pod = match o["kind"].as_str() {
            Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job") => &o["spec"]["template"],
            Some("Pod") => o,
            _ => continue,
        };
        for c in pod["spec"]["containers"].as_array().unwrap() {
            let mut env = BTreeMap::new();
            for from in c["envFrom"].as_array().into_iter().flatten() {
                if let Some(cm) = from["configMapRef"]["name"].as_str() {
                    let data = config_maps.get(cm).unwrap_or_else(|| {
                        panic!("{origin}: envFrom names ConfigMap {cm}, which is not rendered")
                    });
                    for (k, v) in data.as_object().into_iter().flatten() {
                        env.insert(k.clone(), v.as_str().unwrap().to_string());
                    }
                }
            }
            for e in c["env"].as_array().into_iter().flatten() {
                env.insert(
                    e["name"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap_or_default().to_string(),
                );
            }
            let probes = ["startupProbe", "livenessProbe", "readinessProbe"]
                .iter()
                .filter(|k| !c[**k].is_null())
                .map(|k| (k.to_string(), c[*k].clone()))
                .collect();
            out.push(Container {
                origin: format!(
                    "{origin}: {}/{} container {}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap(),
                    c["name"].as_str().unwrap()
                ),
                image: c["image"].as_str().unwrap().to_string(),
                command: strings(&c["command"]),
                args: strings(&c["args"]),
                env,
                ports: c["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            p["name"].as_str()?.to_string(),
                            p["containerPort"].as_i64().unwrap(),
                        ))
                    })
                    .collect(),
                pre_stop: strings(&c["lifecycle"]["preStop"]["exec"]["command"]),
                probes,
            });
        }
    }
    out
}

/// Kubernetes' `$(VAR)` expansion of command and args (unknown references stay as written).
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// What Kubernetes runs: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD.
fn effective(stage: &Stage, c: &Container) -> Vec<String> {
    let argv = match (&c.command, &c.args) {
        (Some(cmd), Some(args)) => [cmd.clone(), args.clone()].concat(),
        (Some(cmd), None) => cmd.clone(),
        (None, Some(args)) => [stage.entrypoint.clone().unwrap_or_default(), args.clone()].concat(),
        (None, None) => [
            stage.entrypoint.clone().unwrap_or_default(),
            stage.cmd.clone().unwrap_or_default(),
        ]
        .concat(),
    };
    argv.iter().map(|a| expand(a, &c.env)).collect()
}

/// Runs `argv` as `stage` would (its binary resolved in the image, the cargo build of it run)
/// with `--help` appended. Returns the help text.
fn run_help(
    images: &Images,
    stage: &Stage,
    argv: &[String],
    c: &Container,
    what: &str,
) -> Result<String, String> {
    let argv0 = argv
        .first()
        .ok_or_else(|| format!("{}: {what} is empty", c.origin))?;
    let (path, src) = dockerfile::resolve(stage, argv0).ok_or_else(|| {
        format!(
            "{}: {what} runs `{argv0}`, which image {} does not contain (it holds {:?})",
            c.origin,
            c.image,
            stage.files.keys().collect::<Vec<_>>()
        )
    })?;
    let bin = built_by_cargo(&images.stages, src).map_err(|e| format!("{}: {e}", c.origin))?;
    let out = Command::new(binary(&bin))
        .args(&argv[1..])
        .arg("--help")
        .env_clear()
        .envs(&c.env)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!(
            "{}: {what} `{}` ({path}) does not parse: `{} --help` exits {}:\n{text}",
            c.origin,
            argv.join(" "),
            argv.join(" "),
            out.status
        ));
    }
    Ok(text)
}

/// Every check of one container; the first failure, or a line per thing checked.
fn check(images: &Images, c: &Container) -> Result<Vec<String>, String> {
    let (repo, tag) = c
        .image
        .rsplit_once(':')
        .ok_or_else(|| format!("{}: image {} has no tag", c.origin, c.image))?;
    let target = images.targets.get(repo).ok_or_else(|| {
        format!(
            "{}: image {repo} is not one the Dockerfile builds (README: {:?})",
            c.origin, images.targets
        )
    })?;
    if tag != VERSION {
        return Err(format!(
            "{}: image tag {tag} is not the crate version {VERSION}",
            c.origin
        ));
    }
    let stage = dockerfile::stage(&images.stages, target);
    let mut done = Vec::new();
    let argv = effective(stage, c);
    let help = run_help(images, stage, &argv, c, "the container command")?;
    done.push(format!("{}: `{}`", c.origin, argv.join(" ")));
    let reads: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next())
        .collect();
    for name in c.env.keys().filter(|n| n.starts_with("WG_")) {
        if !reads.contains(&name.as_str()) {
            return Err(format!(
                "{}: the container sets {name}, which `{}` does not read (it reads {reads:?})",
                c.origin,
                argv.join(" ")
            ));
        }
    }
    if let Some(pre) = &c.pre_stop {
        run_help(images, stage, pre, c, "preStop")?;
        done.push(format!("{}: preStop `{}`", c.origin, pre.join(" ")));
    }
    for (kind, p) in &c.probes {
        if let Some(cmd) = strings(&p["exec"]["command"]) {
            run_help(images, stage, &cmd, c, kind)?;
        }
        for action in ["httpGet", "tcpSocket", "grpc"] {
            let port = &p[action]["port"];
            let ok = match port {
                Value::String(name) => c.ports.contains_key(name),
                Value::Number(n) => c.ports.values().any(|p| Some(*p) == n.as_i64()),
                _ => true,
            };
            if !ok {
                return Err(format!(
                    "{}: {kind} uses port {port}, which the container does not declare ({:?})",
                    c.origin, c.ports
                ));
            }
        }
        done.push(format!("{}: {kind}", c.origin));
    }
    Ok(done)
}

fn config_containers() -> Vec<Container> {
    let objs: Vec<Value> = kustomize::build(&root().join("config/default"))
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect();
    containers("config/default", &objs)
}

fn example_containers() -> Vec<Container> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                format!("examples/{}", p.file_name().unwrap().to_string_lossy()),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    // The pool example renders only together with the cluster it serves.
    files.push((
        "examples/three-zone-ha.yaml + gateway-pool.yaml".into(),
        format!(
            "{}\n---\n{}",
            read("examples/three-zone-ha.yaml"),
            read("examples/gateway-pool.yaml")
        ),
    ));
    let mut out = Vec::new();
    for (name, text) in files {
        let rendered =
            wardengate_operator::render::render(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let objs: Vec<Value> = rendered
            .objects
            .iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect();
        out.extend(containers(&name, &objs));
    }
    out
}

#[test]
fn every_container_in_config_and_the_examples_runs_what_its_image_holds() {
    let images = images();
    let all: Vec<Container> = config_containers()
        .into_iter()
        .chain(example_containers())
        .collect();
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    for c in &all {
        match check(&images, c) {
            Ok(done) => checked.extend(done),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let used: BTreeSet<&str> = all.iter().map(|c| c.image.as_str()).collect();
    assert_eq!(
        used.len(),
        images.targets.len(),
        "both images are used by some manifest: {used:?}"
    );
    assert!(
        checked.iter().filter(|l| l.contains("preStop")).count() >= 4,
        "{checked:#?}"
    );
    println!("{}", checked.join("\n"));
}

/// The shipped operator Deployment, and the checks above applied to deliberately broken
/// copies of it and of a gateway container: each must be refused.
#[test]
fn the_check_refuses_commands_an_image_cannot_run() {
    let images = images();
    let operator = config_containers()
        .into_iter()
        .find(|c| c.image.contains("operator"))
        .unwrap();
    check(&images, &operator).unwrap();
    let gateway_repo = images
        .targets
        .iter()
        .find(|(_, t)| *t == "gateway")
        .map(|(r, _)| r.clone())
        .unwrap();

    // Issue 9's failure: the operator's args on the gateway image (`wardengate run …`).
    let mut wrong_image = operator.clone();
    wrong_image.image = format!("{gateway_repo}:{VERSION}");
    let e = check(&images, &wrong_image).unwrap_err();
    assert!(e.contains("wardengate run"), "{e}");

    // An image the Dockerfile does not build.
    let mut unknown = operator.clone();
    unknown.image = format!("wardengate/wardengate:{VERSION}");
    assert!(check(&images, &unknown).is_err());

    let gateway = example_containers()
        .into_iter()
        .find(|c| c.image.starts_with(&gateway_repo))
        .unwrap();
    check(&images, &gateway).unwrap();

    // A flag the binary does not have.
    let mut bad_flag = gateway.clone();
    bad_flag.args = Some(vec!["serve".into(), "--no-such-flag".into()]);
    assert!(check(&images, &bad_flag).is_err());

    // A preStop hook whose binary is in the other image.
    let mut hook = operator.clone();
    hook.pre_stop = Some(vec!["wgctl".into(), "system".into(), "status".into()]);
    let e = check(&images, &hook).unwrap_err();
    assert!(e.contains("does not contain"), "{e}");

    // A misspelt variable.
    let mut typo = gateway.clone();
    typo.env.insert("WG_DRAIN_TIMOUT".into(), "10s".into());
    let e = check(&images, &typo).unwrap_err();
    assert!(e.contains("WG_DRAIN_TIMOUT"), "{e}");

    // A probe on a port the container does not declare.
    let mut probe = gateway.clone();
    probe.probes[0].1["httpGet"]["port"] = Value::from("admin");
    assert!(check(&images, &probe).is_err());
}

#[test]
fn the_dockerfile_reader_follows_docker_inheritance_rules() {
    let stages = dockerfile::parse(
        "FROM rust AS build\nWORKDIR /src\nRUN cargo build \\\n  --release -p a\n\
         # a comment\nFROM debian AS base\nENTRYPOINT [\"/x\"]\nCMD [\"serve\"]\n\
         FROM base AS child\nCOPY --from=build /src/target/release/a /src/target/release/b /usr/local/bin/\n\
         ENTRYPOINT [\"/usr/local/bin/a\"]\nFROM base AS keeps\nCOPY --from=build /o/c /opt/c\nCMD run\n",
    );
    let build = dockerfile::stage(&stages, "build");
    assert_eq!(build.runs, ["cargo build  --release -p a"]);
    let child = dockerfile::stage(&stages, "child");
    assert_eq!(child.cmd, None, "a new ENTRYPOINT resets the inherited CMD");
    assert_eq!(
        dockerfile::resolve(child, "b").unwrap().0,
        "/usr/local/bin/b"
    );
    assert!(dockerfile::resolve(child, "c").is_none());
    let keeps = dockerfile::stage(&stages, "keeps");
    assert_eq!(keeps.entrypoint.as_deref(), Some(&["/x".to_string()][..]));
    assert!(keeps.files.contains_key("/opt/c"));
    assert_eq!(keeps.shell_form, ["CMD run"]);
}

#[test]
fn the_dockerfile_uses_exec_form_and_builds_every_binary_it_ships() {
    let images = images();
    for target in images.targets.values() {
        let s = dockerfile::stage(&images.stages, target);
        assert!(
            s.shell_form.is_empty(),
            "{target}: shell form ignores the container's args: {:?}",
            s.shell_form
        );
        assert!(s.entrypoint.is_some(), "{target} has an ENTRYPOINT");
        for (path, src) in &s.files {
            built_by_cargo(&images.stages, src).unwrap_or_else(|e| panic!("{target}: {path}: {e}"));
        }
    }
    let gateway = dockerfile::stage(&images.stages, "gateway");
    for bin in ["wardengate", "wgctl"] {
        assert!(
            dockerfile::resolve(gateway, bin).is_some(),
            "gateway: {bin}"
        );
    }
    let operator = dockerfile::stage(&images.stages, "operator");
    assert!(dockerfile::resolve(operator, "wardengate-operator").is_some());
    assert!(
        dockerfile::resolve(operator, "wardengate").is_none(),
        "the operator image holds the operator only"
    );
}

#[test]
fn the_crd_default_image_and_config_manager_name_the_images_the_dockerfile_builds() {
    let images = images();
    assert_eq!(
        images
            .targets
            .get(wardengate_crds::GATEWAY_IMAGE)
            .map(String::as_str),
        Some("gateway")
    );
    assert_eq!(
        images
            .targets
            .get(wardengate_crds::OPERATOR_IMAGE)
            .map(String::as_str),
        Some("operator")
    );
    let spec: wardengate_crds::WardengateClusterSpec = serde_json::from_value(serde_json::json!({
        "version": VERSION,
        "postgres": {"external": {"urlSecretRef": {"name": "db", "key": "url"}}},
        "redis": {"hosts": ["redis:6379"]},
    }))
    .unwrap();
    assert_eq!(spec.image, wardengate_crds::GATEWAY_IMAGE);
    let crds: Vec<Value> = serde_yaml::Deserializer::from_str(&read("config/crd/crds.yaml"))
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let cluster = crds
        .iter()
        .find(|c| c["spec"]["names"]["kind"] == "WardengateCluster")
        .unwrap();
    assert_eq!(
        cluster["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["image"]["default"],
        wardengate_crds::GATEWAY_IMAGE
    );
    let manager = config_containers();
    assert_eq!(
        manager.iter().map(|c| c.image.as_str()).collect::<Vec<_>>(),
        [format!("{}:{VERSION}", wardengate_crds::OPERATOR_IMAGE)]
    );
}

#[test]
fn dockerignore_keeps_build_output_tools_dev_data_and_git_out_of_the_context() {
    let norm = |l: &str| {
        l.trim()
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string()
    };
    let patterns: BTreeSet<String> = read(".dockerignore")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(norm)
        .collect();
    for must in ["target", ".tools", ".wardengate-dev", ".git"] {
        assert!(
            patterns.contains(must),
            ".dockerignore lacks {must}: {patterns:?}"
        );
    }
    for ignored in read(".gitignore")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        assert!(
            patterns.contains(&norm(ignored)),
            ".gitignore has {ignored}, .dockerignore does not"
        );
    }
    // Nothing the build needs: the workspace manifests and every member.
    let manifest: toml_lite::Members = toml_lite::members(&read("Cargo.toml"));
    let needed: Vec<String> = ["Cargo.toml", "Cargo.lock"]
        .iter()
        .map(|s| s.to_string())
        .chain(manifest)
        .collect();
    for n in &needed {
        for p in &patterns {
            assert!(
                !(p == n || n.starts_with(&format!("{p}/")) || p == "*" || p == "**"),
                ".dockerignore pattern {p} excludes {n}, which the build needs"
            );
        }
    }
}

/// The `members` list of the workspace manifest (no TOML parser in this crate's tree).
mod toml_lite {
    pub type Members = Vec<String>;

    pub fn members(manifest: &str) -> Members {
        let line = manifest
            .lines()
            .find(|l| l.trim_start().starts_with("members"))
            .expect("workspace members");
        let list = line.split_once('[').unwrap().1.split_once(']').unwrap().0;
        list.split(',')
            .map(|m| m.trim().trim_matches('"').to_string())
            .filter(|m| !m.is_empty())
            .collect()
    }
}
