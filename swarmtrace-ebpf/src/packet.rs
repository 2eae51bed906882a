//! Reading IPv4/IPv6 + TCP headers out of kernel memory, and the handshake filter.
//! Every read goes through `bpf_probe_read_kernel`, which fails cleanly on a bad address, so no
//! read here can fault whatever the packet holds.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use swarmtrace_common::{class, PacketInfo};

use crate::config::global;

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

pub enum Parse {
    /// A TCP handshake packet, decoded into the caller's `PacketInfo`.
    Handshake,
    /// Not TCP, not a handshake packet, or a later fragment.
    Other,
    /// TCP, but its headers could not be read.
    Unreadable,
}

#[inline(always)]
unsafe fn read<T>(p: *const u8) -> Result<T, ()> {
    unsafe { bpf_probe_read_kernel(p as *const T) }.map_err(|_| ())
}

/// Parses the packet whose network header starts at `ip` into `info`; `opts` is scratch space.
#[inline(always)]
pub unsafe fn parse_ip(ip: *const u8, info: &mut PacketInfo, opts: &mut [u8; 64]) -> Parse {
    let first: u8 = match unsafe { read(ip) } {
        Ok(b) => b,
        Err(()) => return Parse::Other,
    };
    let tcp: *const u8;
    let ip_payload: u32;
    match first >> 4 {
        4 => {
            let hdr: [u8; 20] = match unsafe { read(ip) } {
                Ok(h) => h,
                Err(()) => return Parse::Other,
            };
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
            info.saddr[..4].copy_from_slice(&hdr[12..16]);
            info.daddr[..4].copy_from_slice(&hdr[16..20]);
            tcp = unsafe { ip.add(ihl as usize) };
            ip_payload = total.saturating_sub(ihl);
        }
        6 => {
            let hdr: [u8; 40] = match unsafe { read(ip) } {
                Ok(h) => h,
                Err(()) => return Parse::Other,
            };
            let mut next = hdr[6];
            let mut off: u32 = 40;
            let mut payload = u16::from_be_bytes([hdr[4], hdr[5]]) as u32;
            let mut i = 0;
            while i < MAX_IPV6_EXT && next != IPPROTO_TCP {
                let ext: [u8; 4] = match unsafe { read(ip.add(off as usize)) } {
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
            tcp = unsafe { ip.add(off as usize) };
            ip_payload = payload;
        }
        _ => return Parse::Other,
    }
    unsafe { parse_tcp(tcp, ip_payload, info, opts) }
}

#[inline(always)]
unsafe fn parse_tcp(
    tcp: *const u8,
    ip_payload: u32,
    info: &mut PacketInfo,
    buf: &mut [u8; 64],
) -> Parse {
    let th: [u8; 20] = match unsafe { read(tcp) } {
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
    if doff > 20 {
        unsafe { read_timestamp(tcp.add(20), doff - 20, info, buf) };
    } else {
        info.has_ts = 0;
    }
    Parse::Handshake
}

/// Finds the timestamp option among `len` bytes of TCP options. The options are copied once
/// into a stack buffer; every index into it is masked so the verifier can bound it.
#[inline(always)]
unsafe fn read_timestamp(opts: *const u8, len: u32, info: &mut PacketInfo, buf: &mut [u8; 64]) {
    info.has_ts = 0;
    // Up to 40 bytes of options; the skb's tail room and shared info lie beyond, so reading
    // the full 40 stays within the allocation even when the options are shorter.
    if unsafe { bpf_probe_read_kernel_buf(opts, &mut buf[..40]) }.is_err() {
        return;
    }
    let len = if len > 40 { 40 } else { len } as usize;
    let mut i: usize = 0;
    // At most 40 options (each at least one byte).
    for _ in 0..40 {
        if i >= len {
            return;
        }
        let kind = buf[i & 63];
        match kind {
            TCPOPT_EOL => return,
            TCPOPT_NOP => i += 1,
            _ => {
                let olen = buf[(i + 1) & 63] as usize;
                if olen < 2 || i + olen > len {
                    return;
                }
                if kind == TCPOPT_TIMESTAMP && olen == 10 {
                    let b = |k: usize| buf[(i + k) & 63];
                    info.tsval = u32::from_be_bytes([b(2), b(3), b(4), b(5)]);
                    info.tsecr = u32::from_be_bytes([b(6), b(7), b(8), b(9)]);
                    info.has_ts = 1;
                    return;
                }
                i += olen;
            }
        }
    }
}

/// True when the packet matches the user's port and address filters.
#[inline(always)]
pub fn matches(p: &PacketInfo) -> bool {
    let port = global!(FILTER.port);
    if port != 0 && p.sport != port && p.dport != port {
        return false;
    }
    let family = global!(FILTER.family);
    if family == 0 {
        return true;
    }
    if family != p.family {
        return false;
    }
    addr_matches(&p.saddr) || addr_matches(&p.daddr)
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
