//! `handshakes.pcapng` for the postmortem bundle: dropped and unanswered handshake packets
//! rebuilt from swarmtrace's events (the kernel programs report headers, not raw packets), each
//! with its verdict in the packet comment, readable by tshark and Wireshark.
//!
//! File layout (draft-ietf-opsawg-pcapng, little-endian, one section):
//!
//! - one Section Header Block (version 1.0, section length -1) with `shb_hardware` (CPU
//!   architecture), `shb_os` (`Linux <release>` when `/proc` says so) and `shb_userappl`;
//! - one Interface Description Block per distinct interface label, written on first use:
//!   linktype RAW (101, so IPv4 and IPv6 packets share it), snaplen 65535, `if_name` = the
//!   label and `if_tsresol` = 9 (timestamps in nanoseconds since the Unix epoch);
//! - one Enhanced Packet Block per packet: the rebuilt IP packet and `opt_comment`.
//!
//! Every option is padded to 32 bits and every option list ends with `opt_endofopt`.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::net;

/// One TCP packet to rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket {
    /// Packet timestamp, nanoseconds since the Unix epoch.
    pub ts_unix_ns: i128,
    /// IPv4 or IPv6 (both ends the same family; see [`build_packet`] for mixed ones).
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    /// Raw TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 ...).
    pub flags: u8,
    /// TCP timestamp option, written when `tsval` is `Some` (`tsecr` defaults to 0).
    pub tsval: Option<u32>,
    pub tsecr: Option<u32>,
    /// The packet comment, e.g. `verdict=dropped reason=TCP_RFC7323_TW_PAWS netns=task1 ...`.
    /// Empty: no comment. Longer than 65535 bytes: cut at a character boundary.
    pub comment: String,
    /// Where it was seen, e.g. `task1:eth0`: one Interface Description Block per distinct label.
    pub interface: String,
}

/// TCP flag bits.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

const BT_SHB: u32 = 0x0A0D_0D0A;
const BT_IDB: u32 = 0x0000_0001;
const BT_EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_RAW: u16 = 101;
const SNAPLEN: u32 = 65535;

const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_HARDWARE: u16 = 2;
const SHB_OS: u16 = 3;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;

/// Timestamps written by this module are in units of 10^-9 s.
const WRITE_TSRESOL: u8 = 9;
/// The spec's default when an IDB has no `if_tsresol`: microseconds.
const DEFAULT_TSRESOL: u8 = 6;

/// Writes `handshakes.pcapng`.
pub struct PcapngWriter<W: Write> {
    out: W,
    /// Interface label -> interface id in this section.
    interfaces: HashMap<String, u32>,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the Section Header Block; `app` goes into `shb_userappl` (e.g. "swarmtrace 0.1.0").
    pub fn new(mut out: W, app: &str) -> io::Result<Self> {
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes()); // major version
        body.extend_from_slice(&0u16.to_le_bytes()); // minor version
        body.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not specified
        push_str_option(&mut body, SHB_HARDWARE, std::env::consts::ARCH);
        push_str_option(&mut body, SHB_OS, &os_description());
        push_str_option(&mut body, SHB_USERAPPL, app);
        push_end_of_options(&mut body);
        out.write_all(&block(BT_SHB, &body))?;
        Ok(PcapngWriter {
            out,
            interfaces: HashMap::new(),
        })
    }

    /// Writes one packet: an Interface Description Block first if its interface label is new,
    /// then an Enhanced Packet Block with the rebuilt packet and its comment. Fails with
    /// `InvalidInput` when the timestamp is before 1970 or beyond what 64-bit nanoseconds hold.
    pub fn write(&mut self, p: &TcpPacket) -> io::Result<()> {
        let ts = u64::try_from(p.ts_unix_ns).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "packet timestamp {} ns is outside what pcapng can hold (1970..2554)",
                    p.ts_unix_ns
                ),
            )
        })?;
        let id = match self.interfaces.get(&p.interface) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.interfaces.len()).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "too many interfaces")
                })?;
                self.out.write_all(&idb(&p.interface))?;
                self.interfaces.insert(p.interface.clone(), id);
                id
            }
        };
        let data = build_packet(p);
        let mut body = Vec::with_capacity(20 + data.len() + p.comment.len() + 16);
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts as u32).to_le_bytes());
        let len = data.len() as u32; // at most 40 + 60 bytes
        body.extend_from_slice(&len.to_le_bytes()); // captured length
        body.extend_from_slice(&len.to_le_bytes()); // original length
        body.extend_from_slice(&data);
        pad32(&mut body);
        if !p.comment.is_empty() {
            push_str_option(&mut body, OPT_COMMENT, &p.comment);
            push_end_of_options(&mut body);
        }
        self.out.write_all(&block(BT_EPB, &body))
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn idb(label: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + label.len());
    body.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes()); // reserved
    body.extend_from_slice(&SNAPLEN.to_le_bytes());
    push_str_option(&mut body, IF_NAME, label);
    push_option(&mut body, IF_TSRESOL, &[WRITE_TSRESOL]);
    push_end_of_options(&mut body);
    block(BT_IDB, &body)
}

/// `Linux 6.18.0-...` from `/proc`, else the OS family.
fn os_description() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(release) if !release.trim().is_empty() => format!("Linux {}", release.trim()),
        _ => std::env::consts::OS.to_string(),
    }
}

/// A whole block: type, total length, body (already padded to 32 bits), total length.
fn block(block_type: u32, body: &[u8]) -> Vec<u8> {
    debug_assert_eq!(body.len() % 4, 0);
    let total = (body.len() + 12) as u32;
    let mut b = Vec::with_capacity(body.len() + 12);
    b.extend_from_slice(&block_type.to_le_bytes());
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&total.to_le_bytes());
    b
}

fn pad32(buf: &mut Vec<u8>) {
    while buf.len() & 3 != 0 {
        buf.push(0);
    }
}

fn push_option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    pad32(buf);
}

/// A UTF-8 option, left out when empty, cut to 65535 bytes at a character boundary.
/// A string option: names in it come from outside (Docker, interface names, which Linux lets
/// hold ESC), and tshark prints options to a terminal as they are, so control and invisible
/// characters are written escaped.
fn push_str_option(buf: &mut Vec<u8>, code: u16, value: &str) {
    let value = crate::escape::terminal(value);
    let value = clip(&value, usize::from(u16::MAX));
    if !value.is_empty() {
        push_option(buf, code, value.as_bytes());
    }
}

fn push_end_of_options(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&OPT_ENDOFOPT.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

enum IpPair {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// Both ends in one family: an IPv4-mapped IPv6 address meeting an IPv4 one becomes IPv4,
/// any other mix becomes IPv6 with the IPv4 end mapped (`::ffff:a.b.c.d`).
fn ip_pair(src: IpAddr, dst: IpAddr) -> IpPair {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => IpPair::V4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => IpPair::V6(s, d),
        (IpAddr::V4(s), IpAddr::V6(d)) => match d.to_ipv4_mapped() {
            Some(d) => IpPair::V4(s, d),
            None => IpPair::V6(s.to_ipv6_mapped(), d),
        },
        (IpAddr::V6(s), IpAddr::V4(d)) => match s.to_ipv4_mapped() {
            Some(s) => IpPair::V4(s, d),
            None => IpPair::V6(s, d.to_ipv6_mapped()),
        },
    }
}

/// TCP options as Linux sends them.
///
/// SYN and SYN-ACK: MSS 1460, SACK_PERM, TIMESTAMP, NOP, WSCALE 7 (20 bytes); without a
/// timestamp: MSS 1460, NOP, NOP, SACK_PERM, NOP, WSCALE 7 (12 bytes). Other packets:
/// NOP, NOP, TIMESTAMP when `tsval` is `Some`, else none.
fn tcp_options(p: &TcpPacket) -> Vec<u8> {
    let mut o = Vec::with_capacity(20);
    let timestamp = |o: &mut Vec<u8>, tsval: u32| {
        o.extend_from_slice(&[8, 10]);
        o.extend_from_slice(&tsval.to_be_bytes());
        o.extend_from_slice(&p.tsecr.unwrap_or(0).to_be_bytes());
    };
    if p.flags & TCP_SYN != 0 {
        o.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        match p.tsval {
            Some(tsval) => {
                o.extend_from_slice(&[4, 2]); // SACK_PERM
                timestamp(&mut o, tsval);
            }
            None => o.extend_from_slice(&[1, 1, 4, 2]), // NOP NOP SACK_PERM
        }
        o.extend_from_slice(&[1, 3, 3, 7]); // NOP, WSCALE 7
    } else if let Some(tsval) = p.tsval {
        o.extend_from_slice(&[1, 1]);
        timestamp(&mut o, tsval);
    }
    o
}

/// Builds the raw IP packet (no link-layer header, for linktype RAW): an IPv4 header (TTL 64,
/// DF, ID 0, correct header checksum) or an IPv6 header (hop limit 64), then a TCP header with
/// options (see [`TcpPacket`]; for a SYN or SYN-ACK: MSS 1460, SACK_PERM, TIMESTAMP if `tsval`
/// is `Some`, NOP, WSCALE 7; for other packets NOP NOP TIMESTAMP when `tsval` is `Some`),
/// window 64240 and a correct checksum over the pseudo-header. No payload.
///
/// Mixed address families cannot be sent on the wire: an IPv4-mapped IPv6 address facing an
/// IPv4 one is written as IPv4, any other mix as IPv6 with the IPv4 address mapped.
pub fn build_packet(p: &TcpPacket) -> Vec<u8> {
    let options = tcp_options(p);
    let tcp_len = 20 + options.len();
    let mut tcp = Vec::with_capacity(tcp_len);
    tcp.extend_from_slice(&p.src.port().to_be_bytes());
    tcp.extend_from_slice(&p.dst.port().to_be_bytes());
    tcp.extend_from_slice(&p.seq.to_be_bytes());
    tcp.extend_from_slice(&p.ack.to_be_bytes());
    tcp.push(((tcp_len / 4) as u8) << 4); // data offset, reserved bits 0
    tcp.push(p.flags);
    tcp.extend_from_slice(&64240u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0]); // checksum, filled below
    tcp.extend_from_slice(&[0, 0]); // urgent pointer
    tcp.extend_from_slice(&options);

    match ip_pair(p.src.ip(), p.dst.ip()) {
        IpPair::V4(src, dst) => {
            let sum = net::tcp_checksum_v4(src, dst, &tcp);
            tcp[16..18].copy_from_slice(&sum.to_be_bytes());

            let mut pkt = Vec::with_capacity(20 + tcp_len);
            pkt.push(0x45); // version 4, IHL 5
            pkt.push(0); // DSCP/ECN
            pkt.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            pkt.extend_from_slice(&[0, 0]); // identification
            pkt.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, fragment offset 0
            pkt.push(64); // TTL
            pkt.push(6); // TCP
            pkt.extend_from_slice(&[0, 0]); // header checksum, filled below
            pkt.extend_from_slice(&src.octets());
            pkt.extend_from_slice(&dst.octets());
            let sum = net::internet_checksum(&pkt);
            pkt[10..12].copy_from_slice(&sum.to_be_bytes());
            pkt.extend_from_slice(&tcp);
            pkt
        }
        IpPair::V6(src, dst) => {
            let sum = net::tcp_checksum_v6(src, dst, &tcp);
            tcp[16..18].copy_from_slice(&sum.to_be_bytes());

            let mut pkt = Vec::with_capacity(40 + tcp_len);
            pkt.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // version 6, class 0, flow 0
            pkt.extend_from_slice(&(tcp_len as u16).to_be_bytes()); // payload length
            pkt.push(6); // next header: TCP
            pkt.push(64); // hop limit
            pkt.extend_from_slice(&src.octets());
            pkt.extend_from_slice(&dst.octets());
            pkt.extend_from_slice(&tcp);
            pkt
        }
    }
}

/// One Enhanced Packet Block read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPacket {
    /// The interface's `if_name`, or `if<N>` (its id in the section) when it has none.
    pub interface: String,
    /// Nanoseconds since the Unix epoch (`if_tsresol` and `if_tsoffset` applied).
    pub ts_unix_ns: i128,
    /// Captured bytes (for files from this module: the raw IP packet).
    pub data: Vec<u8>,
    /// The first `opt_comment`, if any.
    pub comment: Option<String>,
}

/// A pcapng block type, shown by name and number in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockType(pub u32);

impl fmt::Display for BlockType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            BT_SHB => "Section Header Block",
            BT_IDB => "Interface Description Block",
            0x0000_0002 => "Packet Block (obsolete)",
            0x0000_0003 => "Simple Packet Block",
            0x0000_0004 => "Name Resolution Block",
            0x0000_0005 => "Interface Statistics Block",
            BT_EPB => "Enhanced Packet Block",
            0x0000_000A => "Decryption Secrets Block",
            0x0000_0BAD | 0x4000_0BAD => "Custom Block",
            _ => "block",
        };
        write!(f, "{name} (type {:#010x})", self.0)
    }
}

/// Why a pcapng file could not be read. Every variant names the block and its byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapngError {
    #[error("not a pcapng file: the input is empty")]
    Empty,
    #[error("not a pcapng file: the first block is a {block_type}, not a Section Header Block")]
    NotPcapng { block_type: BlockType },
    #[error("Section Header Block at offset {offset}: big-endian sections are not supported")]
    BigEndian { offset: usize },
    #[error("Section Header Block at offset {offset}: bad byte-order magic {magic:#010x}")]
    BadMagic { offset: usize, magic: u32 },
    #[error("Section Header Block at offset {offset}: unsupported pcapng version {major}.{minor}")]
    UnsupportedVersion {
        offset: usize,
        major: u16,
        minor: u16,
    },
    #[error("truncated {what} at offset {offset}: needs {needed} bytes, {available} left")]
    Truncated {
        what: String,
        offset: usize,
        needed: u64,
        available: usize,
    },
    #[error("{block_type} at offset {offset}: invalid block total length {length} ({reason})")]
    BadBlockLength {
        block_type: BlockType,
        offset: usize,
        length: u32,
        reason: &'static str,
    },
    #[error(
        "{block_type} at offset {offset}: trailing block total length {trailing} differs from the leading {leading}"
    )]
    LengthMismatch {
        block_type: BlockType,
        offset: usize,
        leading: u32,
        trailing: u32,
    },
    #[error("{block_type} at offset {offset}: {reason}")]
    Malformed {
        block_type: BlockType,
        offset: usize,
        reason: String,
    },
    #[error(
        "Enhanced Packet Block at offset {offset}: interface id {interface_id} is not defined (the section has {defined} interfaces)"
    )]
    UnknownInterface {
        offset: usize,
        interface_id: u32,
        defined: usize,
    },
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

struct Interface {
    name: String,
    tsresol: u8,
    tsoffset_s: i64,
}

/// One option: code, value, and where it starts (absolute offset).
struct Opt<'a> {
    code: u16,
    value: &'a [u8],
    offset: usize,
}

/// Parses an options area (`area` starts at absolute offset `base`) of the block at `block_off`.
/// Stops at `opt_endofopt` or at the end of the area.
fn parse_options(
    area: &[u8],
    base: usize,
    block_type: BlockType,
    block_off: usize,
) -> Result<Vec<Opt<'_>>, PcapngError> {
    let mut opts = Vec::new();
    let mut at = 0usize;
    while at < area.len() {
        if area.len() - at < 4 {
            return Err(PcapngError::Malformed {
                block_type,
                offset: block_off,
                reason: format!(
                    "option header at offset {} overruns the options area ({} bytes left)",
                    base + at,
                    area.len() - at
                ),
            });
        }
        let code = le16(area, at);
        let len = usize::from(le16(area, at + 2));
        if code == OPT_ENDOFOPT {
            break;
        }
        let padded = (len + 3) & !3;
        if area.len() - at - 4 < padded {
            return Err(PcapngError::Malformed {
                block_type,
                offset: block_off,
                reason: format!(
                    "option {code} at offset {} has length {len}, overrunning the options area ({} bytes left)",
                    base + at,
                    area.len() - at - 4
                ),
            });
        }
        opts.push(Opt {
            code,
            value: &area[at + 4..at + 4 + len],
            offset: base + at,
        });
        at += 4 + padded;
    }
    Ok(opts)
}

/// Converts an interface timestamp to nanoseconds (floor for resolutions finer than 1 ns).
fn ts_to_ns(ts: u64, tsresol: u8, tsoffset_s: i64) -> i128 {
    let ts = u128::from(ts);
    let ns = if tsresol & 0x80 == 0 {
        let exp = u32::from(tsresol);
        if exp <= 9 {
            ts * 10u128.pow(9 - exp)
        } else {
            match 10u128.checked_pow(exp - 9) {
                Some(div) => ts / div,
                None => 0,
            }
        }
    } else {
        // ts < 2^64, so ts * 10^9 < 2^94: no overflow; the shift is at most 127.
        (ts * 1_000_000_000) >> u32::from(tsresol & 0x7f)
    };
    // ns < 2^94 fits an i128.
    ns as i128 + i128::from(tsoffset_s) * 1_000_000_000
}

/// Reads back a little-endian pcapng file (this module's, or any with SHB/IDB/EPB blocks):
/// one [`ReadPacket`] per Enhanced Packet Block, in file order. Other block types are skipped;
/// a new Section Header Block starts a new set of interfaces. Truncated or corrupted input is
/// an error naming the block and its offset, never a panic.
pub fn read_packets(data: &[u8]) -> Result<Vec<ReadPacket>, PcapngError> {
    if data.is_empty() {
        return Err(PcapngError::Empty);
    }
    let mut packets = Vec::new();
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut off = 0usize;
    while off < data.len() {
        let left = data.len() - off;
        if left < 8 {
            return Err(PcapngError::Truncated {
                what: "block header".to_string(),
                offset: off,
                needed: 8,
                available: left,
            });
        }
        let block_type = BlockType(le32(data, off));
        if off == 0 && block_type.0 != BT_SHB {
            return Err(PcapngError::NotPcapng { block_type });
        }
        if block_type.0 == BT_SHB {
            if left < 12 {
                return Err(PcapngError::Truncated {
                    what: block_type.to_string(),
                    offset: off,
                    needed: 12,
                    available: left,
                });
            }
            match le32(data, off + 8) {
                BYTE_ORDER_MAGIC => {}
                m if m.swap_bytes() == BYTE_ORDER_MAGIC => {
                    return Err(PcapngError::BigEndian { offset: off })
                }
                magic => return Err(PcapngError::BadMagic { offset: off, magic }),
            }
        }
        let length = le32(data, off + 4);
        let min_len: u32 = match block_type.0 {
            BT_SHB => 28,
            BT_IDB => 20,
            BT_EPB => 32,
            _ => 12,
        };
        if length < min_len {
            return Err(PcapngError::BadBlockLength {
                block_type,
                offset: off,
                length,
                reason: "shorter than the block's fixed fields",
            });
        }
        if length & 3 != 0 {
            return Err(PcapngError::BadBlockLength {
                block_type,
                offset: off,
                length,
                reason: "not a multiple of 4",
            });
        }
        if u64::from(length) > left as u64 {
            return Err(PcapngError::Truncated {
                what: block_type.to_string(),
                offset: off,
                needed: u64::from(length),
                available: left,
            });
        }
        let len = length as usize;
        let trailing = le32(data, off + len - 4);
        if trailing != length {
            return Err(PcapngError::LengthMismatch {
                block_type,
                offset: off,
                leading: length,
                trailing,
            });
        }
        // The block's contents between the 8-byte header and the 4-byte trailer.
        let body = &data[off + 8..off + len - 4];
        let body_off = off + 8;
        match block_type.0 {
            BT_SHB => {
                let major = le16(body, 4);
                let minor = le16(body, 6);
                if major != 1 {
                    return Err(PcapngError::UnsupportedVersion {
                        offset: off,
                        major,
                        minor,
                    });
                }
                // Options (shb_*) are not needed; still check they are well formed.
                parse_options(&body[16..], body_off + 16, block_type, off)?;
                interfaces.clear();
            }
            BT_IDB => {
                let opts = parse_options(&body[8..], body_off + 8, block_type, off)?;
                let mut iface = Interface {
                    name: format!("if{}", interfaces.len()),
                    tsresol: DEFAULT_TSRESOL,
                    tsoffset_s: 0,
                };
                let mut named = false;
                for o in opts {
                    match o.code {
                        IF_NAME if !named => {
                            iface.name = String::from_utf8_lossy(o.value).into_owned();
                            named = true;
                        }
                        IF_TSRESOL => match o.value {
                            [r] => iface.tsresol = *r,
                            _ => {
                                return Err(PcapngError::Malformed {
                                    block_type,
                                    offset: off,
                                    reason: format!(
                                        "if_tsresol at offset {} has length {}, not 1",
                                        o.offset,
                                        o.value.len()
                                    ),
                                })
                            }
                        },
                        IF_TSOFFSET => match <[u8; 8]>::try_from(o.value) {
                            Ok(v) => iface.tsoffset_s = i64::from_le_bytes(v),
                            Err(_) => {
                                return Err(PcapngError::Malformed {
                                    block_type,
                                    offset: off,
                                    reason: format!(
                                        "if_tsoffset at offset {} has length {}, not 8",
                                        o.offset,
                                        o.value.len()
                                    ),
                                })
                            }
                        },
                        _ => {}
                    }
                }
                interfaces.push(iface);
            }
            BT_EPB => {
                let interface_id = le32(body, 0);
                let iface =
                    interfaces
                        .get(interface_id as usize)
                        .ok_or(PcapngError::UnknownInterface {
                            offset: off,
                            interface_id,
                            defined: interfaces.len(),
                        })?;
                let ts = (u64::from(le32(body, 4)) << 32) | u64::from(le32(body, 8));
                let captured = le32(body, 12);
                let room = body.len() - 20;
                let padded = (u64::from(captured) + 3) & !3;
                if padded > room as u64 {
                    return Err(PcapngError::Malformed {
                        block_type,
                        offset: off,
                        reason: format!(
                            "captured length {captured} overruns the block ({room} bytes of packet data and options)"
                        ),
                    });
                }
                let padded = padded as usize;
                let pkt = &body[20..20 + captured as usize];
                let opts = parse_options(
                    &body[20 + padded..],
                    body_off + 20 + padded,
                    block_type,
                    off,
                )?;
                let comment = opts
                    .iter()
                    .find(|o| o.code == OPT_COMMENT)
                    .map(|o| String::from_utf8_lossy(o.value).into_owned());
                packets.push(ReadPacket {
                    interface: iface.name.clone(),
                    ts_unix_ns: ts_to_ns(ts, iface.tsresol, iface.tsoffset_s),
                    data: pkt.to_vec(),
                    comment,
                });
            }
            _ => {}
        }
        off += len;
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
    use std::path::PathBuf;
    use std::process::Command;

    const T0: i128 = 1_760_000_000_123_456_789;

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(a), port))
    }

    fn v6(s: &str, port: u16) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(s.parse().unwrap(), port, 0, 0))
    }

    /// IPv4 and IPv6 SYN, SYN-ACK and RST, on two interface labels.
    fn sample() -> Vec<TcpPacket> {
        let c4 = v4([10, 10, 0, 12], 40000);
        let s4 = v4([10, 10, 0, 1], 8080);
        let c6 = v6("fd00:10::12", 40002);
        let s6 = v6("fd00:10::1", 8443);
        let pkt = |i: i128, src, dst, seq, ack, flags, tsval, tsecr, comment: &str, iface: &str| {
            TcpPacket {
                ts_unix_ns: T0 + i * 1_000_001,
                src,
                dst,
                seq,
                ack,
                flags,
                tsval,
                tsecr,
                comment: comment.to_string(),
                interface: iface.to_string(),
            }
        };
        vec![
            pkt(0, c4, s4, 0x1234_5678, 0, TCP_SYN, Some(1_000_000), Some(0),
                "verdict=dropped reason=TCP_RFC7323_TW_PAWS netns=task1 client=10.10.0.12:40000 service=10.10.0.1:8080",
                "task1:eth0"),
            pkt(1, s4, c4, 0x9abc_def0, 0x1234_5679, TCP_SYN | TCP_ACK, Some(2_000_000), Some(1_000_000),
                "verdict=dropped reason=NEIGH_FAILED netns=ingress_sbox",
                "ingress_sbox:eth0"),
            pkt(2, s4, c4, 0, 0x1234_5679, TCP_RST | TCP_ACK, None, None,
                "verdict=reset reason=NO_SOCKET",
                "task1:eth0"),
            pkt(3, c6, s6, 0xffff_fff0, 0, TCP_SYN, Some(u32::MAX), None,
                "verdict=unanswered client=[fd00:10::12]:40002 service=[fd00:10::1]:8443 — ünïcode",
                "task1:eth0"),
            pkt(4, s6, c6, 7, 0xffff_fff1, TCP_SYN | TCP_ACK, None, None,
                "verdict=dropped reason=IP_RPFILTER",
                "host:docker_gwbridge"),
            pkt(5, c6, s6, 0xffff_fff1, 8, TCP_RST, Some(42), Some(43),
                "verdict=dropped reason=NOT_SPECIFIED",
                "host:docker_gwbridge"),
        ]
    }

    fn write_all(packets: &[TcpPacket]) -> Vec<u8> {
        let mut w = PcapngWriter::new(Vec::new(), "swarmtrace test").unwrap();
        for p in packets {
            w.write(p).unwrap();
        }
        w.finish().unwrap()
    }

    /// Straightforward one's-complement sum of 16-bit big-endian words (odd byte padded).
    /// What a test parser sees in a rebuilt packet.
    #[derive(Debug, PartialEq, Eq)]
    struct Parsed {
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        options: Vec<u8>,
    }

    /// Parses a rebuilt packet and checks both checksums independently of the module.
    fn parse_and_verify(d: &[u8]) -> Parsed {
        let (src_ip, dst_ip, tcp, pseudo): (IpAddr, IpAddr, &[u8], Vec<u8>) = match d[0] >> 4 {
            4 => {
                assert_eq!(d[0], 0x45);
                assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), d.len());
                assert_eq!(&d[4..6], &[0, 0], "ID 0");
                assert_eq!(&d[6..8], &[0x40, 0], "DF");
                assert_eq!(d[8], 64, "TTL");
                assert_eq!(d[9], 6, "protocol");
                assert_eq!(net::internet_checksum(&d[..20]), 0, "IPv4 header checksum");
                let s = Ipv4Addr::new(d[12], d[13], d[14], d[15]);
                let t = Ipv4Addr::new(d[16], d[17], d[18], d[19]);
                let tcp = &d[20..];
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&d[12..20]);
                pseudo.extend_from_slice(&[0, 6]);
                pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                (s.into(), t.into(), tcp, pseudo)
            }
            6 => {
                assert_eq!(&d[..4], &[0x60, 0, 0, 0]);
                assert_eq!(usize::from(u16::from_be_bytes([d[4], d[5]])), d.len() - 40);
                assert_eq!(d[6], 6, "next header");
                assert_eq!(d[7], 64, "hop limit");
                let s: [u8; 16] = d[8..24].try_into().unwrap();
                let t: [u8; 16] = d[24..40].try_into().unwrap();
                let tcp = &d[40..];
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&d[8..40]);
                pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 6]);
                (
                    Ipv6Addr::from(s).into(),
                    Ipv6Addr::from(t).into(),
                    tcp,
                    pseudo,
                )
            }
            v => panic!("IP version {v}"),
        };
        let mut all = pseudo;
        all.extend_from_slice(tcp);
        assert_eq!(net::internet_checksum(&all), 0, "TCP checksum");
        let hlen = usize::from(tcp[12] >> 4) * 4;
        assert_eq!(hlen, tcp.len(), "no payload, header fills the segment");
        assert_eq!(tcp[12] & 0x0f, 0);
        assert_eq!(&tcp[18..20], &[0, 0], "urgent pointer");
        Parsed {
            src: SocketAddr::new(src_ip, u16::from_be_bytes([tcp[0], tcp[1]])),
            dst: SocketAddr::new(dst_ip, u16::from_be_bytes([tcp[2], tcp[3]])),
            seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
            ack: u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
            flags: tcp[13],
            window: u16::from_be_bytes([tcp[14], tcp[15]]),
            options: tcp[20..hlen].to_vec(),
        }
    }

    fn ts_option(tsval: u32, tsecr: u32) -> Vec<u8> {
        let mut o = vec![8, 10];
        o.extend_from_slice(&tsval.to_be_bytes());
        o.extend_from_slice(&tsecr.to_be_bytes());
        o
    }

    fn expected_options(p: &TcpPacket) -> Vec<u8> {
        let ts = p.tsval.map(|v| ts_option(v, p.tsecr.unwrap_or(0)));
        let mut o = Vec::new();
        if p.flags & TCP_SYN != 0 {
            o.extend_from_slice(&[2, 4, 0x05, 0xb4]);
            match ts {
                Some(ts) => {
                    o.extend_from_slice(&[4, 2]);
                    o.extend_from_slice(&ts);
                }
                None => o.extend_from_slice(&[1, 1, 4, 2]),
            }
            o.extend_from_slice(&[1, 3, 3, 7]);
        } else if let Some(ts) = ts {
            o.extend_from_slice(&[1, 1]);
            o.extend_from_slice(&ts);
        }
        o
    }

    #[test]
    fn packets_have_the_right_headers_and_checksums() {
        for p in sample() {
            let d = build_packet(&p);
            let got = parse_and_verify(&d);
            assert_eq!(got.src, p.src);
            assert_eq!(got.dst, p.dst);
            assert_eq!(got.seq, p.seq);
            assert_eq!(got.ack, p.ack);
            assert_eq!(got.flags, p.flags);
            assert_eq!(got.window, 64240);
            assert_eq!(got.options, expected_options(&p), "{p:?}");
            assert_eq!(got.options.len() % 4, 0);
        }
    }

    #[test]
    fn checksums_hold_for_many_values() {
        // Vary every field the checksums cover, including odd carries.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..500 {
            let r = next();
            let (src, dst) = if i % 2 == 0 {
                (
                    v4((r as u32).to_be_bytes(), (r >> 32) as u16),
                    v4(((r >> 16) as u32).to_be_bytes(), (r >> 48) as u16),
                )
            } else {
                let a = Ipv6Addr::from(u128::from(r) << 64 | u128::from(next()));
                let b = Ipv6Addr::from(u128::from(next()) << 64 | u128::from(r));
                (
                    SocketAddr::new(a.into(), r as u16),
                    SocketAddr::new(b.into(), (r >> 8) as u16),
                )
            };
            let r2 = next();
            let p = TcpPacket {
                ts_unix_ns: 0,
                src,
                dst,
                seq: r2 as u32,
                ack: (r2 >> 32) as u32,
                flags: (r as u8) & 0x3f,
                tsval: (r2 % 3 != 0).then_some(r2 as u32 ^ 0xdead_beef),
                tsecr: (r2 % 5 != 0).then_some((r2 >> 7) as u32),
                comment: String::new(),
                interface: String::new(),
            };
            let got = parse_and_verify(&build_packet(&p));
            assert_eq!((got.src, got.dst, got.flags), (p.src, p.dst, p.flags));
            assert_eq!(got.options, expected_options(&p));
        }
    }

    #[test]
    fn mixed_families_are_made_consistent() {
        let mut p = sample().remove(0);
        p.dst = SocketAddr::new(Ipv4Addr::new(10, 10, 0, 1).to_ipv6_mapped().into(), 8080);
        let got = parse_and_verify(&build_packet(&p));
        assert_eq!(got.dst, v4([10, 10, 0, 1], 8080));
        p.dst = v6("fd00::1", 8080);
        let got = parse_and_verify(&build_packet(&p));
        assert_eq!(
            got.src.ip(),
            IpAddr::V6(Ipv4Addr::new(10, 10, 0, 12).to_ipv6_mapped())
        );
        assert_eq!(got.dst, v6("fd00::1", 8080));
    }

    #[test]
    fn round_trip() {
        let packets = sample();
        let file = write_all(&packets);
        let back = read_packets(&file).unwrap();
        assert_eq!(back.len(), packets.len());
        for (p, r) in packets.iter().zip(&back) {
            assert_eq!(r.interface, p.interface);
            assert_eq!(r.ts_unix_ns, p.ts_unix_ns);
            assert_eq!(r.data, build_packet(p));
            assert_eq!(r.comment.as_deref(), Some(p.comment.as_str()));
            let got = parse_and_verify(&r.data);
            assert_eq!((got.src, got.dst, got.flags), (p.src, p.dst, p.flags));
        }
    }

    /// Walks the blocks of a well-formed file: (type, offset, length).
    fn blocks(file: &[u8]) -> Vec<(u32, usize, usize)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < file.len() {
            let len = le32(file, off + 4) as usize;
            out.push((le32(file, off), off, len));
            off += len;
        }
        out
    }

    #[test]
    fn layout_is_as_documented() {
        let packets = sample();
        let file = write_all(&packets);
        let b = blocks(&file);
        let types: Vec<u32> = b.iter().map(|x| x.0).collect();
        // SHB, IDB task1, EPB, IDB ingress_sbox, EPB, EPB, EPB, IDB host, EPB, EPB
        assert_eq!(types, vec![BT_SHB, 1, 6, 1, 6, 6, 6, 1, 6, 6]);
        for &(_, off, len) in &b {
            assert_eq!(len % 4, 0);
            assert_eq!(le32(&file, off + len - 4) as usize, len);
        }
        // SHB header fields.
        assert_eq!(le32(&file, 8), BYTE_ORDER_MAGIC);
        assert_eq!((le16(&file, 12), le16(&file, 14)), (1, 0));
        assert_eq!(&file[16..24], &[0xff; 8]);
        // IDB: linktype RAW, if_name, if_tsresol = 9.
        let (_, idb_off, idb_len) = b[1];
        let idb = &file[idb_off..idb_off + idb_len];
        assert_eq!(le16(idb, 8), 101);
        let opts = parse_options(&idb[16..idb_len - 4], 0, BlockType(1), 0).unwrap();
        let codes: Vec<(u16, &[u8])> = opts.iter().map(|o| (o.code, o.value)).collect();
        assert_eq!(codes, vec![(2, &b"task1:eth0"[..]), (9, &[9u8][..])]);
        // Interface ids in EPBs: 0, 1, 0, 0, 2, 2.
        let ids: Vec<u32> = b
            .iter()
            .filter(|x| x.0 == BT_EPB)
            .map(|x| le32(&file, x.1 + 8))
            .collect();
        assert_eq!(ids, vec![0, 1, 0, 0, 2, 2]);
    }

    #[test]
    fn empty_comment_and_long_comment() {
        let mut p = sample().remove(0);
        p.comment = String::new();
        let back = read_packets(&write_all(&[p.clone()])).unwrap();
        assert_eq!(back[0].comment, None);
        p.comment = "é".repeat(40_000); // 80000 bytes: cut to 65534 (a char boundary)
        let back = read_packets(&write_all(&[p])).unwrap();
        assert_eq!(back[0].comment.as_ref().unwrap().len(), 65534);
    }

    #[test]
    fn names_from_outside_reach_the_file_with_their_control_characters_escaped() {
        // tshark prints comments and interface names to a terminal as they are: a Docker
        // name or an interface name (Linux allows ESC in one) must not carry escapes there.
        let mut p = sample().remove(0);
        p.comment = "verdict=dropped netns=container \u{1b}]0;pwned\u{7}x\u{202e}".into();
        p.interface = "host:eth\u{1b}[2J".into();
        let file = write_all(&[p]);
        assert!(!file.contains(&0x1b), "an ESC byte reached the pcapng");
        assert!(!file.windows(3).any(|w| w == "\u{202e}".as_bytes()));
        let back = read_packets(&file).unwrap();
        assert_eq!(
            back[0].comment.as_deref(),
            Some("verdict=dropped netns=container \\x1b]0;pwned\\x07x\\u{202e}")
        );
    }

    #[test]
    fn timestamps_outside_the_format_are_rejected() {
        let mut w = PcapngWriter::new(Vec::new(), "t").unwrap();
        let mut p = sample().remove(0);
        p.ts_unix_ns = -1;
        assert_eq!(w.write(&p).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        p.ts_unix_ns = i128::from(u64::MAX) + 1;
        assert_eq!(w.write(&p).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        p.ts_unix_ns = i128::from(u64::MAX);
        w.write(&p).unwrap();
        let back = read_packets(&w.finish().unwrap()).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].ts_unix_ns, i128::from(u64::MAX));
    }

    #[test]
    fn every_truncation_is_an_error_or_a_clean_prefix() {
        let packets = sample();
        let file = write_all(&packets);
        let b = blocks(&file);
        for cut in 0..file.len() {
            let res = read_packets(&file[..cut]);
            // Cutting exactly between two blocks leaves a valid, shorter file.
            let boundary = b.iter().position(|&(_, off, _)| off == cut);
            match (boundary, res) {
                (Some(i), Ok(got)) if cut > 0 => {
                    let n = b[..i].iter().filter(|x| x.0 == BT_EPB).count();
                    assert_eq!(got.len(), n, "cut at {cut}");
                    assert_eq!(got[..], read_packets(&file).unwrap()[..n]);
                }
                (_, Err(e)) => {
                    assert!(cut == 0 || boundary.is_none(), "cut {cut}: {e}");
                    let msg = e.to_string();
                    assert!(
                        msg.contains("offset") || cut == 0,
                        "cut {cut}: message without an offset: {msg}"
                    );
                }
                (_, Ok(got)) => panic!("cut at {cut} read {} packets", got.len()),
            }
        }
    }

    #[test]
    fn corrupted_block_lengths_are_errors() {
        let file = write_all(&sample());
        let b = blocks(&file);
        let (_, epb_off, epb_len) = *b.iter().find(|x| x.0 == BT_EPB).unwrap();
        let set_len = |v: u32| {
            let mut f = file.clone();
            f[epb_off + 4..epb_off + 8].copy_from_slice(&v.to_le_bytes());
            f
        };
        let e = read_packets(&set_len(epb_len as u32 + 4)).unwrap_err();
        assert!(
            matches!(e, PcapngError::LengthMismatch { offset, .. } if offset == epb_off),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("Enhanced Packet Block") && msg.contains(&epb_off.to_string()),
            "{msg}"
        );

        let e = read_packets(&set_len(epb_len as u32 - 4)).unwrap_err();
        assert!(matches!(e, PcapngError::LengthMismatch { .. }), "{e}");
        let e = read_packets(&set_len(epb_len as u32 + 1)).unwrap_err();
        assert!(matches!(e, PcapngError::BadBlockLength { .. }), "{e}");
        let e = read_packets(&set_len(8)).unwrap_err();
        assert!(matches!(e, PcapngError::BadBlockLength { .. }), "{e}");
        let e = read_packets(&set_len(0xffff_fff0)).unwrap_err();
        assert!(
            matches!(e, PcapngError::Truncated { offset, .. } if offset == epb_off),
            "{e}"
        );
        assert!(e.to_string().contains("Enhanced Packet Block"), "{e}");

        // The trailing copy.
        let mut f = file.clone();
        f[epb_off + epb_len - 4] ^= 0x40;
        assert!(matches!(
            read_packets(&f),
            Err(PcapngError::LengthMismatch { .. })
        ));

        // Captured length larger than the block.
        let mut f = file.clone();
        f[epb_off + 20..epb_off + 24].copy_from_slice(&1000u32.to_le_bytes());
        let e = read_packets(&f).unwrap_err();
        assert!(e.to_string().contains("captured length 1000"), "{e}");

        // Option length overrunning the block: the comment's length field.
        let cap = le32(&file, epb_off + 20) as usize;
        let opt_at = epb_off + 28 + ((cap + 3) & !3);
        assert_eq!(le16(&file, opt_at), OPT_COMMENT);
        let mut f = file.clone();
        f[opt_at + 2..opt_at + 4].copy_from_slice(&0xfff0u16.to_le_bytes());
        let e = read_packets(&f).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("option 1 at offset {opt_at}")),
            "{e}"
        );

        // Unknown interface id.
        let mut f = file.clone();
        f[epb_off + 8] = 9;
        let e = read_packets(&f).unwrap_err();
        assert!(
            matches!(
                e,
                PcapngError::UnknownInterface {
                    interface_id: 9,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn not_pcapng_and_big_endian() {
        assert_eq!(read_packets(&[]), Err(PcapngError::Empty));
        let e = read_packets(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00 classic pcap....").unwrap_err();
        assert!(matches!(e, PcapngError::NotPcapng { .. }), "{e}");
        let mut f = write_all(&sample());
        f[8..12].copy_from_slice(&BYTE_ORDER_MAGIC.to_be_bytes());
        assert_eq!(read_packets(&f), Err(PcapngError::BigEndian { offset: 0 }));
        f[8] = 0;
        assert!(matches!(
            read_packets(&f),
            Err(PcapngError::BadMagic { .. })
        ));
        let mut f = write_all(&sample());
        f[12] = 2;
        assert!(matches!(
            read_packets(&f),
            Err(PcapngError::UnsupportedVersion { major: 2, .. })
        ));
    }

    #[test]
    fn random_corruption_never_panics() {
        let file = write_all(&sample());
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut f = file.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() % f.len() as u64) as usize;
                f[at] = next() as u8;
            }
            let cut = f.len() - (next() % 8) as usize;
            let _ = read_packets(&f[..cut]);
        }
    }

    /// Builds a foreign-looking file by hand: microsecond default resolution, a power-of-2
    /// resolution with an offset, an unknown block, an IDB without if_name, a second section.
    #[test]
    fn reads_other_resolutions_and_skips_unknown_blocks() {
        let shb = |out: &mut Vec<u8>| {
            let mut body = Vec::new();
            body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
            body.extend_from_slice(&[1, 0, 0, 0]);
            body.extend_from_slice(&(-1i64).to_le_bytes());
            out.extend_from_slice(&block(BT_SHB, &body)); // no options at all
        };
        let idb_with = |out: &mut Vec<u8>, opts: &[(u16, &[u8])]| {
            let mut body = Vec::new();
            body.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            for (c, v) in opts {
                push_option(&mut body, *c, v);
            }
            if !opts.is_empty() {
                push_end_of_options(&mut body);
            }
            out.extend_from_slice(&block(BT_IDB, &body));
        };
        let epb = |out: &mut Vec<u8>, id: u32, ts: u64, data: &[u8]| {
            let mut body = Vec::new();
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            body.extend_from_slice(&(ts as u32).to_le_bytes());
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            pad32(&mut body);
            out.extend_from_slice(&block(BT_EPB, &body));
        };
        let mut f = Vec::new();
        shb(&mut f);
        idb_with(&mut f, &[]); // if0, microseconds
        idb_with(
            &mut f,
            &[
                (IF_NAME, b"pow2"),
                (IF_TSRESOL, &[0x80 | 10]),
                (IF_TSOFFSET, &100i64.to_le_bytes()),
            ],
        );
        f.extend_from_slice(&block(0x0000_0005, &[0u8; 8])); // ISB, skipped
        epb(&mut f, 0, 1_700_000_000_000_001, b"abc");
        epb(&mut f, 1, 3 * 1024 + 512, b"");
        shb(&mut f); // new section: interfaces reset
        idb_with(&mut f, &[(IF_NAME, b"second"), (IF_TSRESOL, &[12])]);
        epb(&mut f, 0, 5_000_000_000_007, b"wxyz1");
        let got = read_packets(&f).unwrap();
        let summary: Vec<(&str, i128, &[u8], Option<&str>)> = got
            .iter()
            .map(|r| {
                (
                    r.interface.as_str(),
                    r.ts_unix_ns,
                    &r.data[..],
                    r.comment.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("if0", 1_700_000_000_000_001_000, &b"abc"[..], None),
                ("pow2", 100_000_000_000 + 3_500_000_000, &b""[..], None),
                ("second", 5_000_000_000, &b"wxyz1"[..], None),
            ]
        );
        // An EPB for interface 1 of the first section is unknown in the second.
        let mut g = f.clone();
        epb(&mut g, 1, 0, b"x");
        assert!(matches!(
            read_packets(&g),
            Err(PcapngError::UnknownInterface {
                interface_id: 1,
                defined: 1,
                ..
            })
        ));
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir()
                .join(format!("swarmtrace-pcapng-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs tshark on `file` with `comment_field` first; returns (status ok, stdout, stderr).
    fn run_tshark(file: &std::path::Path, comment_field: &str) -> (bool, String, String) {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(file)
            .args([
                "-o",
                "tcp.check_checksum:TRUE",
                "-o",
                "ip.check_checksum:TRUE",
            ])
            .args(["-T", "fields", "-E", "separator=|"])
            .args([
                "-e",
                comment_field,
                "-e",
                "frame.interface_name",
                "-e",
                "ip.src",
                "-e",
                "ipv6.src",
                "-e",
                "tcp.srcport",
                "-e",
                "tcp.dstport",
                "-e",
                "tcp.flags.syn",
                "-e",
                "tcp.flags.ack",
                "-e",
                "tcp.flags.reset",
                "-e",
                "tcp.options.timestamp.tsval",
                "-e",
                "tcp.checksum.status",
                "-e",
                "ip.checksum.status",
                "-e",
                "tcp.options.mss_val",
                "-e",
                "tcp.options.wscale.shift",
            ])
            .env("LC_ALL", "C")
            .output()
            .expect("running tshark");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn tshark_available() -> bool {
        match Command::new("tshark").arg("-v").output() {
            Ok(o) => o.status.success(),
            Err(_) => false,
        }
    }

    /// A checksum status tshark calls good: 1 (PROTO_CHECKSUM_E_GOOD) or its name.
    fn is_good(status: &str) -> bool {
        status == "1" || status.eq_ignore_ascii_case("good")
    }

    fn is_true(flag: &str) -> bool {
        flag == "1" || flag.eq_ignore_ascii_case("true") || flag.eq_ignore_ascii_case("set")
    }

    #[test]
    #[ignore = "needs tshark (scripts/setup.sh installs it); `cargo xtask test` runs it as root"]
    fn tshark_reads_the_file() {
        assert!(
            tshark_available(),
            "tshark is not installed: scripts/setup.sh installs it"
        );
        let dir = TempDir::new();
        let path = dir.0.join("handshakes.pcapng");
        let packets = sample();
        std::fs::write(&path, write_all(&packets)).unwrap();

        // Wireshark < 3.6 calls the comment field pkt_comment, later ones frame.comment.
        let (mut ok, mut stdout, mut stderr) = run_tshark(&path, "frame.comment");
        if !ok && stderr.contains("frame.comment") {
            (ok, stdout, stderr) = run_tshark(&path, "pkt_comment");
        }
        assert!(ok, "tshark failed: {stderr}");
        // tshark warns about running as root; anything else is about the file.
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("Running as user"))
            .collect();
        assert!(complaints.is_empty(), "tshark complained: {complaints:?}");

        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), packets.len(), "tshark output:\n{stdout}");
        for (p, line) in packets.iter().zip(&lines) {
            let f: Vec<&str> = line.split('|').collect();
            assert_eq!(f.len(), 14, "{line}");
            assert_eq!(f[0], p.comment, "comment");
            assert_eq!(f[1], p.interface, "interface");
            match p.src.ip() {
                IpAddr::V4(a) => {
                    assert_eq!(f[2], a.to_string(), "ip.src");
                    assert_eq!(f[3], "", "ipv6.src");
                    assert!(is_good(f[11]), "ip.checksum.status {:?} in {line}", f[11]);
                }
                IpAddr::V6(a) => {
                    assert_eq!(f[2], "", "ip.src");
                    assert_eq!(f[3].parse::<Ipv6Addr>().unwrap(), a, "ipv6.src");
                }
            }
            assert_eq!(f[4], p.src.port().to_string(), "tcp.srcport");
            assert_eq!(f[5], p.dst.port().to_string(), "tcp.dstport");
            assert_eq!(is_true(f[6]), p.flags & TCP_SYN != 0, "syn in {line}");
            assert_eq!(is_true(f[7]), p.flags & TCP_ACK != 0, "ack in {line}");
            assert_eq!(is_true(f[8]), p.flags & TCP_RST != 0, "rst in {line}");
            let tsval = p.tsval.map(|v| v.to_string()).unwrap_or_default();
            assert_eq!(f[9], tsval, "tsval in {line}");
            assert!(is_good(f[10]), "tcp.checksum.status {:?} in {line}", f[10]);
            if p.flags & TCP_SYN != 0 {
                assert_eq!((f[12], f[13]), ("1460", "7"), "mss, wscale in {line}");
            }
        }
    }
}
