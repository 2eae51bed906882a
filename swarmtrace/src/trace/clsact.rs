//! Netlink classifiers on a clsact qdisc (how the TC programs attach before Linux 6.6): list
//! an interface's filters, remove exactly one, remove an empty clsact, and tell whose a
//! swarmtrace filter is.
//!
//! Netlink filters outlive the process that made them and carry no owner, so each instance
//! marks its own: it attaches them with a handle of its own choosing and, for as long as it
//! lives, holds an abstract unix socket named after that handle in the interface's network
//! namespace (its owner token). A filter whose token nobody holds was left by a killed run.
//! The token lives where the filter lives: a `capture` on the host and the `run` daemon in
//! a container (its own PID and mount namespaces, sharing the host's network) both see it,
//! the kernel releases it when its process dies however it dies, and a reused PID cannot
//! pass for it. Every function here acts on the network namespace of the calling thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use aya::programs::TcAttachType;

use crate::kernel::rtnl::{attrs, c_text, push_attr, request, u32_at, Rtnl, NLM_F_ACK, NLM_F_DUMP};

/// Handles this and later versions choose are at least this; the kernel's own
/// (auto-assigned, as older swarmtrace versions had them) count up from 1.
pub const MIN_OWNED_HANDLE: u32 = 0x0001_0000;

/// At most this many filters are read per list: beyond that, nothing is removed.
const MAX_FILTERS: usize = 4096;

const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the clsact qdisc's parent.
const TC_H_CLSACT: u32 = 0xffff_fff1;
const CLSACT_HANDLE: u32 = 0xffff_0000;
const TCMSG: usize = 20;

/// One entry of a filter dump. `handle == 0` is the head of a priority's filter list, not a
/// filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub prio: u16,
    /// The protocol as the kernel keeps it (network byte order), given back when deleting.
    pub protocol: u16,
    pub handle: u32,
    /// `bpf`, `u32`, `flower`... (at most 32 bytes, lossy UTF-8: chosen by whoever added it).
    pub kind: String,
    /// A bpf filter's name (at most 256 bytes, lossy UTF-8).
    pub name: Option<String>,
}

fn parent(dir: TcAttachType) -> u32 {
    match dir {
        TcAttachType::Ingress => 0xffff_fff2,
        TcAttachType::Egress => 0xffff_fff3,
        TcAttachType::Custom(p) => p,
    }
}

/// The filters on one side of the interface's clsact qdisc (none when it has no clsact).
pub fn filters(ifindex: u32, dir: TcAttachType) -> io::Result<Vec<Filter>> {
    let sock = Rtnl::open()?;
    let msg = tc_message(RTM_GETTFILTER, NLM_F_DUMP, ifindex, 0, parent(dir), 0, &[]);
    let mut out = Vec::new();
    sock.exchange(&msg, |ty, payload| {
        if ty != RTM_NEWTFILTER {
            return Ok(());
        }
        if out.len() >= MAX_FILTERS {
            return Err(io::Error::other(format!(
                "more than {MAX_FILTERS} filters on interface {ifindex}"
            )));
        }
        out.push(parse_filter(payload)?);
        Ok(())
    })?;
    Ok(out)
}

fn parse_filter(payload: &[u8]) -> io::Result<Filter> {
    let short = || io::Error::other("short tcmsg in a filter dump");
    let tcm = payload.get(..TCMSG).ok_or_else(short)?;
    let handle = u32_at(tcm, 8).ok_or_else(short)?;
    let info = u32_at(tcm, 16).ok_or_else(short)?;
    let mut f = Filter {
        prio: (info >> 16) as u16,
        protocol: info as u16,
        handle,
        kind: String::new(),
        name: None,
    };
    for (ty, data) in attrs(&payload[TCMSG..]) {
        match ty {
            TCA_KIND => f.kind = c_text(data, 32),
            TCA_OPTIONS => {
                for (ty, data) in attrs(data) {
                    if ty == TCA_BPF_NAME {
                        f.name = Some(c_text(data, 256));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

/// Removes exactly this filter. Refuses a zero priority or handle, which would ask the
/// kernel to remove a whole list of filters.
pub fn delete_filter(ifindex: u32, dir: TcAttachType, f: &Filter) -> io::Result<()> {
    if f.prio == 0 || f.handle == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to delete a filter by a zero priority or handle",
        ));
    }
    let info = (u32::from(f.prio) << 16) | u32::from(f.protocol);
    let msg = tc_message(
        RTM_DELTFILTER,
        NLM_F_ACK,
        ifindex,
        f.handle,
        parent(dir),
        info,
        &[],
    );
    Rtnl::open()?.exchange(&msg, |_, _| Ok(()))
}

/// Removes the interface's clsact qdisc, and only a clsact (the kernel checks the kind).
pub fn delete_clsact(ifindex: u32) -> io::Result<()> {
    let mut kind = Vec::new();
    push_attr(&mut kind, TCA_KIND, b"clsact\0");
    let msg = tc_message(
        RTM_DELQDISC,
        NLM_F_ACK,
        ifindex,
        CLSACT_HANDLE,
        TC_H_CLSACT,
        0,
        &kind,
    );
    Rtnl::open()?.exchange(&msg, |_, _| Ok(()))
}

/// Whether the interface's clsact holds no filter at all, on either side.
pub fn clsact_is_empty(ifindex: u32) -> io::Result<bool> {
    Ok(filters(ifindex, TcAttachType::Ingress)?.is_empty()
        && filters(ifindex, TcAttachType::Egress)?.is_empty())
}

/// What holds a filter's owner token.
#[derive(Debug)]
pub enum Owner {
    /// Nobody: the filter's instance is gone.
    Gone,
    /// A live process; its PID when it is visible from our PID namespace.
    Alive(Option<u32>),
    /// Could not tell (then the filter is left alone).
    Unknown(io::Error),
}

/// Who holds the token of filter `handle` on interface `ifindex`.
pub fn owner(ifindex: u32, handle: u32) -> Owner {
    let sock = match unix_socket() {
        Ok(s) => s,
        Err(e) => return Owner::Unknown(e),
    };
    let (addr, len) = token_addr(ifindex, handle);
    // SAFETY: a valid socket and a sockaddr_un of `len` bytes.
    let r = unsafe { libc::connect(sock.as_raw_fd(), (&raw const addr).cast(), len) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // Nobody listens under that name.
            Some(libc::ECONNREFUSED) | Some(libc::ENOENT) => Owner::Gone,
            // Its backlog is full: someone listens.
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => Owner::Alive(None),
            _ => Owner::Unknown(e),
        };
    }
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket, and a ucred buffer of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    // PID 0: the owner is in a PID namespace we cannot see into (a container).
    Owner::Alive((r == 0 && cred.pid > 0).then_some(cred.pid as u32))
}

/// This instance's claim on its filters of one interface: the handle they carry, and the
/// socket that says the instance is alive. Dropping it releases the claim.
#[derive(Debug)]
pub struct OwnerToken {
    pub handle: u32,
    sock: OwnedFd,
}

impl OwnerToken {
    /// Picks a handle nobody holds on `ifindex` and holds it.
    pub fn claim(ifindex: u32) -> io::Result<Self> {
        let mut last = None;
        for _ in 0..16 {
            let handle = random_u32().max(MIN_OWNED_HANDLE);
            let sock = unix_socket()?;
            let (addr, len) = token_addr(ifindex, handle);
            // SAFETY: a valid socket and a sockaddr_un of `len` bytes.
            if unsafe { libc::bind(sock.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
                last = Some(io::Error::last_os_error());
                continue;
            }
            // SAFETY: a valid, bound socket.
            if unsafe { libc::listen(sock.as_raw_fd(), 16) } != 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(Self { handle, sock });
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free handle")))
    }

    /// Closes the connections other instances made to ask who we are.
    pub fn drain(&self) {
        for _ in 0..64 {
            // SAFETY: a valid listening socket; null address arguments are allowed.
            let fd = unsafe {
                libc::accept4(
                    self.sock.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return;
            }
            // SAFETY: a fresh fd we own.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

fn unix_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The abstract socket name of a filter's owner token: `\0swarmtrace-tc/IFINDEX/HANDLE`.
fn token_addr(ifindex: u32, handle: u32) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = token_name(ifindex, handle);
    for (d, s) in addr.sun_path[1..].iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    (addr, len as libc::socklen_t)
}

fn token_name(ifindex: u32, handle: u32) -> String {
    format!("swarmtrace-tc/{ifindex}/{handle:08x}")
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: a valid 4-byte buffer.
    if unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) } == 4 {
        return u32::from_ne_bytes(b);
    }
    // Not a secret: a clash only means another try.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

fn tc_message(
    ty: u16,
    flags: u16,
    ifindex: u32,
    handle: u32,
    parent: u32,
    info: u32,
    attrs: &[u8],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(TCMSG + attrs.len());
    // struct tcmsg: family, two pad fields, ifindex, handle, parent, info.
    body.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    body.extend_from_slice(&ifindex.to_ne_bytes());
    body.extend_from_slice(&handle.to_ne_bytes());
    body.extend_from_slice(&parent.to_ne_bytes());
    body.extend_from_slice(&info.to_ne_bytes());
    body.extend_from_slice(attrs);
    request(ty, flags, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::rtnl::NLMSG_HDR;

    /// A filter as the kernel dumps it: tcmsg, TCA_KIND "bpf", TCA_OPTIONS { TCA_BPF_NAME }.
    fn dumped(prio: u16, handle: u32, name: &[u8]) -> Vec<u8> {
        let mut options = Vec::new();
        push_attr(&mut options, 6, &7u32.to_ne_bytes()); // TCA_BPF_FD, ignored
        push_attr(&mut options, TCA_BPF_NAME, name);
        let mut attrs = Vec::new();
        push_attr(&mut attrs, TCA_KIND, b"bpf\0");
        push_attr(&mut attrs, TCA_OPTIONS | 0x8000, &options); // NLA_F_NESTED
        let info = (u32::from(prio) << 16) | 0x0300;
        tc_message(RTM_NEWTFILTER, 0, 3, handle, 0xffff_fff2, info, &attrs)[NLMSG_HDR..].to_vec()
    }

    #[test]
    fn reads_a_dumped_bpf_filter() {
        let f = parse_filter(&dumped(49152, 0x1234_5678, b"swarmtrace_in\0")).unwrap();
        assert_eq!(
            f,
            Filter {
                prio: 49152,
                protocol: 0x0300,
                handle: 0x1234_5678,
                kind: "bpf".into(),
                name: Some("swarmtrace_in".into()),
            }
        );
    }

    #[test]
    fn hostile_attributes_are_bounded_not_trusted() {
        // A name without its NUL, longer than any real one, with bytes that are not UTF-8.
        let mut name = vec![b'A'; 1000];
        name[3] = 0xff;
        let f = parse_filter(&dumped(1, 2, &name)).unwrap();
        assert_eq!(f.name.as_ref().unwrap().chars().count(), 256);
        // An attribute whose length runs past the message ends the walk, no panic.
        let mut p = dumped(1, 2, b"x\0");
        let at = TCMSG;
        p[at..at + 2].copy_from_slice(&500u16.to_ne_bytes());
        let f = parse_filter(&p).unwrap();
        assert_eq!((f.kind.as_str(), f.name), ("", None));
        assert!(parse_filter(&p[..10]).is_err());
    }

    #[test]
    fn refuses_to_delete_a_whole_list() {
        let f = Filter {
            prio: 0,
            protocol: 0x0300,
            handle: 5,
            kind: "bpf".into(),
            name: None,
        };
        assert!(delete_filter(1, TcAttachType::Ingress, &f).is_err());
        let f = Filter {
            prio: 5,
            handle: 0,
            ..f
        };
        assert!(delete_filter(1, TcAttachType::Ingress, &f).is_err());
    }

    #[test]
    fn a_token_is_told_from_no_token() {
        // Abstract sockets are per network namespace; an index no interface has keeps this
        // test apart from real instances.
        let ifindex = 0x7fff_0000 | (std::process::id() & 0xffff);
        let token = OwnerToken::claim(ifindex).unwrap();
        assert!(token.handle >= MIN_OWNED_HANDLE);
        match owner(ifindex, token.handle) {
            Owner::Alive(pid) => assert_eq!(pid, Some(std::process::id())),
            o => panic!("{o:?}"),
        }
        token.drain();
        let handle = token.handle;
        drop(token);
        assert!(matches!(owner(ifindex, handle), Owner::Gone));
        assert!(token_name(3, 0x10000).ends_with("/3/00010000"));
    }
}
