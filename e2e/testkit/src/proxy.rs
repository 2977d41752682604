//! A TCP forwarder on loopback that a test can cut: the per-replica link to a dependency, for
//! isolating one replica (a partition) while its peers keep their links.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{IoContext, Result};

#[derive(Debug, Default)]
struct State {
    cut: AtomicBool,
    stop: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

/// Forwards 127.0.0.1:`port()` to 127.0.0.1:`target`.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    state: Arc<State>,
}

impl TcpProxy {
    /// Starts forwarding to `target`.
    pub fn start(target: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context(|| "binding proxy".into())?;
        let port = listener
            .local_addr()
            .context(|| "proxy address".into())?
            .port();
        let state = Arc::new(State::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                if st.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = forward(&st, client, server);
            }
        });
        Ok(Self { port, state })
    }

    /// The port to connect to instead of the target's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Partition: closes every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        let mut open = self.state.open.lock().unwrap_or_else(|p| p.into_inner());
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Heals the partition.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

fn forward(st: &Arc<State>, client: TcpStream, server: TcpStream) -> io::Result<()> {
    {
        let mut open = st.open.lock().unwrap_or_else(|p| p.into_inner());
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
    }
    for (mut from, mut to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn forwards_until_cut_and_again_after_restore() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = c.try_clone().unwrap();
                    let mut w = c;
                    let _ = io::copy(&mut r, &mut w);
                });
            }
        });
        let p = TcpProxy::start(target).unwrap();
        let roundtrip = || -> io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", p.port()))?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
            s.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into())
        };
        assert_eq!(roundtrip().unwrap(), "ping");
        let mut live = TcpStream::connect(("127.0.0.1", p.port())).unwrap();
        live.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        live.read_exact(&mut one).unwrap();
        p.cut();
        assert!(roundtrip().is_err(), "new connections must fail while cut");
        let mut rest = Vec::new();
        live.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        assert_eq!(
            live.read_to_end(&mut rest).unwrap_or(0),
            0,
            "open connections must be closed"
        );
        p.restore();
        assert_eq!(roundtrip().unwrap(), "ping");
    }
}
