//! Hand-made TCP SYNs: a SYN with a chosen ISN and TCP timestamp (TSval), sent from a raw socket
//! in the calling thread's namespace, and the replies it draws. The lab needs one because every
//! namespace shares the kernel's clock: a client socket can never send a TSval older than another
//! client's, which is exactly what happens between two real hosts behind NAT.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A SYN as Linux sends it: options MSS, SACK_PERM, TIMESTAMP, NOP, WSCALE (40-byte header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syn {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub isn: u32,
    pub tsval: u32,
    pub tsecr: u32,
    pub mss: u16,
    pub wscale: u8,
    pub window: u16,
}

impl Syn {
    /// A SYN with Linux's usual values on a 1500-byte link (MSS 1460, window 64240, wscale 7).
    pub fn new(src: SocketAddrV4, dst: SocketAddrV4, isn: u32, tsval: u32) -> Self {
        Self {
            src,
            dst,
            isn,
            tsval,
            tsecr: 0,
            mss: 1460,
            wscale: 7,
            window: 64240,
        }
    }

    /// The TCP segment (header and options, no payload), checksum filled in.
    pub fn segment(&self) -> [u8; 40] {
        let mut s = [0u8; 40];
        s[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        s[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        s[4..8].copy_from_slice(&self.isn.to_be_bytes());
        // ack 0; data offset 10 words; flags SYN.
        s[12] = 10 << 4;
        s[13] = SYN;
        s[14..16].copy_from_slice(&self.window.to_be_bytes());
        // checksum [16..18] and urgent pointer [18..20] zero for now.
        s[20] = 2; // MSS
        s[21] = 4;
        s[22..24].copy_from_slice(&self.mss.to_be_bytes());
        s[24] = 4; // SACK permitted
        s[25] = 2;
        s[26] = 8; // timestamps
        s[27] = 10;
        s[28..32].copy_from_slice(&self.tsval.to_be_bytes());
        s[32..36].copy_from_slice(&self.tsecr.to_be_bytes());
        s[36] = 1; // NOP
        s[37] = 3; // window scale
        s[38] = 3;
        s[39] = self.wscale;
        let sum = crate::net::tcp_checksum_v4(*self.src.ip(), *self.dst.ip(), &s);
        s[16..18].copy_from_slice(&sum.to_be_bytes());
        s
    }
}

/// A random u32 from the kernel (for ISNs).
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: a valid 4-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        // Not for security: any varying value does.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ (t.as_secs() as u32);
    }
    u32::from_ne_bytes(b)
}

/// A TCP segment received in answer to a crafted SYN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub from: SocketAddrV4,
    pub to: SocketAddrV4,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub tsval: Option<u32>,
    pub tsecr: Option<u32>,
    /// Milliseconds after the SYN was sent.
    pub after_ms: u64,
}

impl Reply {
    pub fn is(&self, flags: u8) -> bool {
        self.flags & (SYN | ACK | RST | FIN) == flags
    }

    /// Parses an IPv4 packet (as a raw socket receives it, IP header included).
    pub fn parse(packet: &[u8], after_ms: u64) -> Option<Self> {
        if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 6 {
            return None;
        }
        let ihl = usize::from(packet[0] & 0x0f) * 4;
        let tcp = packet.get(ihl..)?;
        if tcp.len() < 20 {
            return None;
        }
        let ip = |o: usize| Ipv4Addr::new(packet[o], packet[o + 1], packet[o + 2], packet[o + 3]);
        let be16 = |o: usize| u16::from_be_bytes([tcp[o], tcp[o + 1]]);
        let be32 = |o: usize| u32::from_be_bytes([tcp[o], tcp[o + 1], tcp[o + 2], tcp[o + 3]]);
        let doff = (usize::from(tcp[12] >> 4) * 4).min(tcp.len());
        let (mut tsval, mut tsecr) = (None, None);
        let mut o = 20;
        while o < doff {
            match tcp[o] {
                0 => break,
                1 => o += 1,
                kind => {
                    let len = usize::from(*tcp.get(o + 1)?);
                    if len < 2 || o + len > doff {
                        break;
                    }
                    if kind == 8 && len == 10 {
                        tsval = Some(be32(o + 2));
                        tsecr = Some(be32(o + 6));
                    }
                    o += len;
                }
            }
        }
        Some(Self {
            from: SocketAddrV4::new(ip(12), be16(0)),
            to: SocketAddrV4::new(ip(16), be16(2)),
            flags: tcp[13],
            seq: be32(4),
            ack: be32(8),
            tsval,
            tsecr,
            after_ms,
        })
    }

    /// `SYN-ACK`, `ACK`, `RST-ACK`...
    pub fn flag_names(&self) -> String {
        let names: Vec<&str> = [(SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (ACK, "ACK")]
            .iter()
            .filter(|(f, _)| self.flags & f != 0)
            .map(|(_, n)| *n)
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join("-")
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {} seq={} ack={} after {} ms",
            self.flag_names(),
            self.from,
            self.to,
            self.seq,
            self.ack,
            self.after_ms
        )?;
        if let (Some(v), Some(e)) = (self.tsval, self.tsecr) {
            write!(f, " TSval={v} TSecr={e}")?;
        }
        Ok(())
    }
}

/// Sends `syn` from a raw socket bound to its source address, in the calling thread's namespace
/// (run it through `Netns::run`), and collects for `listen` the segments that come back for it.
/// The kernel builds the IP header. Note that the namespace's own TCP stack, which has no socket
/// for the SYN's port, answers those segments itself (an ACK draws a RST).
pub fn send_syn(syn: &Syn, listen: Duration) -> std::io::Result<Vec<Reply>> {
    send(syn, &syn.segment(), listen)
}

/// [`send_syn`] with the SYN's TCP checksum wrong (its lowest bit flipped), as a checksum
/// offload that breaks it on the way delivers it.
pub fn send_corrupted_syn(syn: &Syn, listen: Duration) -> std::io::Result<Vec<Reply>> {
    let mut segment = syn.segment();
    segment[17] ^= 0x01;
    send(syn, &segment, listen)
}

fn send(syn: &Syn, segment: &[u8], listen: Duration) -> std::io::Result<Vec<Reply>> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP))?;
    sock.bind(&SockAddr::from(SocketAddr::V4(SocketAddrV4::new(
        *syn.src.ip(),
        0,
    ))))?;
    let sent = Instant::now();
    sock.send_to(
        segment,
        &SockAddr::from(SocketAddr::V4(SocketAddrV4::new(*syn.dst.ip(), 0))),
    )?;
    let deadline = sent + listen;
    let mut replies = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let n = match (&sock).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let after_ms = sent.elapsed().as_millis() as u64;
        if let Some(r) = Reply::parse(&buf[..n], after_ms) {
            if r.from == syn.dst && r.to == syn.src {
                replies.push(r);
            }
        }
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN Linux 6.18 sent from 10.10.0.11:40000 to 10.10.0.1:8080 (captured with tshark
    /// with tx checksum offload off on the sending veth, so the checksum is the full one;
    /// tshark reports it correct).
    const CAPTURED: [u8; 40] = [
        0x9c, 0x40, 0x1f, 0x90, 0x36, 0x60, 0x5b, 0x58, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0x40, 0xb7, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x24, 0xc0,
        0x85, 0xec, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];

    fn captured_syn() -> Syn {
        Syn {
            wscale: 10,
            ..Syn::new(
                "10.10.0.11:40000".parse().unwrap(),
                "10.10.0.1:8080".parse().unwrap(),
                912_284_504,
                616_596_972,
            )
        }
    }

    #[test]
    fn checksum_matches_the_kernel() {
        assert_eq!(
            crate::net::tcp_checksum_v4(
                Ipv4Addr::new(10, 10, 0, 11),
                Ipv4Addr::new(10, 10, 0, 1),
                &CAPTURED
            ),
            0x40b7
        );
    }

    #[test]
    fn builds_the_same_bytes_as_the_kernel() {
        assert_eq!(captured_syn().segment(), CAPTURED);
    }

    #[test]
    fn parses_a_reply() {
        let mut packet = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 10, 0, 11];
        packet.extend_from_slice(&[10, 10, 0, 1]);
        packet.extend_from_slice(&CAPTURED);
        let r = Reply::parse(&packet, 5).unwrap();
        assert_eq!(r.from, "10.10.0.11:40000".parse().unwrap());
        assert_eq!(r.to, "10.10.0.1:8080".parse().unwrap());
        assert!(r.is(SYN));
        assert_eq!(r.seq, 912_284_504);
        assert_eq!(r.tsval, Some(616_596_972));
        assert_eq!(r.tsecr, Some(0));
        assert_eq!(r.flag_names(), "SYN");
    }
}
