//! What every drop hook shares: decode the dropped packet, keep it if it is a TCP
//! handshake packet the user asked about, join it to its handshake, count it exactly and
//! send the event.

use aya_ebpf::{helpers::bpf_ktime_get_ns, EbpfContext};
use swarmtrace_common::{
    kind, stat, DropEvent, HandshakeKey, DEV_WINDOW, MAX_REASONS, SKB_HDR_WINDOW,
};

use crate::{
    config::{count, global, keep_detail, output, scratch, DROP_REASONS, STATS},
    handshake::{isn_of, lookup, slot_of},
    kmem::{read, read_buf},
    packet::{matches, parse_ip, Kernel, Parse, HEAD},
    stage::stop,
};

/// Reports the drop of `skb` with `reason`. `site` gives the drop's location and the
/// receiving socket when the hook knows it (0 otherwise); it is called only for a packet that
/// is kept, so the many drops that are not handshake packets cost no read for them.
#[inline(always)]
pub fn report_drop<C: EbpfContext>(
    ctx: &C,
    skb: u64,
    reason: u32,
    site: impl FnOnce() -> (u64, u64),
) -> Result<(), ()> {
    if stop(1) {
        return Ok(());
    }
    let (head, nh) = head_and_network_header(skb)?;
    // 0xffff: the network header was never set (not an IP packet yet).
    if nh == 0xffff || head == 0 || stop(2) {
        return Ok(());
    }
    let mut src = Kernel {
        base: head + nh as u64,
    };
    // One read decides for most drops: an IPv4 packet that is neither TCP nor VXLAN (UDP to
    // `FILTER.vxlan_port`) is not ours. A VXLAN datagram (an overlay's, dropped before it was
    // decapsulated): the packet it carries is parsed instead, at a variable offset (one parse,
    // inlined once).
    let s = scratch()?;
    let (ev, slot, head, dev) = (
        &mut s.drop,
        &mut s.drop_slot,
        &mut s.drop_head,
        &mut s.drop_dev,
    );
    // The same read holds the whole of an IPv4 handshake packet's headers (`HEAD`).
    read_buf(src.base, head)?;
    let vxlan = vxlan_inner(&src, head);
    if vxlan.is_none() && head[0] >> 4 == 4 && head[9] != IPPROTO_TCP {
        return Ok(());
    }
    ev.vxlan_from = [0; 4];
    if let Some((inner, from)) = vxlan {
        src.base = inner;
        ev.vxlan_from = from;
        read_buf(inner, head)?;
    }
    if stop(3) {
        return Ok(());
    }
    match parse_ip(&src, Some(head), &mut ev.packet) {
        Parse::Handshake => {}
        Parse::Other => return Ok(()),
        Parse::Unreadable => {
            count(&STATS, stat::UNREADABLE);
            return Ok(());
        }
    }
    let p = &ev.packet;
    if stop(4) {
        return Ok(());
    }
    // Joined to a handshake first seen on a watched interface, the drop is charged to the
    // client and service as first seen, and filtered on them.
    match slot_of(p).and_then(|at| lookup(p, at, slot)) {
        Some(found) => {
            let (key, hs) = (found.key, found.hs);
            if !matches(
                hs.family,
                &hs.client,
                hs.client_port,
                &hs.service,
                hs.service_port,
            ) {
                return Ok(());
            }
            ev.joined = 1;
            ev.key = key;
            ev.client = hs.client;
            ev.service = hs.service;
            ev.client_port = hs.client_port;
            ev.service_port = hs.service_port;
            count(&STATS, stat::JOINED_DROPS);
        }
        None => {
            if !matches(p.family, &p.saddr, p.sport, &p.daddr, p.dport) {
                return Ok(());
            }
            ev.joined = 0;
            ev.key = HandshakeKey::default();
            ev.client = [0; 16];
            ev.service = [0; 16];
            ev.client_port = 0;
            ev.service_port = 0;
        }
    }
    if stop(5) {
        return Ok(());
    }
    count(&STATS, stat::DROPS);
    count(
        &DROP_REASONS,
        if reason < MAX_REASONS {
            reason
        } else {
            MAX_REASONS - 1
        },
    );
    // SAFETY: bpf_ktime_get_ns takes nothing and cannot fail.
    let now = unsafe { bpf_ktime_get_ns() };
    // The handshake's ISN, so that a sampled handshake keeps all its events.
    let isn = if ev.joined != 0 {
        ev.key.isn
    } else {
        isn_of(p).unwrap_or(0)
    };
    if !keep_detail(isn, now, stat::DROPS_SAMPLED_OUT) || stop(6) {
        return Ok(());
    }
    let (location, rx_sk) = site();
    ev.header.kind = kind::DROP;
    ev.header.ts_ns = now;
    ev.location = location;
    ev.reason = reason;
    read_device(skb, rx_sk, ev, dev);
    output(ctx, &*ev);
    Ok(())
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;

/// When the packet, whose first bytes are `hdr`, is an IPv4 VXLAN datagram (UDP to
/// `FILTER.vxlan_port`, no IP options, not a fragment) carrying an IPv4 or IPv6 frame: the
/// address of the inner network header, and the outer source address.
#[inline(always)]
fn vxlan_inner(src: &Kernel, hdr: &[u8; HEAD]) -> Option<(u64, [u8; 4])> {
    if hdr[0] != 0x45 || hdr[9] != 17 || (u16::from_be_bytes([hdr[6], hdr[7]]) & 0x3fff) != 0 {
        return None;
    }
    if u16::from_be_bytes([hdr[22], hdr[23]]) != global!(FILTER.vxlan_port) {
        return None;
    }
    // Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
    let inner = src.base + 50;
    let ethertype = u16::from_be(read::<u16>(inner - 2).ok()?);
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return None;
    }
    Some((inner, [hdr[12], hdr[13], hdr[14], hdr[15]]))
}

/// `skb->head` and `skb->network_header`: one read of the window that holds both when user
/// space found one (they are 12-16 bytes apart in the kernels we know), else two.
#[inline(always)]
fn head_and_network_header(skb: u64) -> Result<(u64, u16), ()> {
    let start = global!(OFFSETS.skb_hdr_window);
    if start == u32::MAX {
        let head: u64 = read(skb + global!(OFFSETS.skb_head) as u64)?;
        let nh: u16 = read(skb + global!(OFFSETS.skb_network_header) as u64)?;
        return Ok((head, nh));
    }
    let w: [u64; WINDOW_WORDS] = read(skb + start as u64)?;
    // Constants to the verifier (frozen globals), in bounds and aligned: user space checked.
    let head = w
        .get(((global!(OFFSETS.skb_head) - start) / 8) as usize)
        .copied()
        .ok_or(())?;
    let nh_at = global!(OFFSETS.skb_network_header) - start;
    let word = w.get((nh_at / 8) as usize).copied().ok_or(())?;
    let nh = (word >> ((nh_at % 8) * 8)) as u16;
    Ok((head, nh))
}

const WINDOW_WORDS: usize = (SKB_HDR_WINDOW / 8) as usize;

/// Interface and network namespace: from the packet's device, else from its socket (a packet
/// being sent may have no device yet), else from the hook's receiving socket. `window` is
/// scratch space for the device's fields.
#[inline(always)]
fn read_device(skb: u64, rx_sk: u64, ev: &mut DropEvent, window: &mut [u8; DEV_WINDOW as usize]) {
    let dev: u64 = read(skb + global!(OFFSETS.skb_dev) as u64).unwrap_or(0);
    let mut net: u64 = 0;
    ev.ifindex = 0;
    ev.ifname = [0; 16];
    ev.netns = 0;
    if dev != 0 {
        net = device_fields(dev, ev, window);
    }
    if net == 0 {
        let mut sk: u64 = read(skb + global!(OFFSETS.skb_sk) as u64).unwrap_or(0);
        if sk == 0 {
            sk = rx_sk;
        }
        if sk != 0 {
            net = read(sk + global!(OFFSETS.sk_net) as u64).unwrap_or(0);
        }
    }
    if net != 0 {
        ev.netns = read(net + global!(OFFSETS.net_inum) as u64).unwrap_or(0);
    }
}

/// The device's `ifindex` and `name` into `ev` (left zero where unreadable), and its `nd_net`
/// (0 if unreadable): one read of the window that holds them when user space found one (and
/// one more for `nd_net` when it lies outside), else a read each.
#[inline(always)]
fn device_fields(dev: u64, ev: &mut DropEvent, window: &mut [u8; DEV_WINDOW as usize]) -> u64 {
    let (ifindex, name, nd_net) = (
        global!(OFFSETS.dev_ifindex),
        global!(OFFSETS.dev_name),
        global!(OFFSETS.dev_nd_net),
    );
    let start = global!(OFFSETS.dev_window);
    if start == u32::MAX {
        ev.ifindex = read(dev + ifindex as u64).unwrap_or(0);
        if read_buf(dev + name as u64, &mut ev.ifname).is_err() {
            ev.ifname = [0; 16];
        }
        return read(dev + nd_net as u64).unwrap_or(0);
    }
    // Constants to the verifier (frozen globals), inside the window: user space checked.
    let len = global!(OFFSETS.dev_window_len);
    let Some(w) = window.get_mut(..len as usize) else {
        return 0;
    };
    if read_buf(dev + start as u64, w).is_err() {
        return 0;
    }
    let field = |off: u32, n: usize| {
        let i = off.wrapping_sub(start) as usize;
        w.get(i..i + n)
    };
    if let Some(b) = field(ifindex, 4) {
        ev.ifindex = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    }
    if let Some(b) = field(name, 16) {
        ev.ifname.copy_from_slice(b);
    }
    // Outside the window (before it too: the offset from its start wraps): a read of its own.
    match field(nd_net, 8) {
        Some(b) => u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        None => read(dev + nd_net as u64).unwrap_or(0),
    }
}
