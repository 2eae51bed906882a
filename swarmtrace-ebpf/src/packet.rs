//! Reading IPv4/IPv6 + TCP headers, from kernel memory (tracepoints) or from a packet (TC),
//! through one parser. Every read is a helper call that fails cleanly (probe_read on a bad
//! address, skb_load_bytes past the end), so nothing a packet holds can make a read unsafe.

use aya_ebpf::programs::TcContext;
use swarmtrace_common::{class, PacketInfo};

use crate::{config::global, kmem};

const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_TIMESTAMP: u8 = 8;
/// IPv6 extension headers we step over to find TCP; more than this many is not a handshake
/// packet we care about.
const MAX_IPV6_EXT: usize = 4;
/// Largest TCP options area.
const MAX_OPTS: usize = 40;
/// Options looked at before giving up on finding the timestamp.
const MAX_OPT_STEPS: usize = 12;

/// Where packet bytes come from.
pub trait Source {
    /// Reads a `T` at `off` bytes from the start of the network header.
    fn read<T: Copy>(&self, off: usize) -> Result<T, ()>;
}

/// Kernel memory: the network header of an skb at `base`.
pub struct Kernel {
    pub base: u64,
}

impl Source for Kernel {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Result<T, ()> {
        kmem::read(self.base + off as u64)
    }
}

/// A packet at a TC hook; `l3` is the offset of the network header (after Ethernet).
pub struct Skb<'a> {
    pub ctx: &'a TcContext,
    pub l3: usize,
}

impl Source for Skb<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Result<T, ()> {
        self.ctx.load::<T>(self.l3 + off).map_err(|_| ())
    }
}

pub enum Parse {
    /// A TCP handshake packet, decoded into the caller's `PacketInfo`.
    Handshake,
    /// Not TCP, not a handshake packet, or a later fragment.
    Other,
    /// TCP, but its headers could not be read.
    Unreadable,
}

/// Parses the packet whose network header `src` reads into `info`.
#[inline(always)]
pub fn parse_ip<S: Source>(src: &S, info: &mut PacketInfo) -> Parse {
    // One read for the common case: an IPv4 header (an IPv6 one is read again, whole).
    let hdr: [u8; 20] = match src.read(0) {
        Ok(h) => h,
        Err(()) => return Parse::Other,
    };
    let tcp: usize;
    let ip_payload: u32;
    match hdr[0] >> 4 {
        4 => {
            if hdr[9] != IPPROTO_TCP {
                return Parse::Other;
            }
            // Fragment offset != 0: no TCP header here.
            if (u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff) != 0 {
                return Parse::Other;
            }
            let ihl = ((hdr[0] & 0x0f) as u32) * 4;
            if ihl < 20 {
                return Parse::Unreadable;
            }
            let total = u16::from_be_bytes([hdr[2], hdr[3]]) as u32;
            info.family = 4;
            info.saddr = [0; 16];
            info.daddr = [0; 16];
            info.saddr[..4].copy_from_slice(&hdr[12..16]);
            info.daddr[..4].copy_from_slice(&hdr[16..20]);
            tcp = ihl as usize;
            ip_payload = total.saturating_sub(ihl);
        }
        6 => {
            let hdr: [u8; 40] = match src.read(0) {
                Ok(h) => h,
                Err(()) => return Parse::Other,
            };
            let mut next = hdr[6];
            let mut off: u32 = 40;
            let mut payload = u16::from_be_bytes([hdr[4], hdr[5]]) as u32;
            let mut i = 0;
            while i < MAX_IPV6_EXT && next != IPPROTO_TCP {
                let ext: [u8; 4] = match src.read(off as usize) {
                    Ok(e) => e,
                    Err(()) => return Parse::Unreadable,
                };
                let len = match next {
                    // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
                    0 | 43 | 60 => (ext[1] as u32 + 1) * 8,
                    44 => {
                        // Fragment header: only the first fragment carries TCP.
                        if (u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8) != 0 {
                            return Parse::Other;
                        }
                        8
                    }
                    _ => return Parse::Other,
                };
                next = ext[0];
                off += len;
                payload = payload.saturating_sub(len);
                i += 1;
            }
            if next != IPPROTO_TCP {
                return Parse::Other;
            }
            info.family = 6;
            info.saddr.copy_from_slice(&hdr[8..24]);
            info.daddr.copy_from_slice(&hdr[24..40]);
            tcp = off as usize;
            ip_payload = payload;
        }
        _ => return Parse::Other,
    }
    parse_tcp(src, tcp, ip_payload, info)
}

#[inline(always)]
fn parse_tcp<S: Source>(src: &S, tcp: usize, ip_payload: u32, info: &mut PacketInfo) -> Parse {
    let th: [u8; 20] = match src.read(tcp) {
        Ok(t) => t,
        Err(()) => return Parse::Unreadable,
    };
    let flags = th[13];
    let doff = ((th[12] >> 4) as u32) * 4;
    info.class = if flags & TCP_RST != 0 {
        class::RST
    } else if flags & TCP_SYN != 0 {
        if flags & TCP_ACK != 0 {
            class::SYN_ACK
        } else {
            class::SYN
        }
    } else if flags & (TCP_ACK | TCP_FIN) == TCP_ACK && ip_payload == doff {
        class::ACK
    } else {
        return Parse::Other;
    };
    if doff < 20 {
        return Parse::Unreadable;
    }
    info.tcp_flags = flags;
    info.sport = u16::from_be_bytes([th[0], th[1]]);
    info.dport = u16::from_be_bytes([th[2], th[3]]);
    info.seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]);
    info.ack_seq = u32::from_be_bytes([th[8], th[9], th[10], th[11]]);
    info.has_ts = 0;
    info.tsval = 0;
    info.tsecr = 0;
    // Only a SYN's TSval keys its handshake, and a SYN-ACK echoes it; a RST or a bare ACK is
    // found through the ISN. Half of a stream is bare ACKs: do not walk their options.
    if doff > 20 && (info.class == class::SYN || info.class == class::SYN_ACK) {
        find_timestamp(src, tcp + 20, (doff - 20) as usize, info);
    }
    Parse::Handshake
}

/// Finds the timestamp option among the `len` bytes of TCP options at `off`.
///
/// Each step reads the option's kind and length through the source's helper (a bad offset
/// fails at run time, cleanly), so no index into a buffer has to be proven in bounds: a
/// buffer walk verifies on 6.18 but not on 6.1, whose verifier cannot bound an index
/// compared against another register once LLVM has dropped the masks.
#[inline(always)]
fn find_timestamp<S: Source>(src: &S, off: usize, len: usize, info: &mut PacketInfo) {
    let len = if len > MAX_OPTS { MAX_OPTS } else { len };
    let mut i: usize = 0;
    // Real handshakes carry at most a handful of options (Linux: MSS, SACK_PERM, TS, NOP,
    // WS); more steps only multiply the paths the verifier walks.
    for _ in 0..MAX_OPT_STEPS {
        if i >= len {
            return;
        }
        let Ok([kind, olen]) = src.read::<[u8; 2]>(off + i) else {
            return;
        };
        match kind {
            TCPOPT_EOL => return,
            TCPOPT_NOP => i += 1,
            _ => {
                let olen = olen as usize;
                if olen < 2 || i + olen > len {
                    return;
                }
                if kind == TCPOPT_TIMESTAMP && olen == 10 {
                    if let Ok(v) = src.read::<[u8; 8]>(off + i + 2) {
                        info.tsval = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                        info.tsecr = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
                        info.has_ts = 1;
                    }
                    return;
                }
                i += olen;
            }
        }
    }
}

/// True when the port and address (network order) match the user's filters.
#[inline(always)]
pub fn matches(family: u8, a: &[u8; 16], a_port: u16, b: &[u8; 16], b_port: u16) -> bool {
    let port = global!(FILTER.port);
    if port != 0 && a_port != port && b_port != port {
        return false;
    }
    let want = global!(FILTER.family);
    if want == 0 {
        return true;
    }
    if want != family {
        return false;
    }
    addr_matches(a) || addr_matches(b)
}

#[inline(always)]
fn addr_matches(addr: &[u8; 16]) -> bool {
    let want = global!(FILTER.addr);
    let mask = global!(FILTER.mask);
    let mut k = 0;
    while k < 4 {
        let w = u32::from_ne_bytes([
            addr[k * 4],
            addr[k * 4 + 1],
            addr[k * 4 + 2],
            addr[k * 4 + 3],
        ]);
        if w & mask[k] != want[k] {
            return false;
        }
        k += 1;
    }
    true
}
