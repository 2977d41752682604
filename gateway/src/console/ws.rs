//! `GET /console/api/terminal/{target}` (WebSocket): the browser terminal's transport. Binary
//! frames carry terminal bytes both ways; JSON text frames carry control: from the page
//! `{"type":"resize","cols":C,"rows":R}`, from the server `{"type":"open","session":ID}` (the
//! session exists; it may still wait for an approver), `{"type":"notice","message":…}` (waiting,
//! approved, connected), `{"type":"end","reason":…}` (denied, terminated, the shell exited …) and
//! `{"type":"error","code":…,"message":…}`. The server pings; a page that answers nothing for
//! three intervals is dropped. Authentication is the console cookie with a same-origin `Origin`
//! (see [`super::session`]), checked before the upgrade.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, MissedTickBehavior};

use super::terminal::{
    Identity, OpenTerminal, PtySize, TerminalError, TerminalInput, TerminalOutput, TerminalSession,
};
use crate::api::{ApiError, AppState, Caller};

/// Largest frame the page may send (a paste is split by the browser terminal long before).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Ping interval when the relay keep-alive sets none.
const DEFAULT_PING: Duration = Duration::from_secs(20);

/// Close code: the session ended normally or the page asked.
const CLOSE_NORMAL: u16 = 1000;
/// Close code: the terminal could not be opened or the server failed.
const CLOSE_ERROR: u16 = 1011;

/// The page's initial size (`?cols=&rows=`).
#[derive(Debug, Deserialize)]
pub struct SizeQuery {
    #[serde(default)]
    cols: Option<u16>,
    #[serde(default)]
    rows: Option<u16>,
}

/// A control message from the page.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientControl {
    /// The terminal changed size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
}

/// A control message to the page.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerControl {
    /// The session exists (the shell follows, perhaps after an approver decides).
    Open {
        /// Its id.
        session: String,
    },
    /// Something for the user outside the terminal stream.
    Notice {
        /// The text.
        message: String,
    },
    /// The session ended.
    End {
        /// Why.
        reason: String,
    },
    /// The terminal could not be opened.
    Error {
        /// Stable code ([`TerminalError::code`]).
        code: String,
        /// The text.
        message: String,
    },
}

fn text(c: &ServerControl) -> Message {
    Message::Text(serde_json::to_string(c).unwrap_or_default().into())
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    }))
}

/// The upgrade: authenticated (cookie and origin, by [`Caller`]) before anything is opened.
pub async fn terminal(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    client: Option<axum::Extension<crate::client_addr::ClientAddr>>,
    Path(target): Path<String>,
    Query(q): Query<SizeQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let size = PtySize::new(q.cols.unwrap_or(80), q.rows.unwrap_or(24)).unwrap_or_default();
    let req = OpenTerminal {
        target,
        identity: Identity {
            token_id: caller.token_id.clone(),
            name: caller.name.clone(),
            role: caller.role,
            from: client.map(|axum::Extension(c)| c.addr),
        },
        size,
        term: "xterm-256color".into(),
    };
    let ping = st.relay_keepalive.ping_every.unwrap_or(DEFAULT_PING);
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            let opened = st.terminals.open(req).await;
            serve(socket, opened, ping).await;
        }))
}

/// Carries one terminal between the socket and the backend until either ends.
pub async fn serve(
    mut socket: WebSocket,
    opened: Result<TerminalSession, TerminalError>,
    ping: Duration,
) {
    let mut session = match opened {
        Ok(s) => s,
        Err(e) => {
            let msg = ServerControl::Error {
                code: e.code().into(),
                message: e.to_string(),
            };
            let _ = socket.send(text(&msg)).await;
            let _ = socket.send(close(CLOSE_ERROR, e.code())).await;
            return;
        }
    };
    if socket
        .send(text(&ServerControl::Open {
            session: session.session_id.clone(),
        }))
        .await
        .is_err()
    {
        return;
    }
    let mut ticker = tokio::time::interval_at(Instant::now() + ping, ping);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            msg = socket.recv() => {
                let Some(Ok(msg)) = msg else { return };
                heard = Instant::now();
                let input = match msg {
                    Message::Binary(b) => Some(TerminalInput::Data(b)),
                    Message::Text(t) => match serde_json::from_str::<ClientControl>(t.as_str()) {
                        Ok(ClientControl::Resize { cols, rows }) => PtySize::new(cols, rows).map(TerminalInput::Resize),
                        Err(_) => None,
                    },
                    Message::Close(_) => return,
                    Message::Ping(_) | Message::Pong(_) => None,
                };
                if let Some(input) = input
                    && session.input.send(input).await.is_err()
                {
                    let _ = socket.send(text(&ServerControl::End { reason: "the session ended".into() })).await;
                    let _ = socket.send(close(CLOSE_NORMAL, "ended")).await;
                    return;
                }
            }
            out = session.output.recv() => {
                let (msg, last) = match out {
                    Some(TerminalOutput::Data(b)) => (Message::Binary(b), false),
                    Some(TerminalOutput::Notice(m)) => (text(&ServerControl::Notice { message: m }), false),
                    Some(TerminalOutput::Ended(reason)) => (text(&ServerControl::End { reason }), true),
                    None => (text(&ServerControl::End { reason: "the SSH front end closed the session".into() }), true),
                };
                if socket.send(msg).await.is_err() {
                    return;
                }
                if last {
                    let _ = socket.send(close(CLOSE_NORMAL, "ended")).await;
                    return;
                }
            }
            _ = ticker.tick() => {
                if heard.elapsed() > ping * 3 {
                    tracing::info!(event = "console_terminal_unresponsive", session = %session.session_id, "the page stopped answering pings");
                    let _ = socket.send(close(CLOSE_ERROR, "unresponsive")).await;
                    return;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message as Client;

    /// The browser's side of the socket.
    type Page = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Serves one terminal whose far end is the test itself (what the SSH front end would be),
    /// over a real WebSocket on loopback; returns the client socket and the far end's channels.
    async fn bridge(
        opened: Option<TerminalError>,
        ping: Duration,
    ) -> (
        Page,
        mpsc::Receiver<TerminalInput>,
        mpsc::Sender<TerminalOutput>,
    ) {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::channel(16);
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(match opened {
            Some(e) => Err(e),
            None => Ok(TerminalSession {
                session_id: "s-1".into(),
                input: in_tx,
                output: out_rx,
            }),
        })));
        let app = axum::Router::new().route(
            "/t",
            axum::routing::get(move |ws: WebSocketUpgrade| {
                let slot = slot.clone();
                async move {
                    ws.on_upgrade(move |socket| async move {
                        let opened = slot.lock().unwrap().take().unwrap();
                        serve(socket, opened, ping).await;
                    })
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/t"))
            .await
            .unwrap();
        (client, in_rx, out_tx)
    }

    async fn next_text<S>(c: &mut S) -> serde_json::Value
    where
        S: futures::Stream<Item = Result<Client, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        loop {
            match c.next().await.unwrap().unwrap() {
                Client::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Client::Ping(_) | Client::Pong(_) => continue,
                other => panic!("expected a control frame, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn bytes_are_binary_frames_and_control_is_json() {
        let (mut c, mut input, output) = bridge(None, Duration::from_secs(30)).await;
        assert_eq!(next_text(&mut c).await["type"], "open");
        c.send(Client::Binary(b"ls\r".to_vec().into()))
            .await
            .unwrap();
        assert_eq!(
            input.recv().await,
            Some(TerminalInput::Data(bytes::Bytes::from_static(b"ls\r")))
        );
        c.send(Client::Text(
            r#"{"type":"resize","cols":132,"rows":43}"#.into(),
        ))
        .await
        .unwrap();
        assert_eq!(
            input.recv().await,
            Some(TerminalInput::Resize(PtySize {
                cols: 132,
                rows: 43
            }))
        );
        // Out-of-bounds sizes and unknown control are dropped, not passed on.
        c.send(Client::Text(
            r#"{"type":"resize","cols":0,"rows":43}"#.into(),
        ))
        .await
        .unwrap();
        c.send(Client::Text(r#"{"type":"exec"}"#.into()))
            .await
            .unwrap();
        c.send(Client::Binary(b"x".to_vec().into())).await.unwrap();
        assert_eq!(
            input.recv().await,
            Some(TerminalInput::Data(bytes::Bytes::from_static(b"x")))
        );
        output
            .send(TerminalOutput::Data(bytes::Bytes::from_static(b"file\r\n")))
            .await
            .unwrap();
        match c.next().await.unwrap().unwrap() {
            Client::Binary(b) => assert_eq!(&b[..], b"file\r\n"),
            other => panic!("terminal bytes came as {other:?}"),
        }
        output
            .send(TerminalOutput::Ended("terminated by an admin".into()))
            .await
            .unwrap();
        let end = next_text(&mut c).await;
        assert_eq!(end["type"], "end");
        assert_eq!(end["reason"], "terminated by an admin");
        match c.next().await.unwrap().unwrap() {
            Client::Close(Some(f)) => assert_eq!(u16::from(f.code), CLOSE_NORMAL),
            other => panic!("expected a close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_target_without_ssh_mode_gets_an_error_and_a_close() {
        let e = TerminalError::NotSsh {
            target: "db1".into(),
            detail: None,
        };
        let (mut c, _input, _output) = bridge(Some(e), Duration::from_secs(30)).await;
        let err = next_text(&mut c).await;
        assert_eq!(err["type"], "error");
        assert_eq!(err["code"], "ssh_unavailable");
        assert!(err["message"].as_str().unwrap().contains("`db1`"), "{err}");
        match c.next().await.unwrap().unwrap() {
            Client::Close(Some(f)) => assert_eq!(u16::from(f.code), CLOSE_ERROR),
            other => panic!("expected a close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_server_pings_and_drops_a_silent_page() {
        let ping = Duration::from_millis(100);
        let (c, mut input, _output) = bridge(None, ping).await;
        // The page stays silent (its tab froze): nothing is read or sent, so no pong either.
        // The server gives up after three intervals and the backend sees the session go.
        let started = tokio::time::Instant::now();
        let gone = tokio::time::timeout(Duration::from_secs(30), input.recv()).await;
        assert_eq!(gone, Ok(None), "the session outlived a silent page");
        assert!(
            started.elapsed() >= ping * 3,
            "dropped after {:?}",
            started.elapsed()
        );
        // What the page would have read: the pings it never answered, then the end.
        let mut stream = c;
        let (mut pings, mut ended) = (0, false);
        while let Some(m) = stream.next().await {
            match m {
                Ok(Client::Ping(_)) => pings += 1,
                Ok(Client::Close(f)) => {
                    assert_eq!(f.map(|f| u16::from(f.code)), Some(CLOSE_ERROR));
                    ended = true;
                    break;
                }
                Ok(_) => {}
                // Reading queues pongs; writing them to the closed socket may fail first.
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        assert!(pings >= 2, "{pings} pings before the server gave up");
        assert!(ended);
    }

    #[test]
    fn control_messages_have_their_wire_shape() {
        assert_eq!(
            serde_json::from_str::<ClientControl>(r#"{"type":"resize","cols":100,"rows":30}"#).ok(),
            Some(ClientControl::Resize {
                cols: 100,
                rows: 30
            })
        );
        assert!(serde_json::from_str::<ClientControl>(r#"{"type":"exec","cmd":"x"}"#).is_err());
        let end = serde_json::to_string(&ServerControl::End {
            reason: "terminated by admin".into(),
        })
        .unwrap_or_default();
        assert_eq!(end, r#"{"type":"end","reason":"terminated by admin"}"#);
    }
}
