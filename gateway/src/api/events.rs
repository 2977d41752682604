//! `GET /v1/events`: a server-sent-events stream of approval requests and decisions and session
//! starts and ends. Live events come from the Redis stream the leased fan-out job feeds; a
//! client that reconnects with `Last-Event-ID` (or `?since=ID`) first gets what it missed from
//! the Postgres outbox. Event ids are the outbox ids, so duplicates between the two are dropped.
//! The stream re-checks its token in Postgres every [`TOKEN_CACHE_TTL`] and ends when the token
//! is revoked or expires (or cannot be confirmed): a revoked approver stops seeing requests
//! within that period plus one poll, on every replica; after a mere database blip a client
//! reconnects with `Last-Event-ID`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;

use super::auth::lookup;
use super::{ApiError, AppState, Caller, TOKEN_CACHE_TTL};
use crate::live::EVENTS_STREAM;
use crate::store::EventRow;
use crate::token::Role;

/// How often a subscriber looks at the stream.
const POLL: Duration = Duration::from_millis(250);

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Replay outbox events after this id first.
    #[serde(default)]
    since: Option<i64>,
}

fn sse(e: &EventRow) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event(e.kind.clone())
        .data(serde_json::to_string(&crate::wire::Event::from(e.clone())).unwrap_or_default())
}

fn entry_id(cursor: &Option<String>) -> &str {
    cursor.as_deref().unwrap_or("?")
}

/// The stream.
pub async fn stream(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Role::Approver)?;
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(q.since);
    // Start following the stream where it ends now; then replay the gap from Postgres.
    let cursor = st.live.stream_last_id(EVENTS_STREAM).await?;
    let replay = match since {
        Some(id) => st.store.events_after(id, 1000).await?,
        None => Vec::new(),
    };
    let last_sent = replay.last().map(|e| e.id).or(since).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    tokio::spawn(async move {
        for e in &replay {
            if tx.send(sse(e)).await.is_err() {
                return;
            }
        }
        let mut cursor = cursor;
        let mut last_sent = last_sent;
        let mut checked = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            if checked.elapsed() >= TOKEN_CACHE_TTL {
                checked = tokio::time::Instant::now();
                if let Err(e) = lookup(&st, &caller.token_hash).await {
                    tracing::info!(event = "event_stream_closed", token = %caller.token_id, code = %e.body.code, "token no longer accepted; ending the event stream");
                    return;
                }
            }
            let entries = match st
                .live
                .stream_after(EVENTS_STREAM, cursor.as_deref(), 100)
                .await
            {
                Ok(e) => e,
                // Redis unavailable: keep the stream open; the client may reconnect to replay.
                Err(_) => continue,
            };
            for (entry, doc) in entries {
                cursor = Some(entry);
                let e = match crate::event_seal::open(&st.keyring, &doc) {
                    Ok(e) => e,
                    Err(error) => {
                        tracing::warn!(event = "event_rejected", entry = %entry_id(&cursor), error = %error, "dropping a stream entry whose seal does not verify");
                        continue;
                    }
                };
                if e.id <= last_sent {
                    continue;
                }
                last_sent = e.id;
                if tx.send(sse(&e)).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
