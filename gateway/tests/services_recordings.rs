//! Recordings against real Postgres and a `file://` object store: chunks spooled and uploaded,
//! a manifest signed once by the fenced job, verification that catches altered, missing and
//! added objects, a spool left by a dead process uploaded on the next start; and the leases of
//! the jobs that run all this rotating between replicas without ever overlapping.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use wardengate::jobs::{Jobs, MANIFESTS};
use wardengate::live::{Live, MemoryLive};
use wardengate::metrics::Metrics;
use wardengate::recording::{
    ChunkIndex, Direction, End, ManifestKeys, Meta, Recorded, Recordings, chain,
};
use wardengate::replica::{Replica, Role};
use wardengate::session::{EndReason, SessionStatus, Sessions, SessionsConfig};
use wardengate::signing::Keyring;
use wardengate::store::{SessionRow, Store, now_ms};
use wardengate_testkit::Postgres;

fn meta(id: &str) -> Meta {
    Meta {
        session: id.into(),
        target: "db".into(),
        address: "127.0.0.1:22".into(),
        token_id: "t1".into(),
        replica: "r0".into(),
        started_ms: now_ms(),
        note: String::new(),
    }
}

async fn ended_session(store: &Store, id: &str) {
    let row = SessionRow {
        id: id.into(),
        token_id: "t1".into(),
        target_id: "t".into(),
        target_name: "db".into(),
        host: "127.0.0.1".into(),
        port: 22,
        status: SessionStatus::Authorized,
        replica: None,
        created_at: now_ms(),
        started_at: None,
        ended_at: None,
        bytes_up: 0,
        bytes_down: 0,
        end_reason: None,
        requested_from: None,
        connected_by: None,
        connected_from: None,
    };
    store.create_session(&row).await.unwrap();
    assert!(store.claim_session(id, "r0", "t", None).await.unwrap());
    store.start_recording(id, "r0").await.unwrap();
    store
        .end_session(id, "r0", (3, 5), EndReason::ClientClosed, None)
        .await
        .unwrap();
}

struct Setup {
    _pg: Postgres,
    dir: tempfile::TempDir,
    store: Store,
    rec: Recordings,
    keyring: Keyring,
}

async fn setup() -> Setup {
    let pg = Postgres::start().unwrap();
    let store = Store::connect(&pg.url(), Duration::from_secs(5)).unwrap();
    store.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::parse(&Keyring::generate_file("k1")).unwrap();
    let rec = Recordings::open(
        &format!("file://{}", dir.path().join("objects").display()),
        dir.path().join("spool"),
        Metrics::new("t").chunks_uploaded.clone(),
    )
    .unwrap()
    .sealed_with(keyring.clone())
    .with_manifest_keys(ManifestKeys::parse(&ManifestKeys::generate_file("rk1")).unwrap());
    Setup {
        _pg: pg,
        dir,
        store,
        rec,
        keyring,
    }
}

fn jobs(s: &Setup) -> Jobs {
    let live = Live::Memory(MemoryLive::default());
    Jobs {
        sessions: Sessions::new(
            s.store.clone(),
            live.clone(),
            s.keyring.clone(),
            Metrics::new("r0"),
            SessionsConfig::for_replica("r0"),
        ),
        store: s.store.clone(),
        live,
        replica: Replica::new("r0", Role::All, Metrics::new("r0")),
        metrics: Metrics::new("r0"),
        lease_ttl: Duration::from_secs(5),
        every: Duration::from_secs(1),
        lost_after: Duration::from_secs(15),
        recordings: Some(s.rec.clone()),
        keyring: s.keyring.clone(),
        seal_after: Duration::from_secs(600),
        max_hold: Duration::from_secs(300),
    }
}

/// Verifies `id` as the server does: against the manifest hash Postgres recorded.
async fn verify(s: &Setup, rec: &Recordings, id: &str) -> wardengate::wire::Verification {
    let recorded = match s.store.manifest_hash(id).await.unwrap() {
        Some(h) => Recorded::Signed(h),
        None => Recorded::NotSigned,
    };
    rec.verify(id, &recorded).await.unwrap()
}

async fn wait_uploaded(rec: &Recordings, id: &str) {
    for _ in 0..200 {
        if rec.has_end(id).await.unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the recording of {id} was not uploaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recording_is_signed_once_and_verification_catches_tampering() {
    let s = setup().await;
    ended_session(&s.store, "s1").await;
    let r = s.rec.start(&meta("s1")).unwrap();
    // More than one chunk: 300 KiB up, then a reply.
    r.record(Direction::Up, &vec![7u8; 300 * 1024]);
    r.record(Direction::Down, b"hello back");
    r.finish("client_closed", 300 * 1024, 10);
    wait_uploaded(&s.rec, "s1").await;

    let j = jobs(&s);
    let stale = s.store.fence_job(MANIFESTS, "old").await.unwrap();
    let epoch = s.store.fence_job(MANIFESTS, "r0").await.unwrap();
    assert_eq!(
        j.sign_manifests(stale).await.unwrap(),
        0,
        "a stale epoch signs nothing"
    );
    assert_eq!(j.sign_manifests(epoch).await.unwrap(), 1);
    assert_eq!(j.sign_manifests(epoch).await.unwrap(), 0, "signed once");

    let v = verify(&s, &s.rec, "s1").await;
    assert!(v.ok, "{v:?}");
    assert!(v.complete);
    assert_eq!(v.key_id.as_deref(), Some("rk1"));
    // meta, 2 × (bin + json), end.
    assert_eq!(v.objects, 6, "{v:?}");

    // Another key cannot vouch for it.
    let other = s
        .rec
        .clone()
        .with_manifest_keys(ManifestKeys::parse(&ManifestKeys::generate_file("rk1")).unwrap());
    assert!(!verify(&s, &other, "s1").await.ok);

    // Alter one byte of a chunk: verification names it.
    let chunk = s.dir.path().join("objects/s1/chunk-000001.bin");
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&chunk, &bytes).unwrap();
    let v = verify(&s, &s.rec, "s1").await;
    assert!(!v.ok);
    assert!(
        v.problems
            .iter()
            .any(|p| p.starts_with("chunk-000001.bin: altered")),
        "{v:?}"
    );
    bytes[10] ^= 1;
    std::fs::write(&chunk, &bytes).unwrap();
    assert!(verify(&s, &s.rec, "s1").await.ok);

    // Add or remove an object: named too.
    std::fs::write(s.dir.path().join("objects/s1/extra.bin"), b"x").unwrap();
    let v = verify(&s, &s.rec, "s1").await;
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("extra.bin: unexpected object")),
        "{v:?}"
    );
    std::fs::remove_file(s.dir.path().join("objects/s1/extra.bin")).unwrap();
    std::fs::remove_file(s.dir.path().join("objects/s1/chunk-000002.json")).unwrap();
    let v = verify(&s, &s.rec, "s1").await;
    assert!(
        v.problems.iter().any(|p| p == "chunk-000002.json: missing"),
        "{v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spool_left_by_a_dead_process_is_uploaded_on_the_next_start() {
    let s = setup().await;
    ended_session(&s.store, "s2").await;
    // What a killed process leaves: spooled files, never uploaded, the live marker still there.
    let spool = s.dir.path().join("spool/s2");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join(".live"), b"").unwrap();
    // Written as a replica writes them: chained and sealed with the internal key.
    let meta_doc = serde_json::to_vec(&meta("s2")).unwrap();
    std::fs::write(spool.join("meta.json"), &meta_doc).unwrap();
    std::fs::write(spool.join("chunk-000001.bin"), b"abc").unwrap();
    let mut idx = ChunkIndex {
        session: "s2".into(),
        seq: 1,
        size: 3,
        sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        frames: vec![],
        prev: chain::link_hash(&meta_doc),
        seal: None,
    };
    idx.seal = Some(chain::seal(
        &s.keyring,
        "s2",
        "chunk-000001.json",
        &idx.canonical(),
    ));
    let idx_doc = serde_json::to_vec(&idx).unwrap();
    std::fs::write(spool.join("chunk-000001.json"), &idx_doc).unwrap();
    let mut end = End {
        session: "s2".into(),
        ended_ms: 1,
        reason: "client_closed".into(),
        chunks: 1,
        bytes_up: 3,
        bytes_down: 0,
        prev: chain::link_hash(&idx_doc),
        seal: None,
    };
    end.seal = Some(chain::seal(&s.keyring, "s2", "end.json", &end.canonical()));
    std::fs::write(spool.join("end.json"), serde_json::to_vec(&end).unwrap()).unwrap();

    assert_eq!(
        s.rec.resume_spool(false).await.unwrap(),
        0,
        "a live session uploads itself"
    );
    assert_eq!(
        s.rec.resume_spool(true).await.unwrap(),
        4,
        "at start-up nothing is live"
    );
    assert!(!spool.exists(), "the spool is emptied");
    let j = jobs(&s);
    let epoch = s.store.fence_job(MANIFESTS, "r1").await.unwrap();
    assert_eq!(j.sign_manifests(epoch).await.unwrap(), 1);
    let v = verify(&s, &s.rec, "s2").await;
    assert!(v.ok && v.complete, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_ticks_across_replicas_and_never_overlaps() {
    let s = setup().await;
    let live = Live::Memory(MemoryLive::default());
    let replicas: Vec<Jobs> = ["r0", "r1"]
        .iter()
        .map(|id| Jobs {
            live: live.clone(),
            replica: Replica::new(*id, Role::All, Metrics::new(id)),
            metrics: Metrics::new(id),
            lease_ttl: Duration::from_millis(600),
            max_hold: Duration::from_millis(800),
            ..jobs(&s)
        })
        .collect();
    let held = |j: &Jobs| {
        j.metrics
            .job_lease_held
            .with_label_values(&[wardengate::jobs::FANOUT])
            .get()
    };
    let tasks: Vec<_> = replicas
        .iter()
        .cloned()
        .map(|j| tokio::spawn(j.run(wardengate::jobs::FANOUT, Duration::from_millis(100))))
        .collect();
    let mut holders = std::collections::BTreeSet::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (a, b) = (held(&replicas[0]), held(&replicas[1]));
        assert!(a + b <= 1, "two holders at once");
        if a == 1 {
            holders.insert("r0");
        }
        if b == 1 {
            holders.insert("r1");
        }
    }
    for t in tasks {
        t.abort();
    }
    assert_eq!(
        holders.len(),
        2,
        "the lease moved between replicas over 5 s: {holders:?}"
    );
}
