//! Attacks on recordings, against a real replica (real TLS, Postgres, Redis, OpenSSH): a live
//! and an ended recording are each tampered with in every way an object-store writer can (edit
//! a chunk's bytes, edit a chunk index, delete a middle chunk, add chunk N+1, reorder two
//! chunks, place a shadow `ID/a/meta.json`, delete the manifest, replace it with one MACed with
//! the shared internal key, forge one with another Ed25519 key), and `wgctl recordings verify`,
//! on the server and `--offline`, must name the problem and the object; the untouched recording
//! verifies (live: chain intact, not signed yet; ended: OK).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use wardengate::recording::chain::link_hash;
use wardengate::recording::verify::{LegacyManifest, chunk_name};
use wardengate::recording::{Entry, Manifest, ManifestKeys, Recordings};
use wardengate::signing::Keyring;
use wardengate::wire::{Finding, Verification};
use wardengate_e2e::{Fleet, proxy_command};
use wardengate_testkit::wait_until;

struct Rig {
    fleet: Fleet,
    public_keys: PathBuf,
    scratch: PathBuf,
}

impl Rig {
    fn server(&self, id: &str) -> Verification {
        let out = self
            .fleet
            .wgctl(&["-o", "json", "recordings", "verify", id])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn offline(&self, dir: &Path) -> Verification {
        let out = self
            .fleet
            .wgctl(&[
                "-o",
                "json",
                "recordings",
                "verify",
                "--offline",
                &dir.display().to_string(),
                "--public-key",
                &self.public_keys.display().to_string(),
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn count(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("chunk-") && n.ends_with(ext)
                })
                .count()
        })
        .unwrap_or(0)
}

/// A manifest of what `dir` holds now (what a forger would sign).
fn manifest_of(id: &str, dir: &Path) -> Manifest {
    let mut objects = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_file() && name != "manifest.json" {
            let b = std::fs::read(e.path()).unwrap();
            objects.push(Entry {
                name,
                size: b.len() as u64,
                sha256: link_hash(&b),
            });
        }
    }
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    Manifest {
        session: id.into(),
        complete: objects.iter().any(|e| e.name == "end.json"),
        objects,
    }
}

type Check = fn(&Finding, bool, u64) -> bool;
/// Tampers with the recording directory of session `id` that holds `n` chunks.
type Tamper = Box<dyn Fn(&str, &Path, u64)>;

struct Attack {
    name: &'static str,
    /// Tampers with the recording directory `dir` of session `id` with `n` chunks.
    apply: Tamper,
    /// Must hold for some finding of the server's report: (finding, ended, n).
    server: Check,
    /// Must hold for some finding of the offline report.
    offline: Check,
}

fn attacks(internal_keys: PathBuf) -> Vec<Attack> {
    let edit_json = |path: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
    };
    vec![
        Attack {
            name: "edit a chunk's bytes",
            apply: Box::new(|_, dir, _| {
                let p = dir.join(chunk_name(2, "bin"));
                let mut b = std::fs::read(&p).unwrap();
                b[0] ^= 0x80;
                std::fs::write(&p, b).unwrap();
            }),
            server: |f, _, _| matches!(f, Finding::IndexMismatch { key } if key == "chunk-000002.bin"),
            offline: |f, _, _| matches!(f, Finding::IndexMismatch { key } if key == "chunk-000002.bin"),
        },
        Attack {
            name: "edit a chunk index",
            apply: Box::new(move |_, dir, _| {
                edit_json(&dir.join(chunk_name(2, "json")), &|v| {
                    let at = v["frames"][0]["at_ms"].as_i64().unwrap();
                    v["frames"][0]["at_ms"] = (at + 1).into();
                })
            }),
            server: |f, _, _| matches!(f, Finding::SealInvalid { key, .. } if key == "chunk-000002.json"),
            offline: |f, _, _| matches!(f, Finding::ChainBroken { key } if key == "chunk-000003.json"),
        },
        Attack {
            name: "delete a middle chunk",
            apply: Box::new(|_, dir, _| {
                std::fs::remove_file(dir.join(chunk_name(2, "json"))).unwrap();
                std::fs::remove_file(dir.join(chunk_name(2, "bin"))).unwrap();
            }),
            server: |f, _, _| matches!(f, Finding::Missing { key } if key == "chunk-000002.json"),
            offline: |f, _, _| matches!(f, Finding::Missing { key } if key == "chunk-000002.json"),
        },
        Attack {
            name: "add chunk N+1",
            apply: Box::new(|_, dir, n| {
                for ext in ["json", "bin"] {
                    std::fs::copy(
                        dir.join(chunk_name(n, ext)),
                        dir.join(chunk_name(n + 1, ext)),
                    )
                    .unwrap();
                }
            }),
            server: added,
            offline: added,
        },
        Attack {
            name: "reorder two chunks",
            apply: Box::new(|_, dir, _| {
                for ext in ["json", "bin"] {
                    let (a, b) = (dir.join(chunk_name(2, ext)), dir.join(chunk_name(3, ext)));
                    let tmp = dir.join("swap.tmp");
                    std::fs::rename(&a, &tmp).unwrap();
                    std::fs::rename(&b, &a).unwrap();
                    std::fs::rename(&tmp, &b).unwrap();
                }
            }),
            server: |f, _, _| matches!(f, Finding::OutOfSequence { key, expected_seq: 2 } if key == "chunk-000002.json"),
            offline: |f, _, _| matches!(f, Finding::OutOfSequence { key, expected_seq: 2 } if key == "chunk-000002.json"),
        },
        Attack {
            name: "place a shadow a/meta.json",
            apply: Box::new(|_, dir, _| {
                std::fs::create_dir_all(dir.join("a")).unwrap();
                let meta = std::fs::read_to_string(dir.join("meta.json")).unwrap();
                std::fs::write(dir.join("a/meta.json"), meta.replace("ssh", "xsh")).unwrap();
            }),
            server: |f, _, _| matches!(f, Finding::NestedKey { key } if key == "a/meta.json"),
            offline: |f, _, _| matches!(f, Finding::NestedKey { key } if key == "a/meta.json"),
        },
        Attack {
            name: "delete the manifest",
            apply: Box::new(|_, dir, _| {
                let _ = std::fs::remove_file(dir.join("manifest.json"));
            }),
            server: |f, ended, _| {
                if ended {
                    matches!(f, Finding::ManifestDeleted { .. })
                } else {
                    matches!(f, Finding::NotSignedYet { .. })
                }
            },
            offline: |f, _, _| matches!(f, Finding::NotSignedYet { .. }),
        },
        Attack {
            name: "replace the manifest with one MACed by the shared internal key",
            apply: Box::new(move |id, dir, _| {
                let ring =
                    Keyring::parse(&std::fs::read_to_string(&internal_keys).unwrap()).unwrap();
                let manifest = manifest_of(id, dir);
                let doc = LegacyManifest {
                    signed: ring.sign(&manifest),
                    manifest,
                };
                std::fs::write(
                    dir.join("manifest.json"),
                    serde_json::to_vec_pretty(&doc).unwrap(),
                )
                .unwrap();
            }),
            server: |f, ended, _| {
                if ended {
                    matches!(f, Finding::ManifestHashMismatch { key, .. } if key == "manifest.json")
                } else {
                    matches!(f, Finding::ManifestNotRecorded { .. })
                }
            },
            offline: |f, _, _| matches!(f, Finding::LegacyHmacUnverifiable { .. }),
        },
        Attack {
            name: "forge a manifest signed by another Ed25519 key under the same key id",
            apply: Box::new(|id, dir, _| {
                let forger = ManifestKeys::parse(&ManifestKeys::generate_file("rk1")).unwrap();
                let (doc, _) = Recordings::signed_document(&manifest_of(id, dir), &forger).unwrap();
                std::fs::write(dir.join("manifest.json"), doc).unwrap();
            }),
            server: |f, _, _| matches!(f, Finding::SignatureInvalid { key, .. } if key == "manifest.json"),
            offline: |f, _, _| matches!(f, Finding::SignatureInvalid { key, .. } if key == "manifest.json"),
        },
    ]
}

/// Chunk N+1 appended: past `end.json`'s count once ended; live, a link that does not chain.
fn added(f: &Finding, ended: bool, n: u64) -> bool {
    let key = chunk_name(n + 1, "json");
    if ended {
        matches!(f, Finding::BeyondEnd { key: k, .. } if *k == key)
    } else {
        matches!(f, Finding::OutOfSequence { key: k, .. } | Finding::ChainBroken { key: k } if *k == key)
    }
}

fn run_attacks(rig: &Rig, id: &str, dir: &Path, ended: bool, n: u64) {
    let backup = rig.scratch.join(format!("backup-{ended}"));
    copy_dir(dir, &backup);
    for a in attacks(rig.fleet.internal_key_file()) {
        (a.apply)(id, dir, n);
        let server = rig.server(id);
        let offline = rig.offline(dir);
        let label = if ended { "ended" } else { "live" };
        assert!(
            !server.ok && server.findings.iter().any(|f| (a.server)(f, ended, n)),
            "{label} / {}: the server did not name it: {:#?}",
            a.name,
            server.findings
        );
        assert!(
            !offline.ok && offline.findings.iter().any(|f| (a.offline)(f, ended, n)),
            "{label} / {}: offline verify did not name it: {:#?}",
            a.name,
            offline.findings
        );
        std::fs::remove_dir_all(dir).unwrap();
        copy_dir(&backup, dir);
    }
    std::fs::remove_dir_all(&backup).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tampering_of_a_live_and_an_ended_recording_is_named_online_and_offline() {
    let deps = wardengate_e2e::Deps::start().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("rec");
    let url = format!("file://{}", root.display());
    let key = scratch.path().join("recording-key");
    std::fs::write(&key, ManifestKeys::generate_file("rk1")).unwrap();
    let fleet = deps
        .fleet(
            1,
            &[
                "--recordings-url",
                &url,
                "--recording-key-file",
                &key.display().to_string(),
            ],
        )
        .await
        .unwrap();

    // The public keys, as an auditor gets them: unauthenticated, in the key-file format.
    let out = std::process::Command::new(wardengate_e2e::bin("wgctl"))
        .args(["recordings", "public-keys"])
        .env("WG_ADDR", fleet.lb_addr())
        .envs(
            fleet
                .wgctl_env()
                .into_iter()
                .filter(|(k, _)| k == "WG_CA_CERT"),
        )
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listing.starts_with("rk1 public "), "{listing}");
    assert!(!listing.contains("private"), "{listing}");
    let public_keys = scratch.path().join("public-keys");
    std::fs::write(&public_keys, &listing).unwrap();
    let rig = Rig {
        fleet,
        public_keys,
        scratch: scratch.path().to_path_buf(),
    };

    // A live session that writes a line every 1.2 s (a chunk each), then idles.
    let mut ssh = deps
        .sshd
        .ssh_via(
            &proxy_command(),
            "for i in 1 2 3 4 5 6; do echo line$i; sleep 1.2; done; sleep 600",
        )
        .unwrap();
    ssh.envs(rig.fleet.wgctl_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = ssh.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for want in 1..=6 {
        assert_eq!(lines.next().unwrap().unwrap(), format!("line{want}"));
    }
    let id = rig
        .fleet
        .wait_active_session(Duration::from_secs(30))
        .await
        .unwrap();
    let dir = root.join(&id);
    wait_until(
        "the live recording's chunks to be uploaded and chain",
        Duration::from_secs(30),
        || {
            let (j, b) = (count(&dir, ".json"), count(&dir, ".bin"));
            j >= 4 && j == b && rig.offline(&dir).intact_but_unsigned()
        },
    )
    .unwrap();
    let n = count(&dir, ".json") as u64;
    let live = rig.server(&id);
    assert!(
        live.intact_but_unsigned() && live.seals_checked && live.chunks == n,
        "{live:#?}"
    );
    run_attacks(&rig, &id, &dir, false, n);
    assert!(rig.server(&id).intact_but_unsigned());

    // End it: the replica writes end.json, the job signs with Ed25519.
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until(
        "the recording to be signed",
        Duration::from_secs(60),
        || rig.server(&id).ok,
    )
    .unwrap();
    let ok = rig.server(&id);
    assert_eq!(ok.signature.as_deref(), Some("ed25519"), "{ok:#?}");
    assert_eq!(ok.key_id.as_deref(), Some("rk1"));
    assert!(ok.complete && ok.chunks >= n, "{ok:#?}");
    let n = ok.chunks;

    // Download it as an auditor would and verify it with no server.
    let downloaded = scratch.path().join("download");
    let out = rig
        .fleet
        .wgctl(&[
            "recordings",
            "download",
            &id,
            &downloaded.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline = rig.offline(&downloaded);
    assert!(offline.ok && !offline.seals_checked, "{offline:#?}");
    assert_eq!(offline.session, id);

    run_attacks(&rig, &id, &dir, true, n);
    assert!(rig.server(&id).ok, "restored recording verifies again");
}
