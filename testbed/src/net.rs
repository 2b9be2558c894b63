//! Loopback networking helpers: free ports and readiness polling.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it via port 0).
///
/// Another process may grab it before the caller binds it; servers started from here retry with a
/// fresh port when they lose that race.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|source| Error::Io {
        op: "bind 127.0.0.1:0",
        source,
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| Error::Io {
            op: "read local address",
            source,
        })?
        .port();
    Ok(port)
}

/// Polls `addr` until a TCP connection succeeds or `timeout` elapses.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::NotReady {
                    what: format!("tcp {addr}"),
                    detail: e.to_string(),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// Returns the current time as seconds since the Unix epoch (JWT and Kubernetes timestamps).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A random lowercase hex string of `bytes` random bytes (tokens, uids, names).
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random RFC 4122 version-4 UUID string, shaped like Kubernetes `metadata.uid`.
pub(crate) fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable_and_wait_for_tcp_sees_listener() -> Result<()> {
        let port = free_port()?;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .map_err(|source| Error::Io { op: "bind", source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Io { op: "addr", source })?;
        wait_for_tcp(addr, Duration::from_secs(2))
    }

    #[test]
    fn wait_for_tcp_closed_port_times_out_with_not_ready() -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let started = Instant::now();
        let result = wait_for_tcp(addr, Duration::from_millis(200));
        assert!(matches!(result, Err(Error::NotReady { .. })));
        assert!(started.elapsed() < Duration::from_secs(2));
        Ok(())
    }

    #[test]
    fn random_uuid_has_kubernetes_uid_shape() {
        let u = random_uuid();
        let lens: Vec<usize> = u.split('-').map(str::len).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12]);
        assert_ne!(u, random_uuid());
    }
}
