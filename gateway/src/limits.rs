//! Bounds on what a client can hold before (and without) authenticating: a per-replica cap on
//! open connections, the TLS handshake and first-request deadlines, HTTP/1 header-read and
//! HTTP/2 keep-alive timeouts, and a deadline on every non-streaming request. Assume a hostile
//! network in front of 8443: a slow client must not exhaust a replica or fail its probes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ratelimit::Rate;

/// Default `--max-connections`: room for 10,000 relayed sessions plus API traffic.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Default `--header-read-timeout`: the TLS handshake, the first request and every request's
/// headers must arrive within it.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--request-timeout` for non-streaming API requests.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 keep-alive ping interval (and how long a ping may go unanswered).
pub const HTTP2_KEEPALIVE: Duration = Duration::from_secs(20);
/// Default `--relay-ping-interval`: well inside the shortest common load-balancer idle limit
/// (AWS ALB 60 s; NLB 350 s; HAProxy's `timeout tunnel` as configured).
pub const DEFAULT_RELAY_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Default `--requests-per-ip`: every request but the probes and `/metrics`, per client
/// address. Generous for people and scripts; behind a load balancer that hides client addresses
/// (no PROXY protocol) every client shares the balancer's budget, so raise it or turn it off.
pub const DEFAULT_REQUESTS_PER_IP: &str = "100/s:500";
/// Default `--auth-failures-per-ip`: refused tokens per client address; past it, requests
/// whose token is not already cached are answered 429 without asking Postgres.
pub const DEFAULT_AUTH_FAILURES_PER_IP: &str = "2/s:30";
/// Default `--session-rate-per-token`: new sessions (`POST /v1/sessions` and the one-request
/// relay) per token, fleet-wide per replica.
pub const DEFAULT_SESSION_RATE_PER_TOKEN: &str = "5/s:50";
/// Default `--max-sessions-per-token`: sessions a token holds at once across the fleet
/// (pending, authorised and not yet used, or relayed).
pub const DEFAULT_MAX_SESSIONS_PER_TOKEN: u32 = 200;
/// Default `--max-relays`: relays one replica carries at once; below the connection cap so API
/// traffic still gets in when it is full.
pub const DEFAULT_MAX_RELAYS: usize = 15_000;

/// The limits of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections this replica accepts at once; more are closed at accept.
    pub max_connections: usize,
    /// Deadline for the TLS handshake, the first request, and each request's headers.
    pub header_read_timeout: Duration,
    /// Deadline for a non-streaming request (relays and event streams are exempt).
    pub request_timeout: Duration,
    /// Pings on relays (keeping load balancers from cutting idle sessions, finding dead
    /// clients) and the optional relay idle timeout.
    pub relay: crate::pump::Keepalive,
    /// Peers whose PROXY protocol headers are believed (off when empty).
    pub proxy_protocol: crate::client_addr::ProxyProtocol,
    /// Requests per client address (probes and `/metrics` exempt).
    pub requests_per_ip: Rate,
    /// Refused tokens per client address.
    pub auth_failures_per_ip: Rate,
    /// New sessions per token (per replica).
    pub session_rate_per_token: Rate,
    /// Sessions a token holds at once, fleet-wide; 0: no cap.
    pub max_sessions_per_token: u32,
    /// Relays this replica carries at once; 0: no cap.
    pub max_relays: usize,
}

/// A default rate constant, parsed (they are valid; a typo would show in the tests as `off`).
fn default_rate(s: &str) -> Rate {
    Rate::parse(s).unwrap_or(Rate::OFF)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            relay: crate::pump::Keepalive {
                ping_every: Some(DEFAULT_RELAY_PING_INTERVAL),
                idle_after: None,
            },
            proxy_protocol: Default::default(),
            requests_per_ip: default_rate(DEFAULT_REQUESTS_PER_IP),
            auth_failures_per_ip: default_rate(DEFAULT_AUTH_FAILURES_PER_IP),
            session_rate_per_token: default_rate(DEFAULT_SESSION_RATE_PER_TOKEN),
            max_sessions_per_token: DEFAULT_MAX_SESSIONS_PER_TOKEN,
            max_relays: DEFAULT_MAX_RELAYS,
        }
    }
}

/// Accepts a TCP connection only while fewer than the cap are open (closing it at once
/// otherwise), and sets `TCP_NODELAY`: without it a handshake's small writes wait for delayed
/// ACKs (about 40 ms per session setup on Linux).
#[derive(Debug, Clone)]
pub struct CappedAcceptor {
    permits: Arc<Semaphore>,
    refused: prometheus::IntCounter,
}

impl CappedAcceptor {
    /// At most `max` connections at once; refusals are counted in `refused`.
    pub fn new(max: usize, refused: prometheus::IntCounter) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.max(1))),
            refused,
        }
    }
}

impl CappedAcceptor {
    /// Takes a permit for `stream` (refusing it when the cap is reached) and sets
    /// `TCP_NODELAY`.
    pub fn accept_now(&self, stream: TcpStream) -> io::Result<Capped> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.refused.inc();
            tracing::warn!(event = "connection_refused", reason = "max_connections");
            return Err(io::Error::other(
                "connection cap reached; closing the new connection",
            ));
        };
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        Ok(Capped {
            stream,
            peer,
            _permit: permit,
        })
    }
}

impl<S> axum_server::accept::Accept<TcpStream, S> for CappedAcceptor {
    type Stream = Capped;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Capped, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.accept_now(stream).map(|c| (c, service)))
    }
}

/// A TCP connection that holds one of the cap's permits until it closes.
#[derive(Debug)]
pub struct Capped {
    stream: TcpStream,
    peer: std::net::SocketAddr,
    _permit: OwnedSemaphorePermit,
}

impl Capped {
    /// The TCP peer (the client, or the load balancer in front of it).
    pub fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod defaults {
    #[test]
    fn default_rates_are_valid() {
        for r in [
            super::DEFAULT_REQUESTS_PER_IP,
            super::DEFAULT_AUTH_FAILURES_PER_IP,
            super::DEFAULT_SESSION_RATE_PER_TOKEN,
        ] {
            assert!(
                crate::ratelimit::Rate::parse(r).is_ok_and(|r| r.limit.is_some()),
                "{r}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum_server::accept::Accept;

    #[tokio::test]
    async fn the_cap_refuses_connections_beyond_it_and_frees_on_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = prometheus::IntCounter::new("t", "t").unwrap();
        let acceptor = CappedAcceptor::new(2, refused.clone());
        let mut held = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (s, _) = listener.accept().await.unwrap();
            held.push(acceptor.accept(s, ()).await);
        }
        assert!(held[0].is_ok() && held[1].is_ok());
        assert!(held[2].is_err(), "the third connection is over the cap");
        assert_eq!(refused.get(), 1);
        drop(held.remove(0));
        clients.push(TcpStream::connect(addr).await.unwrap());
        let (s, _) = listener.accept().await.unwrap();
        assert!(
            acceptor.accept(s, ()).await.is_ok(),
            "a closed one frees its place"
        );
    }
}
