//! Route netlink in the calling thread's network namespace: one request, its answers read
//! bounded in size and time, attributes parsed without trusting their lengths. Serves the
//! clsact filters (`trace::clsact`) and the links' VXLAN ports.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A netlink exchange ends within this long.
const DEADLINE: Duration = Duration::from_secs(5);

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;
pub const NLMSG_HDR: usize = 16;
const SEQ: u32 = 1;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_PORT: u16 = 15;
/// Links read at most in one dump (a namespace holds as many as its owner makes).
const MAX_LINKS: usize = 65_536;

/// A VXLAN device: its name, destination UDP port and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLink {
    pub name: String,
    pub port: u16,
    pub mtu: Option<u32>,
}

/// The destination UDP ports of the VXLAN devices of the calling thread's namespace, in the
/// kernel's order.
pub fn vxlan_ports() -> io::Result<Vec<u16>> {
    Ok(vxlan_links()?.into_iter().map(|l| l.port).collect())
}

/// The VXLAN devices of the calling thread's namespace, in the kernel's order.
pub fn vxlan_links() -> io::Result<Vec<VxlanLink>> {
    // An all-zero `ifinfomsg`: every link of every family.
    let m = request(RTM_GETLINK, NLM_F_DUMP, &[0; IFINFOMSG]);
    let (mut links, mut found) = (0usize, Vec::new());
    Rtnl::open()?.exchange(&m, |ty, payload| {
        if ty != RTM_NEWLINK {
            return Ok(());
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(io::Error::other(format!("more than {MAX_LINKS} links")));
        }
        found.extend(vxlan_link_of(payload));
        Ok(())
    })?;
    Ok(found)
}

/// The MTU of link `name` in the calling thread's namespace (netlink follows the thread;
/// `/sys/class/net` shows whoever mounted `/sys`): None when there is no such link.
pub fn link_mtu(name: &str) -> io::Result<Option<u32>> {
    let mut body = vec![0u8; IFINFOMSG];
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    push_attr(&mut body, IFLA_IFNAME, &ifname);
    let m = request(RTM_GETLINK, NLM_F_ACK, &body);
    let mut mtu = None;
    let asked = Rtnl::open()?.exchange(&m, |ty, payload| {
        if ty == RTM_NEWLINK {
            mtu = payload
                .get(IFINFOMSG..)
                .and_then(|a| find(a, IFLA_MTU))
                .and_then(|m| u32_at(m, 0));
        }
        Ok(())
    });
    match asked {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        other => other.map(|()| mtu),
    }
}

/// [`vxlan_port_of`] with the link's name and MTU (`IFLA_IFNAME`, `IFLA_MTU`).
pub fn vxlan_link_of(link: &[u8]) -> Option<VxlanLink> {
    let port = vxlan_port_of(link)?;
    let attrs = link.get(IFINFOMSG..)?;
    Some(VxlanLink {
        name: find(attrs, IFLA_IFNAME).map_or_else(String::new, |n| c_text(n, 16)),
        port,
        mtu: find(attrs, IFLA_MTU).and_then(|m| u32_at(m, 0)),
    })
}

/// A request: the netlink header (`NLM_F_REQUEST | flags`, sequence [`SEQ`]), then `body`
/// (the family's header and its attributes).
pub fn request(ty: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m.extend_from_slice(&SEQ.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// The destination port of a link as the kernel describes it (an `RTM_NEWLINK` payload:
/// `ifinfomsg`, then `IFLA_LINKINFO` { `IFLA_INFO_KIND` "vxlan", `IFLA_INFO_DATA` {
/// `IFLA_VXLAN_PORT`, network byte order } }); None for any other link or a malformed one.
pub fn vxlan_port_of(link: &[u8]) -> Option<u16> {
    let info = find(link.get(IFINFOMSG..)?, IFLA_LINKINFO)?;
    if c_text(find(info, IFLA_INFO_KIND)?, 16) != "vxlan" {
        return None;
    }
    let port = find(find(info, IFLA_INFO_DATA)?, IFLA_VXLAN_PORT)?;
    Some(u16::from_be_bytes([*port.first()?, *port.get(1)?])).filter(|p| *p != 0)
}

/// The payload of the first attribute of type `ty` in `b`.
fn find(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, _)| *t == ty).map(|(_, d)| d)
}

/// A route netlink socket of the calling thread's network namespace.
pub struct Rtnl(OwnedFd);

impl Rtnl {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket creation.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let sock = Self(unsafe { OwnedFd::from_raw_fd(fd) });
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: a valid socket and a timeval of the given size.
        let r = unsafe {
            libc::setsockopt(
                sock.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    /// Sends one request and hands each answer's (type, payload) to `each` until the
    /// kernel's acknowledgement or the end of the dump; a kernel error is returned as such.
    pub fn exchange(
        &self,
        msg: &[u8],
        mut each: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        // SAFETY: a valid socket and buffer.
        let n = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let start = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        while start.elapsed() < DEADLINE {
            // SAFETY: a valid socket and buffer; MSG_TRUNC makes the return the real size.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n > buf.len() {
                return Err(io::Error::other("netlink answer larger than 64 KiB"));
            }
            let mut rest = &buf[..n];
            while rest.len() >= NLMSG_HDR {
                let len = u32_at(rest, 0).unwrap_or(0) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32_at(rest, 8).unwrap_or(0);
                if len < NLMSG_HDR || len > rest.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let payload = &rest[NLMSG_HDR..len];
                rest = &rest[align4(len).min(rest.len())..];
                if seq != SEQ {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => each(ty, payload)?,
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the kernel did not finish answering a netlink request",
        ))
    }
}

pub fn push_attr(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + align4(len) - len, 0);
}

/// The (type, payload) attributes of a netlink attribute block; stops at a malformed one.
pub fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((ty, data))
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// A NUL-terminated string attribute, cut at `max` bytes.
pub fn c_text(data: &[u8], max: usize) -> String {
    let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end.min(max)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link as the kernel dumps it: ifinfomsg, a name, IFLA_LINKINFO { kind, data }.
    fn link(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, kind);
        push_attr(&mut info, IFLA_INFO_DATA | 0x8000, data); // NLA_F_NESTED
        let mut m = vec![0u8; IFINFOMSG];
        push_attr(&mut m, 3, b"vx-001001-abcde\0"); // IFLA_IFNAME
        push_attr(&mut m, IFLA_LINKINFO | 0x8000, &info);
        m
    }

    fn vxlan_data(port: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        push_attr(&mut d, 1, &4097u32.to_ne_bytes()); // IFLA_VXLAN_ID
        push_attr(&mut d, IFLA_VXLAN_PORT, port);
        d
    }

    /// Asked of the kernel: loopback's MTU as sysfs shows it here, none for a link that does
    /// not exist or a name no link can have.
    #[test]
    fn a_links_mtu_by_its_name() {
        let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(link_mtu("lo").unwrap(), Some(lo));
        assert_eq!(link_mtu("stnosuchlink0").unwrap(), None);
        assert!(link_mtu("../../etc/x").ok().flatten().is_none());
        assert!(link_mtu(&"x".repeat(40)).ok().flatten().is_none());
    }

    #[test]
    fn a_vxlan_links_name_and_mtu() {
        let mut l = link(b"vxlan\0", &vxlan_data(&7789u16.to_be_bytes()));
        push_attr(&mut l, IFLA_MTU, &1450u32.to_ne_bytes());
        assert_eq!(
            vxlan_link_of(&l),
            Some(VxlanLink {
                name: "vx-001001-abcde".into(),
                port: 7789,
                mtu: Some(1450)
            })
        );
        // A short MTU attribute is no MTU; the port still counts.
        let mut short = link(b"vxlan\0", &vxlan_data(&7789u16.to_be_bytes()));
        push_attr(&mut short, IFLA_MTU, &[0x05]);
        assert_eq!(vxlan_link_of(&short).map(|l| l.mtu), Some(None));
    }

    #[test]
    fn a_vxlan_links_port() {
        assert_eq!(
            vxlan_port_of(&link(b"vxlan\0", &vxlan_data(&7789u16.to_be_bytes()))),
            Some(7789)
        );
        assert_eq!(
            vxlan_port_of(&link(b"vxlan\0", &vxlan_data(&4789u16.to_be_bytes()))),
            Some(4789)
        );
    }

    /// Anything but a VXLAN link with a port is none, whatever its bytes say.
    #[test]
    fn no_port_from_other_or_malformed_links() {
        let port = 7789u16.to_be_bytes();
        assert_eq!(vxlan_port_of(&link(b"bridge\0", &vxlan_data(&port))), None);
        assert_eq!(vxlan_port_of(&link(b"vxlan\0", &vxlan_data(&[0, 0]))), None);
        assert_eq!(vxlan_port_of(&link(b"vxlan\0", &vxlan_data(&[0x1e]))), None);
        assert_eq!(vxlan_port_of(&link(b"vxlan\0", &[])), None);
        assert_eq!(vxlan_port_of(&[]), None);
        assert_eq!(vxlan_port_of(&[0u8; IFINFOMSG]), None);
        let good = link(b"vxlan\0", &vxlan_data(&port));
        for cut in 0..good.len() {
            // A truncated message never reads past its end (and has no port until whole).
            assert_eq!(vxlan_port_of(&good[..cut]), None, "cut at {cut}");
        }
        // An attribute whose length says more than there is.
        let mut lying = good.clone();
        lying[IFINFOMSG] = 0xff;
        lying[IFINFOMSG + 1] = 0xff;
        assert_eq!(vxlan_port_of(&lying), None);
    }
}
