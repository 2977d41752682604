//! The state machine of the module table, on the embedded store (SQLite in a temp dir) and the
//! in-process live store: every transition, and every refusal, through [`Sessions`] only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::*;
use crate::live::{Live, MemoryLive, session_key};
use crate::metrics::Metrics;
use crate::signing::Keyring;
use crate::store::{Decision, Store};

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    live: Live,
    keyring: Keyring,
    core: Sessions,
    isolated: tokio::sync::watch::Sender<bool>,
    evict: tokio::sync::watch::Sender<bool>,
}

const ALICE: Requester<'static> = Requester {
    token_id: "alice",
    admin: false,
    from: None,
};

const BOB: Requester<'static> = Requester {
    token_id: "bob",
    admin: false,
    from: None,
};

async fn world() -> World {
    world_with(|_| {}).await
}

async fn world_with(tune: impl FnOnce(&mut SessionsConfig)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(
        &format!("sqlite://{}?mode=rwc", dir.path().join("db").display()),
        Duration::from_secs(5),
    )
    .unwrap();
    store.migrate().await.unwrap();
    store
        .create_target("db", "127.0.0.1", 5432, false)
        .await
        .unwrap();
    store
        .create_target("prod", "127.0.0.1", 22, true)
        .await
        .unwrap();
    let live = Live::Memory(MemoryLive::default());
    let keyring = Keyring::parse(&Keyring::generate_file("k1")).unwrap();
    let core = Sessions::new(
        store.clone(),
        live.clone(),
        keyring.clone(),
        Metrics::new("r1"),
        {
            let mut c = SessionsConfig {
                replica: "r1".into(),
                live_session_ttl: Duration::from_secs(2),
                poll: Duration::from_millis(50),
                ..SessionsConfig::for_replica("r1")
            };
            tune(&mut c);
            c
        },
    );
    World {
        _dir: dir,
        store,
        live,
        keyring,
        core,
        isolated: tokio::sync::watch::channel(false).0,
        evict: tokio::sync::watch::channel(false).0,
    }
}

impl World {
    async fn status(&self, id: &str) -> (SessionStatus, Option<EndReason>) {
        let row = self.core.get(id).await.unwrap().unwrap();
        (row.status, row.end_reason)
    }

    /// Authorises and starts a one-request session of `who` to `target`.
    async fn direct(&self, who: Requester<'_>, target: &str) -> Result<Active, SessionError> {
        let prepared = self.core.prepare_direct(who, target).await?;
        self.core.start_direct(prepared).await
    }

    async fn grant(&self, id: &str) -> Option<Grant> {
        let signed = self.live.get(&session_key(id)).await.unwrap()?;
        Some(
            self.keyring
                .verify(&signed, crate::store::now_ms())
                .unwrap(),
        )
    }

    fn watch(&self, active: Active) -> tokio::task::JoinHandle<EndReason> {
        let core = self.core.clone();
        let (i, e) = (self.isolated.subscribe(), self.evict.subscribe());
        tokio::spawn(async move { core.watch(active, i, e).await })
    }
}

#[tokio::test]
async fn authorise_claim_end_runs_the_happy_path_once() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "db").await.unwrap();
    assert_eq!(a.status, SessionStatus::Authorized);
    assert_eq!(w.status(&a.id).await, (SessionStatus::Authorized, None));
    assert_eq!(w.grant(&a.id).await.unwrap().state, GrantState::Authorized);

    let opening = w.core.open(&a.id, ALICE).await.unwrap();
    assert_eq!(opening.grant().port, 5432);
    let active = w.core.claim(opening).await.unwrap();
    assert_eq!(w.status(&a.id).await.0, SessionStatus::Active);
    let g = w.grant(&a.id).await.unwrap();
    assert_eq!(g.state, GrantState::Active);
    assert_eq!(g.replica.as_deref(), Some("r1"));
    assert_eq!(active.id(), a.id);

    // Claimed once: a second open sees the active grant, a second claim loses in the store.
    assert!(matches!(
        w.core.open(&a.id, ALICE).await,
        Err(SessionError::InUse)
    ));

    w.core
        .end(&a.id, EndReason::ClientClosed, Moved { up: 3, down: 5 })
        .await;
    let row = w.core.get(&a.id).await.unwrap().unwrap();
    assert_eq!(row.status, SessionStatus::Ended);
    assert_eq!(row.end_reason, Some(EndReason::ClientClosed));
    assert_eq!((row.bytes_up, row.bytes_down), (3, 5));
    assert!(w.grant(&a.id).await.is_none(), "live state dropped");
    assert!(matches!(
        w.core.open(&a.id, ALICE).await,
        Err(SessionError::NoLiveGrant(_))
    ));
}

#[tokio::test]
async fn open_refuses_other_owners_unknown_targets_and_forged_state() {
    let w = world().await;
    assert!(matches!(
        w.core.authorise(ALICE, "nope").await,
        Err(SessionError::TargetNotFound(t)) if t == "nope"
    ));
    let a = w.core.authorise(ALICE, "db").await.unwrap();
    let bob = Requester {
        token_id: "bob",
        admin: false,
        from: None,
    };
    assert!(matches!(
        w.core.open(&a.id, bob).await,
        Err(SessionError::NotYours)
    ));
    let admin = Requester {
        token_id: "root",
        admin: true,
        from: None,
    };
    assert!(w.core.open(&a.id, admin).await.is_ok());

    // A grant signed by another key, and one copied under another session's key.
    let other = Keyring::parse(&Keyring::generate_file("k1")).unwrap();
    let mut g = w.grant(&a.id).await.unwrap();
    w.live
        .set(
            &session_key(&a.id),
            &other.sign(&g),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(matches!(
        w.core.open(&a.id, ALICE).await,
        Err(SessionError::InvalidState(_))
    ));
    let b = w.core.authorise(ALICE, "db").await.unwrap();
    g.session_id = b.id.clone();
    w.live
        .set(
            &session_key(&a.id),
            &w.keyring.sign(&g),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(matches!(
        w.core.open(&a.id, ALICE).await,
        Err(SessionError::InvalidState(m)) if m.contains("another session")
    ));
}

#[tokio::test]
async fn approval_gates_the_session_and_is_decided_once_by_someone_else() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "prod").await.unwrap();
    assert_eq!(a.status, SessionStatus::Pending);
    assert!(matches!(
        w.core.open(&a.id, ALICE).await,
        Err(SessionError::ApprovalPending)
    ));
    assert_eq!(w.core.pending().await.unwrap().len(), 1);
    assert!(matches!(
        w.core.decide(&a.id, Decision::Approved, "alice", "").await,
        Err(SessionError::SelfApproval)
    ));
    let row = w
        .core
        .decide(&a.id, Decision::Approved, "carol", "ok")
        .await
        .unwrap();
    assert_eq!(row.status, SessionStatus::Authorized);
    assert_eq!(w.grant(&a.id).await.unwrap().state, GrantState::Authorized);
    assert!(matches!(
        w.core.decide(&a.id, Decision::Denied, "dave", "").await,
        Err(SessionError::AlreadyDecided { decision: Decision::Approved, by, .. }) if by == "carol"
    ));
    assert!(w.core.open(&a.id, ALICE).await.is_ok());
}

#[tokio::test]
async fn a_decision_redis_missed_is_honoured_from_postgres() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "prod").await.unwrap();
    let pending = w.live.get(&session_key(&a.id)).await.unwrap().unwrap();
    w.core
        .decide(&a.id, Decision::Approved, "carol", "")
        .await
        .unwrap();
    // Redis lost the decision's write (failover): the pending grant is back.
    w.live
        .set(&session_key(&a.id), &pending, Duration::from_secs(60))
        .await
        .unwrap();
    let opening = w.core.open(&a.id, ALICE).await.unwrap();
    w.core.claim(opening).await.unwrap();
    assert_eq!(w.status(&a.id).await.0, SessionStatus::Active);
}

#[tokio::test]
async fn denial_ends_the_request_and_terminates_its_grant() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "prod").await.unwrap();
    let row = w
        .core
        .decide(&a.id, Decision::Denied, "carol", "no")
        .await
        .unwrap();
    assert_eq!(row.status, SessionStatus::Ended);
    assert_eq!(row.end_reason, Some(EndReason::Denied));
    assert!(matches!(
        w.core.open(&a.id, ALICE).await,
        Err(SessionError::Terminated)
    ));
    assert!(matches!(
        w.core.decide(&a.id, Decision::Approved, "dave", "").await,
        Err(SessionError::AlreadyDecided { .. })
    ));
}

#[tokio::test]
async fn terminate_before_connect_ends_at_once_and_refuses_the_relay() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "db").await.unwrap();
    let row = w.core.terminate(&a.id, "root").await.unwrap();
    assert_eq!(row.status, SessionStatus::Ended);
    assert_eq!(row.end_reason, Some(EndReason::Terminated));
    assert!(matches!(
        w.core.open(&a.id, ALICE).await,
        Err(SessionError::Terminated)
    ));
    assert!(matches!(
        w.core.terminate("no-such-id", "root").await,
        Err(SessionError::NotFound(_))
    ));
}

#[tokio::test]
async fn terminate_between_open_and_claim_wins_and_ends_the_session() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "db").await.unwrap();
    let opening = w.core.open(&a.id, ALICE).await.unwrap();
    w.core.terminate(&a.id, "root").await.unwrap();
    // The row already ended, so the store refuses the claim.
    assert!(matches!(
        w.core.claim(opening).await,
        Err(SessionError::InUse)
    ));
    assert_eq!(
        w.status(&a.id).await,
        (SessionStatus::Ended, Some(EndReason::Terminated))
    );
}

#[tokio::test]
async fn a_grant_changed_after_the_row_was_claimed_is_never_overwritten() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "db").await.unwrap();
    let opening = w.core.open(&a.id, ALICE).await.unwrap();
    // Someone rewrote the live grant (e.g. a terminate that reached Redis only).
    let mut g = w.grant(&a.id).await.unwrap();
    g.state = GrantState::Terminated;
    let terminated = w.keyring.sign(&g);
    w.live
        .set(&session_key(&a.id), &terminated, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(
        w.core.claim(opening).await,
        Err(SessionError::Terminated)
    ));
    assert_eq!(
        w.live.get(&session_key(&a.id)).await.unwrap().as_deref(),
        Some(terminated.as_str())
    );
    assert_eq!(
        w.status(&a.id).await,
        (SessionStatus::Ended, Some(EndReason::Terminated))
    );
}

#[tokio::test]
async fn watch_renews_past_the_ttl_and_ends_on_terminate() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "db").await.unwrap();
    let active = w
        .core
        .claim(w.core.open(&a.id, ALICE).await.unwrap())
        .await
        .unwrap();
    let first = w.grant(&a.id).await.unwrap().expires_at_ms;
    let watcher = w.watch(active);
    // Longer than the 2 s live TTL: renewals keep the grant.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!watcher.is_finished());
    }
    let later = w.grant(&a.id).await.expect("renewed past its TTL");
    assert!(later.expires_at_ms > first + 500);
    assert_eq!(later.state, GrantState::Active);

    let row = w.core.terminate(&a.id, "root").await.unwrap();
    assert_eq!(row.status, SessionStatus::Terminating);
    let reason = tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .expect("the relay ends within a few polls")
        .unwrap();
    assert_eq!(reason, EndReason::Terminated);
    w.core.end(&a.id, reason, Moved::default()).await;
    assert_eq!(
        w.status(&a.id).await,
        (SessionStatus::Ended, Some(EndReason::Terminated))
    );
}

#[tokio::test]
async fn watch_ends_on_state_loss_isolation_and_eviction() {
    let w = world().await;
    let start = async || {
        let a = w.core.authorise(ALICE, "db").await.unwrap();
        let active = w
            .core
            .claim(w.core.open(&a.id, ALICE).await.unwrap())
            .await
            .unwrap();
        (a.id, w.watch(active))
    };
    let within = Duration::from_secs(2);

    let (id, lost) = start().await;
    w.live.del(&session_key(&id)).await.unwrap();
    assert_eq!(
        tokio::time::timeout(within, lost).await.unwrap().unwrap(),
        EndReason::SessionStateLost
    );

    let (_, isolated) = start().await;
    w.isolated.send_replace(true);
    assert_eq!(
        tokio::time::timeout(within, isolated)
            .await
            .unwrap()
            .unwrap(),
        EndReason::ReplicaIsolated
    );
    w.isolated.send_replace(false);

    let (_, evicted) = start().await;
    w.evict.send_replace(true);
    assert_eq!(
        tokio::time::timeout(within, evicted)
            .await
            .unwrap()
            .unwrap(),
        EndReason::Drained
    );
}

#[tokio::test]
async fn cleanup_marks_lost_and_expires_only_under_a_current_fence() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "db").await.unwrap();
    w.core
        .claim(w.core.open(&a.id, ALICE).await.unwrap())
        .await
        .unwrap();
    assert_eq!(w.core.live_sessions().await.unwrap().len(), 1);
    let epoch = w.store.fence_job("cleanup", "r2").await.unwrap();
    assert!(
        !w.core
            .mark_lost(&a.id, "r1", "cleanup", epoch - 1)
            .await
            .unwrap(),
        "a stale epoch changes nothing"
    );
    assert!(
        w.core
            .mark_lost(&a.id, "r1", "cleanup", epoch)
            .await
            .unwrap()
    );
    assert!(
        !w.core
            .mark_lost(&a.id, "r1", "cleanup", epoch)
            .await
            .unwrap()
    );
    assert_eq!(
        w.status(&a.id).await,
        (SessionStatus::Ended, Some(EndReason::ReplicaLost))
    );
    // Fresh authorisations are not expired yet.
    let b = w.core.authorise(ALICE, "db").await.unwrap();
    let p = w.core.authorise(ALICE, "prod").await.unwrap();
    assert_eq!(w.core.expire_unused("cleanup", epoch).await.unwrap(), 0);
    assert_eq!(w.status(&b.id).await.0, SessionStatus::Authorized);
    assert_eq!(w.status(&p.id).await.0, SessionStatus::Pending);
}

#[tokio::test]
async fn a_late_decision_on_an_expired_request_says_so() {
    let w = world().await;
    let a = w.core.authorise(ALICE, "prod").await.unwrap();
    let epoch = w.store.fence_job("cleanup", "r1").await.unwrap();
    // Expire everything older than "now + 1 ms".
    let later = crate::store::now_ms() + 1 + APPROVAL_WINDOW_MS;
    tokio::time::sleep(Duration::from_millis(5)).await;
    w.store
        .expire_unused_sessions(later - APPROVAL_WINDOW_MS, 0, "cleanup", epoch)
        .await
        .unwrap();
    assert_eq!(
        w.status(&a.id).await,
        (SessionStatus::Ended, Some(EndReason::Expired))
    );
    assert!(matches!(
        w.core.decide(&a.id, Decision::Approved, "carol", "").await,
        Err(SessionError::ApprovalExpired(_))
    ));
}

#[tokio::test]
async fn direct_sessions_start_active_and_approval_targets_are_refused() {
    let w = world().await;
    assert!(matches!(
        w.core.prepare_direct(ALICE, "prod").await,
        Err(SessionError::ApprovalRequired(t)) if t == "prod"
    ));
    assert!(matches!(
        w.core.prepare_direct(ALICE, "nope").await,
        Err(SessionError::TargetNotFound(_))
    ));
    let direct = w.core.prepare_direct(ALICE, "db").await.unwrap();
    let id = direct.grant().session_id.clone();
    assert!(
        w.core.get(&id).await.unwrap().is_none(),
        "prepare changes nothing"
    );
    let active = w.core.start_direct(direct).await.unwrap();
    let row = w.core.get(&id).await.unwrap().unwrap();
    assert_eq!(row.status, SessionStatus::Active);
    assert_eq!(row.replica.as_deref(), Some("r1"));
    assert!(row.started_at.is_some());
    let g = w.grant(&id).await.unwrap();
    assert_eq!(
        (g.state, g.replica.as_deref()),
        (GrantState::Active, Some("r1"))
    );
    // It is a session like any other: another relay cannot take it, terminate ends it.
    assert!(matches!(
        w.core.open(&id, ALICE).await,
        Err(SessionError::InUse)
    ));
    let watcher = w.watch(active);
    w.core.terminate(&id, "root").await.unwrap();
    // The terminated grant names who did it (the token id when it has no name on record).
    assert_eq!(w.core.terminator(&id).await.as_deref(), Some("root"));
    assert_eq!(w.core.terminator("no-such-id").await, None);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), watcher)
            .await
            .unwrap()
            .unwrap(),
        EndReason::Terminated
    );
}

/// An admin may connect another user's session, but the record names the admin and both
/// addresses, never crediting the owner alone.
#[tokio::test]
async fn the_record_names_who_connected_and_from_where() {
    let w = world().await;
    let alice = Requester {
        from: Some("203.0.113.7:51234".parse().unwrap()),
        ..ALICE
    };
    let a = w.core.authorise(alice, "db").await.unwrap();
    let root = Requester {
        token_id: "root",
        admin: true,
        from: Some("198.51.100.9:40000".parse().unwrap()),
    };
    let active = w.core.claim(w.core.open(&a.id, root).await.unwrap()).await;
    assert!(active.is_ok());
    let row = w.core.get(&a.id).await.unwrap().unwrap();
    assert_eq!(row.token_id, "alice");
    assert_eq!(row.requested_from.as_deref(), Some("203.0.113.7:51234"));
    assert_eq!(row.connected_by.as_deref(), Some("root"));
    assert_eq!(row.connected_from.as_deref(), Some("198.51.100.9:40000"));

    let direct = w.core.prepare_direct(alice, "db").await.unwrap();
    let id = direct.grant().session_id.clone();
    w.core.start_direct(direct).await.unwrap();
    let row = w.core.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (row.connected_by.as_deref(), row.connected_from.as_deref()),
        (Some("alice"), Some("203.0.113.7:51234"))
    );
}

#[tokio::test]
async fn a_token_opening_sessions_too_fast_is_refused_with_a_wait_and_others_are_not() {
    let w = world_with(|c| {
        c.session_rate_per_token = crate::ratelimit::Rate::parse("1/m:3").unwrap();
    })
    .await;
    for _ in 0..3 {
        w.core.authorise(ALICE, "db").await.unwrap();
    }
    match w.core.authorise(ALICE, "db").await {
        Err(SessionError::RateLimited(wait)) => {
            assert!(wait > Duration::from_secs(10), "{wait:?}")
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    // The one-request relay counts against the same rate.
    assert!(matches!(
        w.core.prepare_direct(ALICE, "db").await,
        Err(SessionError::RateLimited(_))
    ));
    w.core.authorise(BOB, "db").await.unwrap();
}

#[tokio::test]
async fn a_token_holding_the_cap_is_refused_until_one_ends() {
    let w = world_with(|c| c.max_sessions_per_token = 2).await;
    let a = w.core.authorise(ALICE, "db").await.unwrap();
    let direct = w.core.prepare_direct(ALICE, "db").await.unwrap();
    let b = w.core.start_direct(direct).await.unwrap();
    assert!(matches!(
        w.core.authorise(ALICE, "db").await,
        Err(SessionError::TooManySessions(2))
    ));
    // The target is cached now, so the one-request path learns of the cap from the insert.
    assert!(matches!(
        w.core
            .start_direct(w.core.prepare_direct(ALICE, "db").await.unwrap())
            .await,
        Err(SessionError::TooManySessions(2))
    ));
    w.core.authorise(BOB, "db").await.unwrap();
    w.core
        .end(b.id(), EndReason::ClientClosed, Moved::default())
        .await;
    w.core.authorise(ALICE, "db").await.unwrap();
    let _ = a;
}

#[tokio::test]
async fn the_replica_carries_at_most_its_relay_cap_and_frees_places_when_relays_end() {
    let w = world_with(|c| c.max_relays = 1).await;
    let first = w.direct(ALICE, "db").await.unwrap();
    assert!(matches!(
        w.core
            .start_direct(w.core.prepare_direct(ALICE, "db").await.unwrap())
            .await,
        Err(SessionError::AtCapacity(1))
    ));
    let a = w.core.authorise(BOB, "db").await.unwrap();
    let opening = w.core.open(&a.id, BOB).await.unwrap();
    assert!(matches!(
        w.core.claim(opening.clone()).await,
        Err(SessionError::AtCapacity(1))
    ));
    assert_eq!(
        w.status(&a.id).await.0,
        SessionStatus::Authorized,
        "a refused claim leaves the authorisation usable"
    );
    w.core
        .end(first.id(), EndReason::ClientClosed, Moved::default())
        .await;
    drop(first);
    w.core.claim(opening).await.unwrap();
}

/// A linked gateway `gw` of region `eu` with a regional target `far`.
async fn with_gateway(w: &World) {
    let far = crate::store::now_ms() + 3_600_000;
    w.store
        .create_target_in("far", "127.0.0.1", 22, false, Some("eu"))
        .await
        .unwrap();
    w.store
        .create_join_token("h", "t", "eu", "admin", far, 1)
        .await
        .unwrap();
    w.store
        .join_gateway("h", "eu", "gw", far)
        .await
        .unwrap()
        .unwrap();
    let hb = crate::agent::proto::Heartbeat {
        region: "eu".into(),
        version: "1".into(),
        address: "127.0.0.1:1".into(),
        sessions: 0,
        live_sessions: vec![],
        lost_after_ms: 8_000,
    };
    assert!(w.store.gateway_heartbeat("gw", "r1", &hb).await.unwrap());
}

fn gateway_event(id: &str, kind: &str, reason: EndReason) -> crate::agent::proto::SessionEvent {
    crate::agent::proto::SessionEvent {
        session_id: id.into(),
        kind: kind.into(),
        token_id: "alice".into(),
        at_ms: crate::store::now_ms(),
        bytes_up: 5,
        bytes_down: 6,
        reason: reason.as_str().into(),
        ..Default::default()
    }
}

/// How many `kind` events the outbox holds for `subject`, once the background writes settle.
async fn outbox(w: &World, subject: &str, kind: &str) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut last = usize::MAX;
    loop {
        let n = w
            .store
            .events_after(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.subject == subject && e.kind == kind)
            .count();
        // Settled: the same count twice, 100 ms apart (the writes are spawned).
        if n == last || tokio::time::Instant::now() > deadline {
            return n;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_gateway_is_owed_terminates_for_what_ended_here_and_a_late_end_changes_nothing() {
    let w = world().await;
    with_gateway(&w).await;
    // Two sessions the gateway relays.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let a = w.core.authorise(ALICE, "far").await.unwrap();
        assert!(a.grant.is_some());
        w.core
            .remote_event("gw", &gateway_event(&a.id, "started", EndReason::Unknown))
            .await
            .unwrap();
        assert_eq!(w.status(&a.id).await.0, SessionStatus::Active);
        ids.push(a.id);
    }
    let (kept, cut) = (ids[0].clone(), ids[1].clone());
    // Nothing owed while both are active; an unknown id is ignored.
    let listed = vec![kept.clone(), cut.clone(), "nope".to_string()];
    assert!(
        w.core
            .owed_terminations("gw", &listed)
            .await
            .unwrap()
            .is_empty()
    );
    // Terminated here while (say) the link was down and the queued command got lost: the
    // gateway's next heartbeat listing it is answered with a terminate, every time.
    w.core.terminate(&cut, "admin").await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            w.core.owed_terminations("gw", &listed).await.unwrap(),
            vec![cut.clone()]
        );
    }
    // The gateway applies it; its end is recorded once, as terminated.
    let end = gateway_event(&cut, "ended", EndReason::Terminated);
    w.core.remote_event("gw", &end).await.unwrap();
    w.core.remote_event("gw", &end).await.unwrap();
    assert_eq!(
        w.status(&cut).await,
        (SessionStatus::Ended, Some(EndReason::Terminated))
    );
    assert_eq!(outbox(&w, &cut, "session.ended").await, 1);

    // The gateway then goes silent for good: the cleanup job ends what it held, once.
    let g = w.store.gateway("gw").await.unwrap().unwrap();
    let last = g.last_heartbeat_at.unwrap();
    assert!(!gateway_gone(&g, last + 8_000 + 1_000, 1_000));
    assert!(gateway_gone(&g, last + 8_000 + 1_001, 1_000));
    let epoch = w.store.fence_job("cleanup", "r1").await.unwrap();
    assert!(
        w.core
            .mark_lost(&kept, "gw", "cleanup", epoch)
            .await
            .unwrap()
    );
    assert_eq!(
        w.status(&kept).await,
        (SessionStatus::Ended, Some(EndReason::ReplicaLost))
    );
    // It returns after all and reports the same session ended (its relay closed after the
    // grace): neither the record nor the history changes.
    w.core
        .remote_event(
            "gw",
            &gateway_event(&kept, "ended", EndReason::ReplicaIsolated),
        )
        .await
        .unwrap();
    assert_eq!(
        w.status(&kept).await,
        (SessionStatus::Ended, Some(EndReason::ReplicaLost))
    );
    assert_eq!(outbox(&w, &kept, "session.ended").await, 1);
    // Were its relay somehow still running, the next heartbeat would stop it.
    assert_eq!(
        w.core
            .owed_terminations("gw", std::slice::from_ref(&kept))
            .await
            .unwrap(),
        vec![kept.clone()]
    );
}

/// The one-request path reads a target once per two seconds; whatever changed since, the
/// insert refuses the stale read, writes nothing, and the error says what changed.
#[tokio::test]
async fn a_cached_target_never_outlives_its_change() {
    let w = world().await;
    let count = async |w: &World| w.store.list_sessions(None, 100).await.unwrap().len();
    // The target `db` deleted and created again (a new id) on `port`.
    let recreate = async |w: &World, port: u16, require_approval: bool| {
        w.store.delete_target("db").await.unwrap();
        w.store
            .create_target("db", "127.0.0.1", port, require_approval)
            .await
            .unwrap();
    };
    // Read and cached.
    let first = w.direct(ALICE, "db").await.unwrap();
    assert_eq!(first.grant().port, 5432);
    let before = count(&w).await;

    // Recreated elsewhere with another port: the cached read is refused, and nothing stays
    // behind (no row, no live grant); the next attempt reads it afresh.
    recreate(&w, 5433, false).await;
    let stale = w.core.prepare_direct(ALICE, "db").await.unwrap();
    assert_eq!(stale.grant().port, 5432, "served from the cache");
    let stale_id = stale.grant().session_id.clone();
    assert!(matches!(
        w.core.start_direct(stale).await,
        Err(SessionError::TargetChanged(t)) if t == "db"
    ));
    assert_eq!(count(&w).await, before, "nothing written");
    assert!(w.grant(&stale_id).await.is_none(), "no live grant left");
    let fresh = w.direct(ALICE, "db").await.unwrap();
    assert_eq!(fresh.grant().port, 5433);

    // Now needing an approver: refused as such, never started from the cache.
    recreate(&w, 5433, true).await;
    let stale = w.core.prepare_direct(ALICE, "db").await.unwrap();
    assert!(matches!(
        w.core.start_direct(stale).await,
        Err(SessionError::ApprovalRequired(t)) if t == "db"
    ));
    // Deleted: refused as unknown, and the name is no longer cached.
    w.store.delete_target("db").await.unwrap();
    assert!(matches!(
        w.core.prepare_direct(ALICE, "db").await,
        Err(SessionError::TargetNotFound(_))
    ));
    assert_eq!(count(&w).await, before + 1);
}

/// A direct session's `session.started` event is written with its row, not after it.
#[tokio::test]
async fn a_direct_session_and_its_started_event_are_written_together() {
    let w = world().await;
    let active = w.direct(ALICE, "db").await.unwrap();
    let events = w.store.events_after(0, 100).await.unwrap();
    let started: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "session.started" && e.subject == active.id())
        .collect();
    assert_eq!(started.len(), 1, "{events:?}");
    let detail: serde_json::Value = serde_json::from_str(&started[0].detail).unwrap();
    assert_eq!(detail["target"], "db");
    assert_eq!(detail["replica"], "r1");
    assert_eq!(detail["by"], "alice");
}

/// `session.ended` is written with the end it announces: once, even when the end is recorded
/// twice (a relay and a retry), and with the relay's reason and bytes.
#[tokio::test]
async fn a_session_ends_with_exactly_one_ended_event() {
    let w = world().await;
    let active = w.direct(ALICE, "db").await.unwrap();
    let id = active.id().to_string();
    let moved = Moved { up: 3, down: 5 };
    w.core.end(&id, EndReason::ClientClosed, moved).await;
    w.core.end(&id, EndReason::TargetClosed, moved).await;
    let ended: Vec<_> = w
        .store
        .events_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == id && e.kind == "session.ended")
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    let detail: serde_json::Value = serde_json::from_str(&ended[0].detail).unwrap();
    assert_eq!(detail["reason"], "client_closed");
    assert_eq!(
        (detail["bytes_up"].as_u64(), detail["bytes_down"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(
        w.status(&id).await,
        (SessionStatus::Ended, Some(EndReason::ClientClosed))
    );
}
