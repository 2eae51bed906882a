//! Bounded TCP traffic for the lab: connection attempts with a known source port, listeners.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// How a connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Connected,
    Refused,
    TimedOut,
    Other(String),
}

/// Connects from `from` (port 0: any) to `to`, giving up after `timeout`. Returns the local
/// address used and the outcome; a connected socket is closed at once.
pub fn connect(from: SocketAddr, to: SocketAddr, timeout: Duration) -> (SocketAddr, Outcome) {
    let attempt = || -> std::io::Result<(SocketAddr, Outcome)> {
        let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&from.into())?;
        let local = s.local_addr()?.as_socket().unwrap_or(from);
        let outcome = match s.connect_timeout(&to.into(), timeout) {
            Ok(()) => Outcome::Connected,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                Outcome::TimedOut
            }
            Err(e) => Outcome::Other(e.to_string()),
        };
        Ok((local, outcome))
    };
    attempt().unwrap_or_else(|e| (from, Outcome::Other(e.to_string())))
}

/// Serves `count` connections on `listener`: reads a request line, answers `ok\n`.
pub fn serve(listener: TcpListener, count: usize) -> std::io::Result<usize> {
    let mut served = 0;
    for _ in 0..count {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf)?;
        s.write_all(b"ok\n")?;
        served += 1;
    }
    Ok(served)
}

/// One request/answer exchange over a fresh connection from `from`.
pub fn request(
    from: SocketAddr,
    to: SocketAddr,
    timeout: Duration,
) -> std::io::Result<(SocketAddr, String)> {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&from.into())?;
    s.connect_timeout(&to.into(), timeout)?;
    let local = s.local_addr()?.as_socket().unwrap_or(from);
    let mut stream: std::net::TcpStream = s.into();
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"hello\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok((local, answer))
}
