//! TC classifiers on the watched interfaces: record each SYN as first seen, mark it answered
//! by its SYN-ACK or reset by a RST. They never change a packet's fate: every path returns
//! TC_ACT_UNSPEC, which lets the packet continue to the next filter (TCX_NEXT under TCX).

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC, helpers::bpf_ktime_get_ns, macros::classifier, programs::TcContext,
};
use swarmtrace_common::{
    class, kind, seen, since_t16, stat, state, t16, HandshakeEvent, HandshakeKey, Hop,
};

use crate::{
    config::{count, global, keep_detail, output, scratch, STATS},
    handshake::{lookup, record_syn, slot_of},
    kmem::read,
    packet::{matches, parse_ip, Parse, Skb, Source},
    stage::stop,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_UDP: u8 = 17;
/// Outer UDP (8) + VXLAN (8) + inner Ethernet (14) after the outer IPv4 header.
const VXLAN_INNER_L3: usize = 8 + 8 + ETH_HLEN;
const DIR_INGRESS: u8 = 1;
const DIR_EGRESS: u8 = 2;

#[classifier]
pub fn swarmtrace_in(ctx: TcContext) -> i32 {
    let _ = observe(&ctx, DIR_INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn swarmtrace_out(ctx: TcContext) -> i32 {
    let _ = observe(&ctx, DIR_EGRESS);
    TC_ACT_UNSPEC
}

/// The namespace of the device the packet is on. The context pointer is the kernel's
/// `struct sk_buff` at run time; reading through it needs the privileges we load with.
///
/// Three reads (about 40 ns each here, BENCHMARKS.md): not cached, because neither a
/// `net_device` nor a `struct net` address names a namespace for good (Docker frees and
/// makes namespaces all day, and a new one can reuse a freed one's memory).
#[inline(always)]
fn netns_of(ctx: &TcContext) -> u32 {
    let skb = ctx.skb.skb as u64;
    let dev: u64 = read(skb + global!(OFFSETS.skb_dev) as u64).unwrap_or(0);
    if dev == 0 {
        return 0;
    }
    let net: u64 = read(dev + global!(OFFSETS.dev_nd_net) as u64).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    read(net + global!(OFFSETS.net_inum) as u64).unwrap_or(0)
}

/// True when the packet is certainly neither a SYN nor a RST (most of a stream: data and
/// ACKs, or not TCP at all), read with direct packet access: no helper call, no map lookup.
/// False means "look closer" (a SYN or RST, IPv6 extension headers, IP options the linear
/// area does not hold, ...): the full parse below decides, so nothing is missed.
#[inline(always)]
fn surely_uninteresting(ctx: &TcContext) -> bool {
    const IPPROTO_TCP: u8 = 6;
    const TCP_SYN_OR_RST: u8 = 0x02 | 0x04;
    let data = ctx.data();
    let end = ctx.data_end();
    // Every call below is at a constant offset proven inside the linear data first.
    let at = |off: usize| -> u8 {
        // SAFETY: `data + off < data_end` was checked by the caller for every `off` used (the
        // verifier checks it too and refuses the program otherwise); packet bytes are u8.
        unsafe { *((data + off) as *const u8) }
    };
    if data + ETH_HLEN > end {
        return false;
    }
    let proto = u16::from_be_bytes([at(12), at(13)]);
    let tcp = match proto {
        ETH_P_IP => {
            // The IPv4 header without options + TCP up to its flags.
            if data + ETH_HLEN + 20 + 14 > end {
                return false;
            }
            let vihl = at(ETH_HLEN);
            if vihl >> 4 != 4 {
                return false;
            }
            if at(ETH_HLEN + 9) == IPPROTO_UDP {
                // A VXLAN datagram may carry a SYN (the full parse looks inside); any other
                // UDP is not ours.
                return vihl & 0x0f != 5
                    || u16::from_be_bytes([at(ETH_HLEN + 22), at(ETH_HLEN + 23)])
                        != global!(FILTER.vxlan_port);
            }
            if at(ETH_HLEN + 9) != IPPROTO_TCP {
                return true;
            }
            // A later fragment holds no TCP header: the full parse says so.
            if (u16::from_be_bytes([at(ETH_HLEN + 6), at(ETH_HLEN + 7)]) & 0x1fff) != 0 {
                return false;
            }
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl != 20 {
                // IP options: rare; the full parse reads them.
                return false;
            }
            ETH_HLEN + 20
        }
        ETH_P_IPV6 => {
            if data + ETH_HLEN + 40 + 14 > end {
                return false;
            }
            match at(ETH_HLEN + 6) {
                IPPROTO_TCP => ETH_HLEN + 40,
                // Hop-by-hop, routing, fragment, destination options: the full parse walks
                // them.
                0 | 43 | 44 | 60 => return false,
                _ => return true,
            }
        }
        // VLAN-tagged: the full parse finds the inner header.
        ETH_P_8021Q => return false,
        // ARP and the rest: not IP.
        _ => return true,
    };
    at(tcp + 13) & TCP_SYN_OR_RST == 0
}

#[inline(always)]
fn observe(ctx: &TcContext, dir: u8) -> Result<(), ()> {
    if surely_uninteresting(ctx) || stop(1) {
        return Ok(());
    }
    let eth = Skb { ctx, l3: 0 };
    let mut proto: u16 = u16::from_be(eth.read_hdr::<u16>(12)?);
    let mut l3 = ETH_HLEN;
    if proto == ETH_P_8021Q {
        proto = u16::from_be(eth.read_hdr::<u16>(16)?);
        l3 += 4;
    }
    if proto != ETH_P_IP && proto != ETH_P_IPV6 {
        return Ok(());
    }
    // A VXLAN datagram leaving: the packet it carries is parsed instead (one parse below, at
    // a variable offset, so the parser is inlined once), and only a known SYN counts.
    let vtep = if proto == ETH_P_IP && dir == DIR_EGRESS {
        vxlan_inner(ctx, l3)
    } else {
        None
    };
    if let Some((inner, _, _)) = vtep {
        l3 = inner;
    }
    let s = scratch()?;
    let (ev, slot, head) = (&mut s.handshake, &mut s.tc_slot, &mut s.tc_head);
    let src = Skb { ctx, l3 };
    let head = if src.read_head(head) {
        Some(&*head)
    } else {
        None
    };
    match parse_ip(&src, head, &mut ev.packet) {
        Parse::Handshake => {}
        Parse::Other => return Ok(()),
        Parse::Unreadable => {
            count(&STATS, stat::TC_UNREADABLE);
            return Ok(());
        }
    }
    let p = &ev.packet;
    if p.class == class::ACK || (vtep.is_some() && p.class != class::SYN) || stop(2) {
        return Ok(());
    }
    // The packet's slot is most likely not in the cache: ask for it now, so that the wait
    // overlaps the namespace's reads below.
    let Some(at) = slot_of(p) else {
        return Ok(());
    };
    at.touch();
    let hop = Hop {
        netns: netns_of(ctx),
        // SAFETY: `ctx.skb.skb` is the program's `__sk_buff` context, valid for the run; the
        // verifier rewrites this read of `ifindex` into the kernel's own field access.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        dir,
        _pad: [0; 3],
    };
    // SAFETY: bpf_ktime_get_ns takes nothing and cannot fail.
    let now = unsafe { bpf_ktime_get_ns() };
    if stop(3) {
        return Ok(());
    }

    if p.class == class::SYN {
        let key = HandshakeKey {
            isn: p.seq,
            tsval: if p.has_ts != 0 { p.tsval } else { 0 },
        };
        if let Some((_, local, remote)) = vtep {
            // Only a SYN already known (seen on its way in): its last hop becomes this one,
            // and one event says which node it was sent to.
            if record_syn(key, at, hop, slot, |_| false) == Some(false)
                && keep_detail(key.isn, now, stat::TC_SAMPLED_OUT)
            {
                ev.packet.family = 4;
                ev.packet.saddr = [0; 16];
                ev.packet.daddr = [0; 16];
                ev.packet.saddr[..4].copy_from_slice(&local);
                ev.packet.daddr[..4].copy_from_slice(&remote);
                emit(ctx, ev, key, hop, seen::OVERLAY, 0, now);
            }
            return Ok(());
        }
        let made = record_syn(key, at, hop, slot, |hs| {
            if !matches(p.family, &p.saddr, p.sport, &p.daddr, p.dport) {
                return false;
            }
            hs.first_t16 = t16(now);
            hs.client = p.saddr;
            hs.service = p.daddr;
            hs.client_port = p.sport;
            hs.service_port = p.dport;
            hs.family = p.family;
            hs.state = 0;
            hs._pad = 0;
            true
        });
        if made != Some(true) {
            return Ok(());
        }
        count(&STATS, stat::SYNS);
        if stop(4) {
            return Ok(());
        }
        if keep_detail(key.isn, now, stat::TC_SAMPLED_OUT) && !stop(5) {
            emit(ctx, ev, key, hop, seen::SYN, 0, now);
        }
        return Ok(());
    }

    // A SYN-ACK or a RST: an answer to a SYN we may know.
    let Some(found) = lookup(p, at, slot) else {
        return Ok(());
    };
    // Best effort (see `handshake`): two answers racing on two CPUs may both pass.
    if found.hs.state & (state::ANSWERED | state::RESET) != 0 {
        return Ok(());
    }
    let (bit, what, stat_slot) = if p.class == class::SYN_ACK {
        (state::ANSWERED, seen::SYN_ACK, stat::ANSWERED)
    } else {
        (state::RESET, seen::RST, stat::RESETS)
    };
    found.mark(bit);
    count(&STATS, stat_slot);
    let key = found.key;
    if !keep_detail(key.isn, now, stat::TC_SAMPLED_OUT) {
        return Ok(());
    }
    emit(
        ctx,
        ev,
        key,
        hop,
        what,
        since_t16(found.hs.first_t16, now),
        now,
    );
    Ok(())
}

/// When the packet at `l3` is an IPv4 VXLAN datagram (UDP to `FILTER.vxlan_port`, no IP
/// options, not a fragment) carrying an IPv4 or IPv6 frame: the offset of the inner network
/// header, and the outer source and destination addresses (the two nodes).
#[inline(always)]
fn vxlan_inner(ctx: &TcContext, l3: usize) -> Option<(usize, [u8; 4], [u8; 4])> {
    let eth = Skb { ctx, l3: 0 };
    let hdr: [u8; 24] = eth.read_hdr(l3).ok()?;
    if hdr[0] != 0x45 || hdr[9] != IPPROTO_UDP {
        return None;
    }
    if (u16::from_be_bytes([hdr[6], hdr[7]]) & 0x3fff) != 0 {
        return None;
    }
    if u16::from_be_bytes([hdr[22], hdr[23]]) != global!(FILTER.vxlan_port) {
        return None;
    }
    let inner = l3 + 20 + VXLAN_INNER_L3;
    let ethertype = u16::from_be(eth.read_hdr::<u16>(inner - 2).ok()?);
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return None;
    }
    Some((
        inner,
        [hdr[12], hdr[13], hdr[14], hdr[15]],
        [hdr[16], hdr[17], hdr[18], hdr[19]],
    ))
}

#[inline(always)]
fn emit(
    ctx: &TcContext,
    ev: &mut HandshakeEvent,
    key: HandshakeKey,
    hop: Hop,
    what: u8,
    latency_ns: u32,
    now: u64,
) {
    ev.header.kind = kind::HANDSHAKE;
    ev.header.ts_ns = now;
    ev.key = key;
    ev.hop = hop;
    ev.what = what;
    ev.latency_ns = latency_ns;
    output(ctx, ev);
}
