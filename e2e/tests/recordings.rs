//! Recordings end to end: a real SSH session through the fleet is recorded, signed by the
//! manifest job and verified with `wgctl recordings verify`; an altered chunk fails
//! verification; a replica that dies after its session ended, before its upload succeeded,
//! uploads on restart and the recording still verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use wardengate::recording::ManifestKeys;
use wardengate::wire::SessionView;
use wardengate_e2e::{Deps, Fleet, proxy_command};
use wardengate_testkit::process::run;
use wardengate_testkit::wait_until;

fn latest_session(fleet: &Fleet) -> String {
    let out = run(
        &mut fleet.wgctl(&["-o", "json", "sessions", "list", "--limit", "1"]),
        Duration::from_secs(30),
    )
    .unwrap();
    let v: Vec<SessionView> = serde_json::from_str(&out).unwrap();
    v[0].id.clone()
}

fn verify(fleet: &Fleet, id: &str) -> std::process::Output {
    fleet.wgctl(&["recordings", "verify", id]).output().unwrap()
}

fn ssh(deps: &Deps, env: Vec<(String, String)>, word: &str) {
    let mut ssh = deps
        .sshd
        .ssh_via(&proxy_command(), &format!("echo {word}"))
        .unwrap();
    ssh.envs(env);
    assert_eq!(run(&mut ssh, Duration::from_secs(60)).unwrap(), word);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_are_recorded_signed_and_verified_even_when_their_replica_dies_before_uploading() {
    let deps = Deps::start().unwrap();
    let objects = tempfile::tempdir().unwrap();
    let root = objects.path().join("rec");
    let url = format!("file://{}", root.display());
    let key = objects.path().join("recording-key");
    std::fs::write(&key, ManifestKeys::generate_file("rk1")).unwrap();
    let key = key.display().to_string();
    let mut fleet = deps
        .fleet(2, &["--recordings-url", &url, "--recording-key-file", &key])
        .await
        .unwrap();

    ssh(&deps, fleet.wgctl_env(), "recorded-output");
    let id = latest_session(&fleet);
    wait_until("the recording to verify", Duration::from_secs(30), || {
        verify(&fleet, &id).status.success()
    })
    .unwrap();
    let ok = String::from_utf8_lossy(&verify(&fleet, &id).stdout).to_string();
    assert!(ok.contains("OK") && ok.contains("complete"), "{ok}");

    // One flipped bit in a chunk: verification fails and names it.
    let chunk = root.join(&id).join("chunk-000001.bin");
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[0] ^= 0x80;
    std::fs::write(&chunk, &bytes).unwrap();
    let bad = verify(&fleet, &id);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("chunk-000001.bin: altered"),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );

    // Object storage unwritable (a file where the directory was): r0 records a session that
    // ends normally but cannot upload it, then dies before storage comes back.
    let saved = objects.path().join("rec-saved");
    std::fs::rename(&root, &saved).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    ssh(&deps, fleet.wgctl_env_for(0), "uploaded-after-restart");
    let id2 = latest_session(&fleet);
    std::thread::sleep(Duration::from_secs(1)); // let the failing upload attempt happen
    fleet.kill9(0);
    std::fs::remove_file(&root).unwrap();
    std::fs::rename(&saved, &root).unwrap();
    assert!(
        !root.join(&id2).join("end.json").exists(),
        "nothing of the session reached storage before the restart"
    );
    let unsigned = verify(&fleet, &id2);
    assert!(
        !unsigned.status.success(),
        "not signed while its chunks sit in a dead replica's spool"
    );

    fleet.start_replica(0).unwrap();
    fleet.wait_ready(0, Duration::from_secs(60)).await.unwrap();
    wait_until(
        "the resumed recording to verify",
        Duration::from_secs(30),
        || verify(&fleet, &id2).status.success(),
    )
    .unwrap();
    let out = String::from_utf8_lossy(&verify(&fleet, &id2).stdout).to_string();
    assert!(out.contains("complete"), "{out}");
}
