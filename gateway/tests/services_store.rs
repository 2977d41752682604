//! The durable store against a real Postgres 15 (and a synchronous pair).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use wardengate::session::{EndReason, SessionStatus};
use wardengate::store::{DirectStart, SessionRow, Store, StoreError, now_ms};
use wardengate::token::{Role, hash};
use wardengate_testkit::{Postgres, PostgresPair};

fn session(id: &str, target_id: &str) -> SessionRow {
    SessionRow {
        id: id.into(),
        token_id: "t1".into(),
        target_id: target_id.into(),
        target_name: "db".into(),
        host: "127.0.0.1".into(),
        port: 5432,
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_migrate_together_and_share_state() {
    let pg = Postgres::start().unwrap();
    let stores: Vec<Store> = (0..3)
        .map(|_| Store::connect(&pg.url(), Duration::from_secs(5)).unwrap())
        .collect();
    let results = futures::future::join_all(stores.iter().map(|s| s.migrate())).await;
    for r in results {
        r.unwrap();
    }
    // Each migration applied exactly once although three replicas migrated at the same time.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert!(files >= 2);
    assert_eq!(
        pg.sql("select count(*) from _sqlx_migrations").unwrap(),
        files.to_string()
    );
    assert_eq!(
        pg.sql("select count(distinct version) from _sqlx_migrations")
            .unwrap(),
        files.to_string()
    );

    // statement_timeout is set on every connection.
    assert_eq!(
        stores[1]
            .current_setting("statement_timeout")
            .await
            .unwrap(),
        "5s"
    );

    let t = stores[0]
        .create_target("db", "127.0.0.1", 5432, false)
        .await
        .unwrap();
    assert!(matches!(
        stores[1].create_target("db", "h", 1, false).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(stores[2].target("db").await.unwrap().unwrap(), t);

    stores[0]
        .ensure_admin_token(&hash("bootstrap-token-aaaaaaaaaaaa"))
        .await
        .unwrap();
    stores[1]
        .ensure_admin_token(&hash("bootstrap-token-aaaaaaaaaaaa"))
        .await
        .unwrap();
    let admin = stores[2]
        .token_by_hash(&hash("bootstrap-token-aaaaaaaaaaaa"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.role, "admin");
    let id = stores[0]
        .create_token(&hash("user-token"), "alice", Role::User, None)
        .await
        .unwrap();
    assert_eq!(
        stores[1]
            .token_by_hash(&hash("user-token"))
            .await
            .unwrap()
            .unwrap()
            .id,
        id
    );
    assert!(
        stores[1]
            .token_by_hash(&hash("nope"))
            .await
            .unwrap()
            .is_none()
    );

    // Concurrent claims of one session: Postgres lets exactly one replica win.
    stores[0]
        .create_session(&session("s1", &t.id))
        .await
        .unwrap();
    let claims = futures::future::join_all((0..12).map(|i| {
        let s = stores[i % 3].clone();
        async move {
            s.claim_session("s1", &format!("r{i}"), "t", None)
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(claims.iter().filter(|c| **c).count(), 1);
    stores[1]
        .end_session("s1", "r0", (10, 20), EndReason::ClientClosed, None)
        .await
        .unwrap();
    let row = stores[2].session("s1").await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.bytes_up, row.bytes_down),
        ("ended", 10, 20)
    );
    assert_eq!(row.end_reason, Some(EndReason::ClientClosed));
    assert!(
        !stores[0]
            .claim_session("s1", "late", "t", None)
            .await
            .unwrap(),
        "an ended session cannot be claimed again"
    );
}

/// The session row and its audit row are one statement: both or neither.
async fn session_and_audit_together(s: &Store) {
    let t = s.create_target("db", "h", 1, false).await.unwrap();
    s.create_session_audited(&session("a", &t.id), "t1", "session.authorize", "db")
        .await
        .unwrap();
    assert_eq!(
        s.session("a").await.unwrap().unwrap().status,
        SessionStatus::Authorized
    );
    let audit = vec![(
        "t1".to_string(),
        "session.authorize".to_string(),
        "db".to_string(),
    )];
    assert_eq!(s.audit_for("a").await.unwrap(), audit);
    // A duplicate session fails as a whole: no second audit row.
    assert!(
        s.create_session_audited(&session("a", &t.id), "t2", "session.authorize", "db")
            .await
            .is_err()
    );
    assert_eq!(s.audit_for("a").await.unwrap(), audit);

    // A session relayed at once: the row, its audit row, its recording row and its
    // `session.started` event in one statement, only if the target still is what the caller
    // read and the token is under its cap.
    let b = SessionRow {
        host: "h".into(),
        port: 1,
        status: SessionStatus::Active,
        replica: Some("r1".into()),
        started_at: Some(now_ms()),
        ..session("b", &t.id)
    };
    let start = |row| DirectStart {
        row,
        actor: "t1",
        action: "session.authorize",
        detail: "db",
        max_held: 0,
        recording_replica: Some("r1"),
        started_event: "{}",
    };
    let events = async |kind: &str, subject: &str| {
        s.events_after(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind && e.subject == subject)
            .count()
    };
    let stale = SessionRow {
        port: 2,
        ..b.clone()
    };
    assert!(
        !s.start_direct_session(&start(&stale)).await.unwrap(),
        "the target moved"
    );
    let capped = DirectStart {
        max_held: 1,
        ..start(&b)
    };
    assert!(
        !s.start_direct_session(&capped).await.unwrap(),
        "t1 holds one"
    );
    assert!(
        s.session("b").await.unwrap().is_none(),
        "refusals write nothing"
    );
    assert!(s.audit_for("b").await.unwrap().is_empty());
    assert_eq!(events("session.started", "b").await, 0);
    assert!(s.start_direct_session(&start(&b)).await.unwrap());
    assert_eq!(s.audit_for("b").await.unwrap().len(), 1);
    assert_eq!(events("session.started", "b").await, 1);
    // The target and the token's open sessions in one read: "a" and "b" are open.
    let (row, held) = s.target_and_held("db", "t1").await.unwrap().unwrap();
    assert_eq!((row.name.as_str(), row.port, held), ("db", 1, 2));
    assert_eq!(s.target_and_held("db", "t9").await.unwrap().unwrap().1, 0);
    assert!(s.target_and_held("nope", "t1").await.unwrap().is_none());
    // Its end and `session.ended` together, once however often the end is recorded.
    for _ in 0..2 {
        s.end_session("b", "r1", (1, 2), EndReason::ClientClosed, Some("{}"))
            .await
            .unwrap();
    }
    assert_eq!(events("session.ended", "b").await, 1);
    assert_eq!(s.target_and_held("db", "t1").await.unwrap().unwrap().1, 1);
    let unsigned: Vec<String> = s
        .unsigned_recordings()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(
        unsigned,
        ["b"],
        "the recording row was written with the session"
    );
}

#[tokio::test]
async fn a_session_and_its_audit_row_are_written_together() {
    let pg = Postgres::start().unwrap();
    let s = Store::connect(&pg.url(), Duration::from_secs(5)).unwrap();
    s.migrate().await.unwrap();
    session_and_audit_together(&s).await;

    let dir = tempfile::tempdir().unwrap();
    let lite = Store::connect(
        &format!("sqlite://{}?mode=rwc", dir.path().join("db").display()),
        Duration::from_secs(5),
    )
    .unwrap();
    lite.migrate().await.unwrap();
    session_and_audit_together(&lite).await;
}

#[tokio::test]
async fn terminate_moves_active_sessions_to_terminating_and_others_to_ended() {
    let pg = Postgres::start().unwrap();
    let s = Store::connect(&pg.url(), Duration::from_secs(5)).unwrap();
    s.migrate().await.unwrap();
    let t = s.create_target("db", "h", 1, false).await.unwrap();
    s.create_session(&session("a", &t.id)).await.unwrap();
    s.create_session(&session("b", &t.id)).await.unwrap();
    assert!(s.claim_session("a", "r1", "t", None).await.unwrap());
    assert_eq!(
        s.terminate_session("a").await.unwrap().unwrap().status,
        SessionStatus::Terminating
    );
    assert_eq!(
        s.terminate_session("b").await.unwrap().unwrap().status,
        SessionStatus::Ended
    );
    s.end_session("a", "r1", (1, 1), EndReason::Terminated, None)
        .await
        .unwrap();
    assert_eq!(
        s.session("a").await.unwrap().unwrap().status,
        SessionStatus::Ended
    );
}

#[tokio::test]
async fn unreachable_database_is_unavailable_not_a_hang() {
    let mut pg = Postgres::start().unwrap();
    let s = Store::connect(&pg.url(), Duration::from_millis(500)).unwrap();
    s.migrate().await.unwrap();
    pg.server().kill9();
    let start = Instant::now();
    let err = s.list_targets().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

/// A commit waiting for a synchronous standby is not bounded by statement_timeout on the
/// server; the store's client-side bound must still return.
#[tokio::test]
async fn synchronous_commit_wait_is_bounded_client_side() {
    let mut pair = PostgresPair::start().unwrap();
    let s = Store::connect(&pair.primary.url(), Duration::from_millis(500)).unwrap();
    s.migrate().await.unwrap();
    pair.standby.kill9();
    let start = Instant::now();
    let err = s.create_target("stuck", "h", 1, false).await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        took < Duration::from_secs(4),
        "client-side bound did not fire: {took:?}"
    );
}

/// A holder whose lease was lost (say, in a Sentinel failover) keeps an old epoch: its side
/// effects no longer apply, and the current holder's apply exactly once.
#[tokio::test]
async fn fencing_epochs_stop_stale_job_holders() {
    let pg = Postgres::start().unwrap();
    let s = Store::connect(&pg.url(), Duration::from_secs(5)).unwrap();
    s.migrate().await.unwrap();
    let t = s.create_target("db", "h", 1, false).await.unwrap();
    s.create_session(&session("a", &t.id)).await.unwrap();
    assert!(
        s.claim_session("a", "dead-replica", "t", None)
            .await
            .unwrap()
    );
    let old = s.fence_job("cleanup", "r1").await.unwrap();
    let new = s.fence_job("cleanup", "r2").await.unwrap();
    assert_eq!(new, old + 1);
    assert!(
        !s.end_lost_session("a", "dead-replica", "cleanup", old)
            .await
            .unwrap(),
        "stale epoch acted"
    );
    assert_eq!(
        s.session("a").await.unwrap().unwrap().status,
        SessionStatus::Active
    );
    assert!(
        s.end_lost_session("a", "dead-replica", "cleanup", new)
            .await
            .unwrap()
    );
    assert!(
        !s.end_lost_session("a", "dead-replica", "cleanup", new)
            .await
            .unwrap(),
        "ran twice"
    );
    let row = s.session("a").await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.end_reason.map(EndReason::as_str)),
        ("ended", Some("replica_lost"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn replicas_starting_together_all_ensure_the_admin_token() {
    let pg = Postgres::start().unwrap();
    let stores: Vec<Store> = (0..8)
        .map(|_| Store::connect(&pg.url(), Duration::from_secs(5)).unwrap())
        .collect();
    stores[0].migrate().await.unwrap();
    // Open every pool's connection first so the inserts below really overlap.
    for s in &stores {
        s.ping().await.unwrap();
    }
    for round in 0..40 {
        let h = hash(&format!("bootstrap-token-round-{round}-aaaaaaaa"));
        let results =
            futures::future::join_all(stores.iter().map(|s| s.ensure_admin_token(&h))).await;
        for r in results {
            r.unwrap();
        }
    }
}

async fn store(pg: &Postgres) -> Store {
    let s = Store::connect(&pg.url(), Duration::from_secs(5)).unwrap();
    s.migrate().await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_decisions_on_one_request_decide_it_exactly_once() {
    use wardengate::store::{Decided, Decision};
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    let mut row = session("p1", "t");
    row.status = SessionStatus::Pending;
    s.create_session(&row).await.unwrap();
    let attempts = (0..8).map(|i| {
        let s = s.clone();
        let d = if i % 2 == 0 {
            Decision::Approved
        } else {
            Decision::Denied
        };
        async move {
            s.decide("p1", d, &format!("approver-{i}"), "")
                .await
                .unwrap()
        }
    });
    let results = futures::future::join_all(attempts).await;
    let now: Vec<&Decided> = results
        .iter()
        .filter(|r| matches!(r, Decided::Now(_)))
        .collect();
    assert_eq!(now.len(), 1, "{results:?}");
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(r, Decided::Already(_)))
            .count(),
        7
    );
    let events = s.events_after(0, 100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind.starts_with("approval."))
            .count(),
        1,
        "{events:?}"
    );
    let after = s.session("p1").await.unwrap().unwrap();
    assert!(
        after.status == SessionStatus::Authorized
            || (after.status == SessionStatus::Ended
                && after.end_reason == Some(EndReason::Denied)),
        "{after:?}"
    );
    assert!(matches!(
        s.decide("nope", Decision::Approved, "a", "").await.unwrap(),
        Decided::NotPending
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_cursor_moves_only_for_the_current_epoch_and_only_once() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    let old = s.fence_job("fanout", "r0").await.unwrap();
    let new = s.fence_job("fanout", "r1").await.unwrap();
    assert!(
        !s.advance_cursor("fanout", 0, 5, old).await.unwrap(),
        "a stale epoch cannot claim"
    );
    let racers = (0..6).map(|_| {
        let s = s.clone();
        async move { s.advance_cursor("fanout", 0, 5, new).await.unwrap() }
    });
    let won = futures::future::join_all(racers)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(won, 1, "one claim of the same range");
    assert_eq!(s.cursor("fanout").await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_cursor_following_concurrent_writers_never_skips_an_event() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    const N: usize = 200;
    // A writer whose commit is slow (a synchronous standby, a busy disk): it takes its id first
    // and commits a second later, while the others keep writing.
    let slow_url = pg.url();
    let slow = std::thread::spawn(move || {
        let sql = format!(
            "BEGIN; SELECT pg_advisory_xact_lock({}); \
             INSERT INTO events (at, kind, subject) VALUES (0, 'test', 'slow'); \
             SELECT pg_sleep(1); COMMIT;",
            wardengate::store::OUTBOX_LOCK
        );
        let out = std::process::Command::new("psql")
            .arg(&slow_url)
            .args(["-c", &sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    std::thread::sleep(Duration::from_millis(200));
    let writers = (0..4).map(|w| {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..N / 4 {
                s.emit("test", &format!("{w}-{i}"), &serde_json::json!({}))
                    .await
                    .unwrap();
            }
        })
    });
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (0i64, 0usize);
            let deadline = Instant::now() + Duration::from_secs(30);
            while seen < N + 1 && Instant::now() < deadline {
                let batch = s.events_after(cursor, 50).await.unwrap();
                if let Some(last) = batch.last() {
                    cursor = last.id;
                    seen += batch.len();
                }
            }
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    slow.join().unwrap();
    assert_eq!(
        reader.await.unwrap(),
        N + 1,
        "the cursor passed an event committed after a later one"
    );
}

/// Behind PgBouncer in transaction mode (one server connection, so every client shares it):
/// session mode breaks — one client's named prepared statement collides with another's — while
/// `PoolMode::Transaction` migrates from three replicas at once, holds `statement_timeout` on
/// every call and runs concurrent work without a collision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_pgbouncer_in_transaction_mode() {
    use wardengate::store::PoolMode;
    let pg = Postgres::start().unwrap();
    let bouncer = wardengate_testkit::PgBouncer::transaction_mode(pg.port(), 1).unwrap();

    let a = Store::connect(&bouncer.url(), Duration::from_secs(5)).unwrap();
    let b = Store::connect(&bouncer.url(), Duration::from_secs(5)).unwrap();
    a.current_setting("server_version").await.unwrap();
    let collided = b.current_setting("server_version").await.unwrap_err();
    assert!(
        collided.to_string().contains("prepared statement"),
        "session mode behind a transaction pooler should collide: {collided}"
    );

    let stores: Vec<Store> = (0..3)
        .map(|_| {
            Store::connect_with(
                &bouncer.url(),
                // Long enough that 60 operations queued on PgBouncer's one server connection
                // get a pool connection on a loaded machine (the acquire timeout follows it).
                Duration::from_millis(3500),
                PoolMode::Transaction,
            )
            .unwrap()
        })
        .collect();
    for r in futures::future::join_all(stores.iter().map(|s| s.migrate())).await {
        r.unwrap();
    }
    for s in &stores {
        assert_eq!(
            s.current_setting("statement_timeout").await.unwrap(),
            "3500ms"
        );
    }
    let work = (0..60).map(|i| {
        let s = stores[i % 3].clone();
        async move {
            let t = s
                .create_target(&format!("t{i}"), "127.0.0.1", 22, false)
                .await?;
            s.create_session(&session(&format!("s{i}"), &t.id)).await?;
            s.audit("actor", "test", &format!("s{i}"), "").await?;
            s.emit("test", &format!("s{i}"), &serde_json::json!({"i": i}))
                .await?;
            s.list_targets().await.map(|_| ())
        }
    });
    for r in futures::future::join_all(work).await {
        r.unwrap();
    }
    assert_eq!(stores[0].list_targets().await.unwrap().len(), 60);
    assert_eq!(stores[1].events_after(0, 1000).await.unwrap().len(), 60);
}
