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

/// How a connect() ended.
fn outcome_of(r: std::io::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Connected,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(e)
            if e.kind() == std::io::ErrorKind::TimedOut
                || e.kind() == std::io::ErrorKind::WouldBlock =>
        {
            Outcome::TimedOut
        }
        Err(e) => Outcome::Other(e.to_string()),
    }
}

/// Connects from `from` (port 0: any) to `to`, giving up after `timeout`. Returns the local
/// address used and the outcome; a connected socket is closed at once.
pub fn connect(from: SocketAddr, to: SocketAddr, timeout: Duration) -> (SocketAddr, Outcome) {
    let attempt = || -> std::io::Result<(SocketAddr, Outcome)> {
        let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&from.into())?;
        let local = s.local_addr()?.as_socket().unwrap_or(from);
        let outcome = outcome_of(s.connect_timeout(&to.into(), timeout));
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

/// What one request/answer exchange gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The client's own address and port.
    pub local: SocketAddr,
    pub outcome: Outcome,
    /// The server's answer, when connected and answered.
    pub answer: Option<String>,
    /// The socket's TCP timestamp clock (`TCP_TIMESTAMP`, the TSval it sends now) read after the
    /// answer, before closing: every later segment of the connection carries this or newer.
    pub tsval: Option<u32>,
    /// What went wrong after connecting, if anything.
    pub error: Option<String>,
}

/// Like [`request`], but never fails: reports the outcome, the source port used even when the
/// connection failed, and the client's TSval at the end. Reads the answer to end of stream, so
/// the server closes first.
pub fn exchange(from: SocketAddr, to: SocketAddr, timeout: Duration) -> Exchange {
    use std::os::fd::AsRawFd;
    let mut ex = Exchange {
        local: from,
        outcome: Outcome::Other("not started".to_owned()),
        answer: None,
        tsval: None,
        error: None,
    };
    let s = match Socket::new(Domain::for_address(to), Type::STREAM, None)
        .and_then(|s| s.set_reuse_address(true).map(|()| s))
        .and_then(|s| s.bind(&from.into()).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            ex.outcome = Outcome::Other(e.to_string());
            return ex;
        }
    };
    if let Ok(Some(local)) = s.local_addr().map(|a| a.as_socket()) {
        ex.local = local;
    }
    ex.outcome = outcome_of(s.connect_timeout(&to.into(), timeout));
    if ex.outcome != Outcome::Connected {
        return ex;
    }
    let mut stream: std::net::TcpStream = s.into();
    let talk = (|| -> std::io::Result<String> {
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"hello\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match talk {
        Ok(a) => ex.answer = Some(a),
        Err(e) => ex.error = Some(e.to_string()),
    }
    let mut ts: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: a valid socket and a u32 out buffer of the given length.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_TIMESTAMP,
            (&mut ts as *mut u32).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        ex.tsval = Some(ts);
    }
    ex
}

/// A TCP service on its own thread (in a namespace): accepts up to `max` connections, reads a
/// request from each (2 s at most), answers `ok\n` and closes first, so the TIME_WAIT stays on the
/// server's side. Stopped (the listener closed) by [`Service::stop`] or on drop; it also ends by
/// itself after `lifetime`.
#[derive(Debug)]
pub struct Service {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<std::io::Result<()>>>>,
}

impl Service {
    /// Binds `addr` in `ns` (listen backlog 128) and starts serving.
    pub fn start(
        ns: &super::Netns,
        addr: SocketAddr,
        max: usize,
        lifetime: Duration,
    ) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = ns.run(move || -> std::io::Result<TcpListener> {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.bind(&addr.into())?;
            s.listen(128)?;
            Ok(s.into())
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (stop2, served2) = (stop.clone(), served.clone());
        let handle = ns.spawn(move || -> std::io::Result<()> {
            use std::os::fd::AsRawFd;
            let deadline = std::time::Instant::now() + lifetime;
            while !stop2.load(Ordering::SeqCst)
                && served2.load(Ordering::SeqCst) < max
                && std::time::Instant::now() < deadline
            {
                let mut pfd = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 50) };
                if n <= 0 {
                    continue;
                }
                let (mut s, _) = match listener.accept() {
                    Ok(c) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                served2.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 64];
                if s.read(&mut buf).is_ok() {
                    let _ = s.write_all(b"ok\n");
                }
                // Dropping `s` closes it: the server sends the first FIN.
            }
            Ok(())
        })?;
        Ok(Self {
            addr,
            stop,
            served,
            handle: Some(handle),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the listener (waiting for the thread, at most ~2 s for a connection being served)
    /// and returns how many connections it accepted.
    pub fn stop(mut self) -> anyhow::Result<usize> {
        self.halt()?;
        Ok(self.served())
    }

    fn halt(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(r) => r??,
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            // Never panic in drop: a panicking service thread is only logged here.
            match h.join() {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => log::warn!("service on {} failed: {e}", self.addr),
                Ok(Err(e)) => log::warn!("service on {} failed: {e}", self.addr),
                Err(_) => log::warn!("service thread on {} panicked", self.addr),
            }
        }
    }
}
