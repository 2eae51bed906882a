//! Reading IPv4/IPv6 + TCP headers, from kernel memory (tracepoints) or from a packet (TC),
//! through one parser. Every read fails cleanly (probe_read on a bad address, skb_load_bytes
//! past the end, direct packet access only after a bounds check the verifier also checks), so
//! nothing a packet holds can make a read unsafe.
//!
//! Reads are what a handshake packet costs (about 40 ns per `bpf_probe_read_kernel`, 25 ns
//! per `bpf_skb_load_bytes` here, BENCHMARKS.md): an IPv4 packet without IP options whose
//! options start as Linux's do is decoded from one read of its first `HEAD` bytes (a plain
//! load from the linear data at TC), and only other packets take a read per header and per
//! option.

use aya_ebpf::{cty::c_void, helpers::bpf_skb_load_bytes, programs::TcContext};
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

    /// Reads a header (the IP and TCP headers, the first options) at `off`: as `read`, or
    /// faster where the source can.
    #[inline(always)]
    fn read_hdr<T: Copy>(&self, off: usize) -> Result<T, ()> {
        self.read(off)
    }
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

    /// Direct packet access where the bytes are in the linear data (a plain load, no helper
    /// call), else `bpf_skb_load_bytes` (headers in paged data, or past the end: an error).
    #[inline(always)]
    fn read_hdr<T: Copy>(&self, off: usize) -> Result<T, ()> {
        let start = self.ctx.data() + self.l3 + off;
        if start + core::mem::size_of::<T>() <= self.ctx.data_end() {
            // SAFETY: `start .. start + size_of::<T>()` is inside the packet's linear data,
            // checked just above (and by the verifier, which refuses the program otherwise);
            // `T` is a byte array or a plain integer, any bit pattern valid, read unaligned.
            return Ok(unsafe { core::ptr::read_unaligned(start as *const T) });
        }
        self.read(off)
    }
}

impl Skb<'_> {
    /// Copies the first `HEAD` bytes at the network header into `buf` (scratch space: the
    /// classifier's stack has no room for them): from the linear data where they are in it,
    /// else with `bpf_skb_load_bytes`. False when the packet is shorter.
    #[inline(always)]
    pub fn read_head(&self, buf: &mut [u8; HEAD]) -> bool {
        let start = self.ctx.data() + self.l3;
        if start + HEAD <= self.ctx.data_end() {
            // SAFETY: `start .. start + HEAD` is inside the linear data, checked just above
            // (and by the verifier); `buf` is a writable array of `HEAD` bytes.
            unsafe { core::ptr::copy_nonoverlapping(start as *const u8, buf.as_mut_ptr(), HEAD) };
            return true;
        }
        // SAFETY: the helper copies at most `HEAD` bytes into `buf`, or fails past the end.
        unsafe {
            bpf_skb_load_bytes(
                self.ctx.skb.skb as *const _,
                self.l3 as u32,
                buf.as_mut_ptr() as *mut c_void,
                HEAD as u32,
            ) == 0
        }
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

/// Bytes of a packet read in one go from its network header: an IPv4 header without options
/// (20), the TCP header (20) and the first options (16), where a SYN's timestamp is.
pub const HEAD: usize = 56;

/// Parses the packet whose network header `src` reads into `info`. `head`, when the caller
/// could read them, is the first `HEAD` bytes at the network header: an IPv4 packet without
/// IP options is then decoded from them with no further read (but for unusual TCP options).
#[inline(always)]
pub fn parse_ip<S: Source>(src: &S, head: Option<&[u8; HEAD]>, info: &mut PacketInfo) -> Parse {
    if let Some(h) = head {
        if h[0] == 0x45 {
            return parse_v4_head(src, h, info);
        }
    }
    // One read for the common case: an IPv4 header (an IPv6 one is read again, whole).
    let hdr: [u8; 20] = match src.read_hdr(0) {
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
            let hdr: [u8; 40] = match src.read_hdr(0) {
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

/// An IPv4 packet without IP options whose first `HEAD` bytes are `h`.
#[inline(always)]
fn parse_v4_head<S: Source>(src: &S, h: &[u8; HEAD], info: &mut PacketInfo) -> Parse {
    if h[9] != IPPROTO_TCP {
        return Parse::Other;
    }
    // Fragment offset != 0: no TCP header here.
    if (u16::from_be_bytes([h[6], h[7]]) & 0x1fff) != 0 {
        return Parse::Other;
    }
    let total = u16::from_be_bytes([h[2], h[3]]) as u32;
    info.family = 4;
    info.saddr = [0; 16];
    info.daddr = [0; 16];
    info.saddr[..4].copy_from_slice(&h[12..16]);
    info.daddr[..4].copy_from_slice(&h[16..20]);
    let Ok(th) = <&[u8; 20]>::try_from(&h[20..40]) else {
        return Parse::Unreadable;
    };
    let doff = match tcp_fields(th, total.saturating_sub(20), info) {
        Ok(d) => d,
        Err(p) => return p,
    };
    if wants_timestamp(doff, info) {
        let fast = match <&[u8; 16]>::try_from(&h[40..56]) {
            Ok(o) => linux_timestamp(o, (doff - 20) as usize, info),
            Err(_) => false,
        };
        if !fast {
            find_timestamp(src, 40, (doff - 20) as usize, info);
        }
    }
    Parse::Handshake
}

#[inline(always)]
fn parse_tcp<S: Source>(src: &S, tcp: usize, ip_payload: u32, info: &mut PacketInfo) -> Parse {
    let th: [u8; 20] = match src.read_hdr(tcp) {
        Ok(t) => t,
        Err(()) => return Parse::Unreadable,
    };
    let doff = match tcp_fields(&th, ip_payload, info) {
        Ok(d) => d,
        Err(p) => return p,
    };
    if wants_timestamp(doff, info) {
        let fast = (doff - 20) >= 16
            && match src.read_hdr::<[u8; 16]>(tcp + 20) {
                Ok(o) => linux_timestamp(&o, (doff - 20) as usize, info),
                Err(()) => false,
            };
        if !fast {
            find_timestamp(src, tcp + 20, (doff - 20) as usize, info);
        }
    }
    Parse::Handshake
}

/// Decodes the TCP header `th` into `info`; its length (`doff`, bytes), or how the packet
/// is not a handshake packet.
#[inline(always)]
fn tcp_fields(th: &[u8; 20], ip_payload: u32, info: &mut PacketInfo) -> Result<u32, Parse> {
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
        return Err(Parse::Other);
    };
    if doff < 20 {
        return Err(Parse::Unreadable);
    }
    info.tcp_flags = flags;
    info.sport = u16::from_be_bytes([th[0], th[1]]);
    info.dport = u16::from_be_bytes([th[2], th[3]]);
    info.seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]);
    info.ack_seq = u32::from_be_bytes([th[8], th[9], th[10], th[11]]);
    info.has_ts = 0;
    info.tsval = 0;
    info.tsecr = 0;
    Ok(doff)
}

/// Only a SYN's TSval keys its handshake, and a SYN-ACK echoes it; a RST or a bare ACK is
/// found through the ISN. Half of a stream is bare ACKs: their options are not walked.
#[inline(always)]
fn wants_timestamp(doff: u32, info: &PacketInfo) -> bool {
    doff > 20 && (info.class == class::SYN || info.class == class::SYN_ACK)
}

/// The options of Linux's SYNs and SYN-ACKs (and most stacks'), the first 16 bytes `o` of
/// `len` (>= 16 checked here): MSS, then SACK-permitted or two NOPs, then the timestamp at
/// offset 6 (`02 04 .. .. 04 02 08 0a` or `02 04 .. .. 01 01 08 0a`). True when the options
/// start so (the timestamp is then decoded, as the walk would); false sends the packet to
/// the walk, one read per option.
#[inline(always)]
fn linux_timestamp(o: &[u8; 16], len: usize, info: &mut PacketInfo) -> bool {
    if len < 16 {
        return false;
    }
    let pair = (o[4] == 4 && o[5] == 2) || (o[4] == TCPOPT_NOP && o[5] == TCPOPT_NOP);
    if o[0] != 2 || o[1] != 4 || !pair || o[6] != TCPOPT_TIMESTAMP || o[7] != 10 {
        return false;
    }
    info.tsval = u32::from_be_bytes([o[8], o[9], o[10], o[11]]);
    info.tsecr = u32::from_be_bytes([o[12], o[13], o[14], o[15]]);
    info.has_ts = 1;
    true
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
