//! Where a connection really comes from, for the audit trail, logs and per-client limits: its
//! TCP peer, or — behind a load balancer that does not preserve addresses and is configured to
//! send it — the address in the PROXY protocol header (v1 text or v2 binary) that precedes TLS.
//!
//! A header is accepted only from the peers named by `--proxy-protocol-from` (the load
//! balancer's addresses), so a client cannot choose the address it is recorded under: from any
//! other peer, or when the flag is unset, a connection that starts with a PROXY header is
//! closed. From a trusted peer the header is optional, detected by its signature (TLS starts
//! with a different byte): the kubelet's probes and an operator's direct `curl` still work, and
//! are recorded under their own address. Trust is by network, so keep the list as narrow as the
//! balancer's addresses (on Kubernetes, its subnets; never `0.0.0.0/0` on a reachable port).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Extension;
use futures::future::BoxFuture;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower::Layer;

use crate::limits::{Capped, CappedAcceptor};

/// The largest PROXY header accepted (v1 is at most 107 bytes; v2 carries TLVs such as a cloud
/// load balancer's endpoint id). Anything longer is refused before it is buffered.
pub const MAX_HEADER_BYTES: usize = 4096;

/// A connection's client, set on every request as an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client: the PROXY header's source address, or the TCP peer without one.
    pub addr: SocketAddr,
    /// The load balancer that sent the PROXY header, when there was one.
    pub proxy: Option<SocketAddr>,
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// The peers whose PROXY headers are believed; empty when the PROXY protocol is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyProtocol {
    from: Vec<IpNet>,
}

impl ProxyProtocol {
    /// Parses `--proxy-protocol-from`: comma-separated CIDRs or single addresses
    /// (`10.0.0.0/8, 192.0.2.10`); empty means off.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut from = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => item
                    .parse::<std::net::IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("`{item}` is not a CIDR (10.0.0.0/8) or an IP address"))?,
            };
            from.push(net.trunc());
        }
        Ok(Self { from })
    }

    /// Whether any peer may send a header.
    pub fn is_on(&self) -> bool {
        !self.from.is_empty()
    }

    /// Whether `peer` may send a header.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.from.iter().any(|n| n.contains(&peer))
    }
}

impl std::fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.from.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// Why a connection's PROXY header was refused (the connection is closed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// A PROXY header from a peer outside `--proxy-protocol-from` (or with it unset).
    #[error(
        "PROXY protocol header from {0}, which is not in --proxy-protocol-from; a client may not choose its recorded address"
    )]
    Untrusted(std::net::IpAddr),
    /// The connection closed before a complete header arrived.
    #[error("connection closed before a complete PROXY protocol header")]
    Closed,
    /// The first bytes start like a PROXY header but are not a valid v1 or v2 one.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    /// The header is longer than [`MAX_HEADER_BYTES`].
    #[error("PROXY protocol header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    /// The header did not arrive within the header-read timeout.
    #[error("no complete PROXY protocol header within {0:?}")]
    TimedOut(Duration),
}

/// What a parsed header says about the connection's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A proxied connection from this client.
    Client(SocketAddr),
    /// The proxy speaking for itself (v2 `LOCAL`, e.g. its health checks) or a family that
    /// carries no address (v1 `UNKNOWN`, Unix sockets): the TCP peer stands.
    Proxy,
}

/// Longest v1 header, CRLF included (the spec's 107 bytes).
const V1_MAX_BYTES: usize = 107;

/// Parses a complete header at the start of `buf`: `Ok(None)` while more bytes are needed,
/// else the source and the header's length (bytes after it belong to TLS).
fn parse(buf: &[u8]) -> Result<Option<(Source, usize)>, ProxyHeaderError> {
    use ppp::PartialResult;
    let parsed = ppp::HeaderResult::parse(buf);
    if parsed.is_incomplete() {
        return if buf.len() >= MAX_HEADER_BYTES {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(None)
        };
    }
    match parsed {
        // ppp ends a `PROXY UNKNOWN` header at a bare LF word and, with no CR in the buffer,
        // reports the whole buffer as the header: the bytes after it (TLS) were swallowed.
        // Every v1 header ends in CRLF; without one it is incomplete or invalid.
        ppp::HeaderResult::V1(Ok(h)) if !h.header.ends_with("\r\n") => {
            let cr = h.header.find('\r');
            let partial = h.header.len() == buf.len()
                && buf.len() < V1_MAX_BYTES
                && !h.header.contains('\n')
                && cr.is_none_or(|i| i + 1 == buf.len());
            if partial {
                Ok(None)
            } else {
                Err(ProxyHeaderError::Invalid(
                    "a v1 header must end in CRLF".into(),
                ))
            }
        }
        ppp::HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => Source::Proxy,
            };
            Ok(Some((source, h.header.len())))
        }
        ppp::HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    Source::Client(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => Source::Proxy,
            };
            Ok(Some((source, h.header.len())))
        }
        ppp::HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Invalid(format!("{e:?}"))),
        ppp::HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Invalid(format!("{e:?}"))),
    }
}

/// [`parse`] for the fuzz targets (`fuzz/`): `Ok(None)` while more bytes are needed, else the
/// client the header names (`None`: the proxy speaks for itself) and the header's length.
#[doc(hidden)]
pub fn parse_header(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, ProxyHeaderError> {
    Ok(parse(buf)?.map(|(source, len)| match source {
        Source::Client(addr) => (Some(addr), len),
        Source::Proxy => (None, len),
    }))
}

/// Whether the first bytes of a connection start a PROXY header (v1 `PROXY `, v2's `\r\n`
/// signature) rather than TLS (`0x16`).
fn starts_header(first: u8) -> bool {
    first == b'P' || first == b'\r'
}

/// Learns the client of a connection from `peer` under `pp`: reads a PROXY header when the
/// connection starts with one (from a trusted peer only), returning the client and the bytes
/// read past the header (or, without a header, every byte read so far).
async fn read_client<R: AsyncRead + Unpin>(
    io: &mut R,
    peer: SocketAddr,
    pp: &ProxyProtocol,
) -> Result<(ClientAddr, Vec<u8>), ProxyHeaderError> {
    let direct = ClientAddr {
        addr: peer,
        proxy: None,
    };
    if !pp.is_on() {
        return Ok((direct, Vec::new()));
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|_| ProxyHeaderError::Closed)?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if !starts_header(buf[0]) {
            return Ok((direct, buf));
        }
        if !pp.trusts(peer.ip()) {
            return Err(ProxyHeaderError::Untrusted(peer.ip()));
        }
        if let Some((source, len)) = parse(&buf)? {
            let rest = buf.split_off(len);
            let addr = match source {
                Source::Client(addr) => addr,
                Source::Proxy => peer,
            };
            return Ok((
                ClientAddr {
                    addr,
                    proxy: Some(peer),
                },
                rest,
            ));
        }
    }
}

/// A connection after its client address is known: the bytes read past a PROXY header come
/// first, then the TCP stream.
#[derive(Debug)]
pub struct Addressed {
    rest: Vec<u8>,
    at: usize,
    inner: Capped,
}

impl AsyncRead for Addressed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.rest.len() {
            let n = buf.remaining().min(self.rest.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.rest[at..at + n]);
            self.at += n;
            if self.at == self.rest.len() {
                self.rest = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Addressed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts a connection under the connection cap, learns its client (from a trusted peer's
/// PROXY header, within `header_timeout`), and hands every request on it a [`ClientAddr`]
/// extension.
#[derive(Debug, Clone)]
pub struct ClientAddrAcceptor {
    capped: CappedAcceptor,
    proxy_protocol: std::sync::Arc<ProxyProtocol>,
    header_timeout: Duration,
    refused: prometheus::IntCounter,
}

impl ClientAddrAcceptor {
    /// `refused` counts connections closed for a missing or invalid PROXY header.
    pub fn new(
        capped: CappedAcceptor,
        proxy_protocol: ProxyProtocol,
        header_timeout: Duration,
        refused: prometheus::IntCounter,
    ) -> Self {
        Self {
            capped,
            proxy_protocol: std::sync::Arc::new(proxy_protocol),
            header_timeout,
            refused,
        }
    }
}

impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for ClientAddrAcceptor {
    type Stream = Addressed;
    type Service = axum::middleware::AddExtension<S, ClientAddr>;
    type Future = BoxFuture<'static, io::Result<(Addressed, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let capped = self.capped.accept_now(stream);
        let (pp, timeout, refused) = (
            self.proxy_protocol.clone(),
            self.header_timeout,
            self.refused.clone(),
        );
        Box::pin(async move {
            let mut inner = capped?;
            let peer = inner.peer();
            let read = tokio::time::timeout(timeout, read_client(&mut inner, peer, &pp)).await;
            let (client, rest) = match read.unwrap_or(Err(ProxyHeaderError::TimedOut(timeout))) {
                Ok(found) => found,
                Err(e) => {
                    refused.inc();
                    tracing::warn!(event = "connection_refused", reason = "proxy_protocol", peer = %peer, error = %e);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let service = Extension(client).layer(service);
            Ok((Addressed { rest, at: 0, inner }, service))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_header_is_complete_only_with_its_crlf() {
        // Found by `fuzz/` (proxy_header): ppp accepted these as complete headers.
        let crash = b"PROXY UNKNOWN OXY  UNKNOWN \n 8R.OXY UllllllWN OXYlXYl";
        assert!(matches!(parse(crash), Err(ProxyHeaderError::Invalid(_))));
        assert_eq!(parse(b"PROXY UNKNOWN"), Ok(None));
        assert_eq!(parse(b"PROXY UNKNOWN\r"), Ok(None));
        // A bare LF ended the header in ppp's eyes, and the TLS bytes after it were taken as
        // part of the header.
        assert!(matches!(
            parse(b"PROXY UNKNOWN \n \x16\x03\x01"),
            Err(ProxyHeaderError::Invalid(_))
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n\x16\x03"),
            Ok(Some((Source::Proxy, 15)))
        );
        let tcp4 = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 8443\r\n\x16";
        assert_eq!(
            parse(tcp4),
            Ok(Some((
                Source::Client("192.0.2.1:56324".parse().unwrap()),
                tcp4.len() - 1
            )))
        );
    }

    fn v2(source: SocketAddr, local: bool) -> Vec<u8> {
        let command = if local {
            ppp::v2::Command::Local
        } else {
            ppp::v2::Command::Proxy
        };
        let dest: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | command,
            ppp::v2::Protocol::Stream,
            (source, dest),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn v1_and_v2_headers_name_the_client_and_their_length() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8443\r\n\x16\x03\x01";
        assert_eq!(
            parse(v1).unwrap(),
            Some((Source::Client("203.0.113.7:51234".parse().unwrap()), 44))
        );
        let v1_6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 8443\r\n";
        assert_eq!(
            parse(v1_6).unwrap(),
            Some((
                Source::Client("[2001:db8::7]:4000".parse().unwrap()),
                v1_6.len()
            ))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Some((Source::Proxy, 15))
        );
        let client: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let mut h = v2(client, false);
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse(&h).unwrap(), Some((Source::Client(client), len)));
        assert_eq!(
            parse(&v2(client, true)).unwrap().map(|(s, _)| s),
            Some(Source::Proxy)
        );
    }

    #[test]
    fn partial_headers_wait_and_garbage_or_tls_is_refused() {
        let h = v2("198.51.100.9:40000".parse().unwrap(), false);
        for cut in [1, 5, 12, 15, h.len() - 1] {
            assert_eq!(parse(&h[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), None);
        // A TLS ClientHello where a header should be.
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefgh"),
            Err(ProxyHeaderError::Invalid(_))
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n"),
            Err(ProxyHeaderError::Invalid(_))
        ));
    }

    #[test]
    fn an_endless_header_is_refused_at_the_bound() {
        // A v2 signature declaring 60,000 bytes of TLVs.
        let mut h = v2("198.51.100.9:40000".parse().unwrap(), false);
        h[14] = 0xEA;
        h[15] = 0x60;
        h.resize(MAX_HEADER_BYTES, 0);
        assert_eq!(parse(&h), Err(ProxyHeaderError::TooLong));
    }

    fn lb() -> ProxyProtocol {
        ProxyProtocol::parse("10.0.0.0/8, 192.0.2.10").unwrap()
    }

    #[test]
    fn the_trusted_list_parses_cidrs_and_addresses_and_names_bad_items() {
        let pp = lb();
        assert!(pp.trusts("10.1.2.3".parse().unwrap()));
        assert!(pp.trusts("192.0.2.10".parse().unwrap()));
        assert!(
            pp.trusts("::ffff:10.9.9.9".parse().unwrap()),
            "v4-mapped peers"
        );
        assert!(!pp.trusts("192.0.2.11".parse().unwrap()));
        assert!(!ProxyProtocol::parse("").unwrap().is_on());
        let e = ProxyProtocol::parse("10.0.0.0/8,nope").unwrap_err();
        assert!(e.contains("`nope`"), "{e}");
        assert_eq!(lb().to_string(), "10.0.0.0/8,192.0.2.10/32");
    }

    #[tokio::test]
    async fn untrusted_peers_may_not_send_a_header_and_direct_tls_passes_untouched() {
        let header = v2("203.0.113.7:51234".parse().unwrap(), false);
        let stranger: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let (mut c, mut s) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut c, &header)
            .await
            .unwrap();
        assert_eq!(
            read_client(&mut s, stranger, &lb()).await,
            Err(ProxyHeaderError::Untrusted(stranger.ip()))
        );
        // TLS from the balancer itself (a probe), no header: direct, bytes kept.
        let balancer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let (mut c, mut s) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut c, b"\x16\x03\x01hello")
            .await
            .unwrap();
        let (addr, rest) = read_client(&mut s, balancer, &lb()).await.unwrap();
        assert_eq!((addr.addr, addr.proxy), (balancer, None));
        assert_eq!(rest, b"\x16\x03\x01hello");
        // Off: nothing is read at all.
        let (_c, mut s) = tokio::io::duplex(1024);
        let (addr, rest) = read_client(&mut s, balancer, &ProxyProtocol::default())
            .await
            .unwrap();
        assert_eq!((addr.addr, rest.len()), (balancer, 0));
    }

    #[tokio::test]
    async fn bytes_after_the_header_are_kept_for_tls() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let pp = lb();
        let mut sent = v2("203.0.113.7:51234".parse().unwrap(), false);
        sent.extend_from_slice(b"hello");
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // In pieces, as a slow network would deliver it.
            for piece in sent.chunks(7) {
                client.write_all(piece).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let (addr, rest) = read_client(&mut server, peer, &pp).await.unwrap();
        assert_eq!(addr.addr, "203.0.113.7:51234".parse().unwrap());
        assert_eq!(addr.proxy, Some(peer));
        let mut more = vec![0u8; 5 - rest.len()];
        server.read_exact(&mut more).await.unwrap();
        assert_eq!([rest, more].concat(), b"hello");
    }
}
