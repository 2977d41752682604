//! Loopback ports: pick free ones, and probe whether something listens.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{IoContext, Result};

/// Ports handed out by this process, so two fixtures never get the same one even if the first
/// has not bound it yet.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns a currently free TCP port on 127.0.0.1 that this process has not handed out before.
pub fn free_port() -> Result<u16> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context(|| "binding 127.0.0.1:0 to find a free port".into())?
            .port();
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
}

/// True when a TCP connect to 127.0.0.1:`port` succeeds within 200 ms.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        let l = TcpListener::bind(("127.0.0.1", a)).unwrap();
        assert!(port_open(a));
        drop(l);
    }
}
