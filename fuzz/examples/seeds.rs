//! Writes the seed corpora of fuzz/corpus/ from the kernel fixtures of tests/fixtures/ and from
//! synthetic records built the way the kernel programs write them. The seeds are committed;
//! run this only to remake them (each file is at most 64 KiB):
//!
//!     cargo +nightly run --manifest-path fuzz/Cargo.toml --example seeds

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use swarmtrace::evidence::bundle::BundleOut;
use swarmtrace::evidence::format::{handshakes_json, Recorded, FORMAT};
use swarmtrace::evidence::pcapng::{PcapngWriter, TcpPacket, TCP_SYN};
use swarmtrace::kernel::netns::NetnsNames;
use swarmtrace::trace::drops::{Namer, Summary};
use swarmtrace::trace::event::Event;
use swarmtrace::trace::hops::HopNames;
use swarmtrace::trace::observe::HandshakeRecord;
use swarmtrace::trace::session::handshake_totals;
use swarmtrace::trace::tracer::Totals;
use swarmtrace::trace::tracker::Tracker;
use swarmtrace_common::{
    class, kind, seen, DropEvent, HandshakeEvent, HandshakeKey, Hop, PacketInfo,
};

const MAX_SEED: usize = 64 * 1024;
const KERNELS: [&str; 4] = ["linux-5.10", "linux-6.1", "linux-6.12", "linux-6.18"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn fixture(kernel: &str, name: &str) -> Vec<u8> {
    let p = root().join("../tests/fixtures").join(kernel).join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn seed(target: &str, name: &str, bytes: &[u8]) {
    assert!(
        bytes.len() <= MAX_SEED,
        "{target}/{name} is {} bytes",
        bytes.len()
    );
    let dir = root().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
    println!("corpus/{target}/{name}: {} bytes", bytes.len());
}

fn pod_bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the wire types are repr(C) plain old data with every padding byte spelled out
    // (sizes checked in swarmtrace-common), so all their bytes are initialized.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&a);
    out
}

/// An IPv4 address and port.
type Addr = ([u8; 4], u16);

fn packet(class: u8, src: Addr, dst: Addr, seq: u32, ack: u32) -> PacketInfo {
    PacketInfo {
        saddr: v4(src.0),
        daddr: v4(dst.0),
        sport: src.1,
        dport: dst.1,
        seq,
        ack_seq: ack,
        tsval: 77,
        tsecr: if class == class::SYN { 0 } else { 5 },
        family: 4,
        class,
        has_ts: 1,
        tcp_flags: match class {
            class::SYN => 0x02,
            class::SYN_ACK => 0x12,
            class::RST => 0x04,
            _ => 0x10,
        },
    }
}

struct DropSpec {
    ts_ns: u64,
    location: u64,
    netns: u32,
    ifname: &'static str,
    reason: u32,
    packet: PacketInfo,
    joined: Option<(HandshakeKey, Addr, Addr)>,
}

fn drop_record(d: &DropSpec) -> Vec<u8> {
    let mut ev = DropEvent::default();
    ev.header.kind = kind::DROP;
    ev.header.ts_ns = d.ts_ns;
    ev.location = d.location;
    ev.netns = d.netns;
    ev.ifindex = 7;
    ev.ifname[..d.ifname.len()].copy_from_slice(d.ifname.as_bytes());
    ev.reason = d.reason;
    ev.packet = d.packet;
    if let Some((key, client, service)) = d.joined {
        ev.joined = 1;
        ev.key = key;
        ev.client = v4(client.0);
        ev.client_port = client.1;
        ev.service = v4(service.0);
        ev.service_port = service.1;
    }
    pod_bytes(&ev)
}

fn handshake_record(ts_ns: u64, what: u8, hop: Hop, key: HandshakeKey, p: PacketInfo) -> Vec<u8> {
    let mut ev = HandshakeEvent::default();
    ev.header.kind = kind::HANDSHAKE;
    ev.header.ts_ns = ts_ns;
    ev.key = key;
    ev.hop = hop;
    ev.what = what;
    ev.latency_ns = if what == seen::SYN { 0 } else { 180_000 };
    ev.packet = p;
    pod_bytes(&ev)
}

const TCP_V4_RCV: u64 = 0xffff_ffff_8203_39c0;
const TCP_TIMEWAIT_STATE_PROCESS: u64 = 0xffff_ffff_8203_5820;
const NFT_DO_CHAIN: u64 = 0xffff_ffff_81f6_3250;
const INGRESS_SBOX: u32 = 4026532300;

/// The records of a small incident: one answered handshake, one whose SYN PAWS dropped in
/// TIME_WAIT behind the ingress SNAT, one netfilter dropped, one unanswered, one reset.
fn incident() -> Vec<(&'static str, Vec<u8>)> {
    let eth0 = Hop {
        netns: 0,
        ifindex: 1,
        dir: 1,
        _pad: [0; 3],
    };
    let service = ([10, 10, 0, 1], 8080);
    let task = ([10, 0, 0, 5], 8080);
    let snat = ([10, 0, 0, 2], 40001);
    let mut out = Vec::new();
    let mut t = 1_000_000_000u64;
    let client = |n: u8, isn: u32| -> (Addr, HandshakeKey) {
        (
            ([192, 168, 1, n], 40000 + u16::from(n)),
            HandshakeKey { isn, tsval: 77 },
        )
    };
    // Answered.
    let (c, k) = client(10, 1000);
    let syn = packet(class::SYN, c, service, k.isn, 0);
    out.push((
        "handshake-syn",
        handshake_record(t, seen::SYN, eth0, k, syn),
    ));
    let synack = packet(class::SYN_ACK, service, c, 5000, k.isn + 1);
    out.push((
        "handshake-synack",
        handshake_record(t + 180_000, seen::SYN_ACK, eth0, k, synack),
    ));
    // PAWS in TIME_WAIT, in the task's namespace, behind the SNAT.
    t += 10_000_000;
    let (c, k) = client(50, 2000);
    out.push((
        "handshake-syn-paws",
        handshake_record(
            t,
            seen::SYN,
            eth0,
            k,
            packet(class::SYN, c, service, k.isn, 0),
        ),
    ));
    out.push((
        "drop-v4-syn-joined-tw-paws",
        drop_record(&DropSpec {
            ts_ns: t + 50_000,
            location: TCP_TIMEWAIT_STATE_PROCESS + 0x2b1,
            netns: INGRESS_SBOX,
            ifname: "eth1",
            reason: 38,
            packet: packet(class::SYN, snat, task, k.isn, 0),
            joined: Some((k, c, service)),
        }),
    ));
    // Netfilter, not joined (not seen on a watched interface).
    t += 10_000_000;
    let (c, k) = client(51, 3000);
    out.push((
        "drop-v4-syn-netfilter",
        drop_record(&DropSpec {
            ts_ns: t,
            location: NFT_DO_CHAIN + 0x1a4,
            netns: 0,
            ifname: "eth0",
            reason: 12,
            packet: packet(class::SYN, c, service, k.isn, 0),
            joined: None,
        }),
    ));
    // No listener: the SYN gets a RST.
    t += 10_000_000;
    let (c, k) = client(52, 4000);
    out.push((
        "handshake-syn-reset",
        handshake_record(
            t,
            seen::SYN,
            eth0,
            k,
            packet(class::SYN, c, service, k.isn, 0),
        ),
    ));
    out.push((
        "handshake-rst",
        handshake_record(
            t + 90_000,
            seen::RST,
            eth0,
            k,
            packet(class::RST, service, c, 0, k.isn + 1),
        ),
    ));
    out.push((
        "drop-v4-syn-no-socket",
        drop_record(&DropSpec {
            ts_ns: t + 40_000,
            location: TCP_V4_RCV + 0x1f3,
            netns: 0,
            ifname: "eth0",
            reason: 3,
            packet: packet(class::SYN, c, service, k.isn, 0),
            joined: Some((k, c, service)),
        }),
    ));
    // Unanswered.
    t += 10_000_000;
    let (c, k) = client(53, 5000);
    out.push((
        "handshake-syn-unanswered",
        handshake_record(
            t,
            seen::SYN,
            eth0,
            k,
            packet(class::SYN, c, service, k.isn, 0),
        ),
    ));
    // A dropped SYN-ACK (reply misrouted, rp_filter) and a dropped bare ACK.
    out.push((
        "drop-v4-synack-rpfilter",
        drop_record(&DropSpec {
            ts_ns: t + 10,
            location: 0xffff_ffff_81ff_5870 + 0x3c,
            netns: INGRESS_SBOX,
            ifname: "eth0",
            reason: 16,
            packet: packet(class::SYN_ACK, service, c, 9000, k.isn + 1),
            joined: Some((k, c, service)),
        }),
    ));
    out.push((
        "drop-v4-ack-no-location",
        drop_record(&DropSpec {
            ts_ns: t + 20,
            location: 0x10,
            netns: 1,
            ifname: "",
            reason: 500,
            packet: packet(class::ACK, c, service, k.isn + 1, 9001),
            joined: None,
        }),
    ));
    out
}

fn ipv6_drop() -> Vec<u8> {
    let mut p = packet(class::SYN, ([0; 4], 40000), ([0; 4], 8080), 1000, 0);
    p.family = 6;
    p.saddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets();
    p.daddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets();
    drop_record(&DropSpec {
        ts_ns: 123,
        location: 0xffff_ffff_8211_a310 + 0x44,
        netns: INGRESS_SBOX,
        ifname: "eth0",
        reason: 3,
        packet: p,
        joined: None,
    })
}

/// A bundle made the way `capture` makes one, from the incident's records.
fn bundle_files() -> Vec<(&'static str, Vec<u8>)> {
    let clock = swarmtrace_fuzz::clock();
    let mut namer = Namer {
        reasons: swarmtrace_fuzz::reasons(),
        kallsyms: swarmtrace_fuzz::kallsyms(),
        netns: NetnsNames::with_roots(Path::new("/nonexistent"), vec![]),
        clock,
    };
    let hops = HopNames::from_entries(&[
        (0, 1, "host".into(), "eth0".into()),
        (INGRESS_SBOX, 7, "ingress_sbox".into(), "eth1".into()),
    ]);
    let mut tracker = Tracker::new(1_000_000_000);
    let mut summary = Summary::default();
    let mut totals = Totals::default();
    let mut by_reason: HashMap<u32, u64> = HashMap::new();
    let mut events: Vec<Value> = Vec::new();
    for (_, bytes) in incident() {
        match Event::try_from(bytes.as_slice()).expect("seed records decode") {
            Event::Drop(raw) => {
                totals.drops += 1;
                *by_reason.entry(raw.reason).or_default() += 1;
                let d = namer.name(raw);
                events.push(d.to_json());
                summary.add(&d);
                tracker.on_drop(&d);
            }
            Event::Handshake(s) => {
                tracker.on_sighting(&s);
            }
        }
    }
    for id in tracker.flush() {
        let h = tracker.get(&id).unwrap();
        let rec = HandshakeRecord::new(h, &hops, h.first_hop, clock.to_unix_ns(h.first_ns));
        events.push(serde_json::to_value(rec).unwrap());
    }
    totals.drops_by_reason = by_reason.into_iter().collect();
    totals.drops_by_reason.sort();
    let ctx = swarmtrace_fuzz::context();
    let verdicts = swarmtrace::verdict::verdicts(tracker.handshakes(), &ctx);
    let mut sum = summary.finish(&totals, &namer.reasons, 2.0);
    sum.handshakes = handshake_totals(&tracker);
    sum.verdicts = verdicts.iter().map(|v| v.to_json()).collect();
    events.push(serde_json::to_value(&sum).unwrap());
    let mut handshakes: Vec<_> = tracker.handshakes().cloned().collect();
    handshakes.sort_by_key(|h| h.first_ns);
    let hs = Recorded {
        handshakes,
        hops: hops.entries(),
        forgotten: 0,
        clock,
    };
    let system = json!({
        "format": FORMAT,
        "hostname": "node-1",
        "captured_at": "2026-11-27T08:01:43.123456Z",
        "kernel": {"release": "6.18.0"},
        "verdict_context": ctx,
    });
    let ndjson: String = events.iter().map(|e| format!("{e}\n")).collect();
    vec![
        ("handshakes.json", handshakes_json(&hs).unwrap()),
        ("system.json", system.to_string().into_bytes()),
        ("events.ndjson", ndjson.into_bytes()),
        (
            "handshakes.pcapng",
            swarmtrace::evidence::bundle::pcapng(&hs, &ctx).unwrap(),
        ),
    ]
}

/// `tests/tests/bundle.rs`'s `valid_bundle`: no handshakes, a summary.
fn minimal_bundle() -> Vec<(&'static str, Vec<u8>)> {
    let hs = Recorded {
        handshakes: vec![],
        hops: vec![],
        forgotten: 0,
        clock: swarmtrace_fuzz::clock(),
    };
    let system = json!({"format": FORMAT, "kernel": {"release": "6.18"}, "verdict_context": swarmtrace::verdict::Context::default()});
    vec![
        ("handshakes.json", handshakes_json(&hs).unwrap()),
        ("system.json", system.to_string().into_bytes()),
        (
            "events.ndjson",
            b"{\"type\":\"summary\",\"drops\":0,\"handshakes\":{},\"verdicts\":[]}\n".to_vec(),
        ),
    ]
}

/// The bundle_load input: the files joined by NUL, in the target's order.
fn joined(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    files
        .iter()
        .map(|(_, b)| b.as_slice())
        .collect::<Vec<_>>()
        .join(&0u8)
}

fn tarball(files: &[(&'static str, Vec<u8>)]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("swarmtrace-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node-1.tar.gz");
    let out = BundleOut::prepare(&path).unwrap();
    for (name, bytes) in files {
        out.write(name, bytes).unwrap();
    }
    out.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    bytes
}

fn pcapng_ipv6() -> Vec<u8> {
    let mut w = PcapngWriter::new(Vec::new(), "swarmtrace seeds").unwrap();
    w.write(&TcpPacket {
        ts_unix_ns: 1_795_766_503_123_456_789,
        src: "[fd00::2]:40000".parse().unwrap(),
        dst: "[fd00::1]:8080".parse().unwrap(),
        seq: 1000,
        ack: 0,
        flags: TCP_SYN,
        tsval: None,
        tsecr: None,
        comment: String::new(),
        interface: "ingress_sbox:eth0".into(),
    })
    .unwrap();
    w.finish().unwrap()
}

// ---- BTF: a small, valid blob cut out of a real kernel's ----

const BTF_HDR: usize = 24;

struct RawBtf {
    data: Vec<u8>,
    /// (start, end) of each type record with its trailing data; index 0 is id 1.
    types: Vec<(usize, usize)>,
    str_start: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn kind_of(info: u32) -> u32 {
    (info >> 24) & 0x1f
}

/// Bytes after the 12-byte record, per kind (include/uapi/linux/btf.h).
fn extra(kind: u32, vlen: usize) -> usize {
    match kind {
        1 | 14 | 17 => 4,
        3 => 12,
        4 | 5 | 15 | 19 => 12 * vlen,
        6 | 13 => 8 * vlen,
        _ => 0,
    }
}

impl RawBtf {
    fn new(data: Vec<u8>) -> Self {
        let hdr = u32_at(&data, 4) as usize;
        let type_start = hdr + u32_at(&data, 8) as usize;
        let type_end = type_start + u32_at(&data, 12) as usize;
        let str_start = hdr + u32_at(&data, 16) as usize;
        let mut types = Vec::new();
        let mut pos = type_start;
        while pos < type_end {
            let info = u32_at(&data, pos + 4);
            let end = pos + 12 + extra(kind_of(info), (info & 0xffff) as usize);
            types.push((pos, end));
            pos = end;
        }
        Self {
            data,
            types,
            str_start,
        }
    }

    fn rec(&self, id: u32) -> &[u8] {
        let (s, e) = self.types[id as usize - 1];
        &self.data[s..e]
    }

    fn name(&self, name_off: u32) -> &str {
        let s = &self.data[self.str_start + name_off as usize..];
        std::str::from_utf8(&s[..s.iter().position(|&b| b == 0).unwrap()]).unwrap()
    }

    fn find(&self, kind: u32, name: &str) -> u32 {
        (1..=self.types.len() as u32)
            .find(|&id| {
                let r = self.rec(id);
                let info = u32_at(r, 4);
                kind_of(info) == kind && info & 0xffff != 0 && self.name(u32_at(r, 0)) == name
            })
            .unwrap_or_else(|| panic!("no {name} of kind {kind}"))
    }
}

/// Strings of the new blob: "\0" first, each name once.
struct Strings {
    bytes: Vec<u8>,
    at: HashMap<String, u32>,
}

impl Strings {
    fn new() -> Self {
        Self {
            bytes: vec![0],
            at: HashMap::new(),
        }
    }

    fn add(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&o) = self.at.get(s) {
            return o;
        }
        let o = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.at.insert(s.to_owned(), o);
        o
    }
}

fn btf_blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; BTF_HDR];
    out[0..2].copy_from_slice(&0xeb9fu16.to_le_bytes());
    out[2] = 1;
    put_u32(&mut out, 4, BTF_HDR as u32);
    put_u32(&mut out, 8, 0);
    put_u32(&mut out, 12, types.len() as u32);
    put_u32(&mut out, 16, types.len() as u32);
    put_u32(&mut out, 20, strings.len() as u32);
    out.extend_from_slice(types);
    out.extend_from_slice(strings);
    out
}

/// The structs and enum swarmtrace reads, with only the members on the paths it follows
/// (and the anonymous ones around them); pointers point at void. Offsets and sizes are the
/// kernel's, so `KernelFacts::from_parts` accepts the blob.
fn btf_subset(raw: &RawBtf, kernel: &str) -> Vec<u8> {
    const WANTED: [&str; 13] = [
        "dev",
        "head",
        "network_header",
        "sk",
        "ifindex",
        "name",
        "nd_net",
        "net",
        "ns",
        "inum",
        "__sk_common",
        "skc_net",
        "SKB_CONSUMED",
    ];
    let mut roots = vec![];
    for s in ["sk_buff", "net_device", "net", "sock"] {
        roots.push(raw.find(4, s));
    }
    if kernel != "linux-5.10" {
        roots.push(raw.find(6, "skb_drop_reason"));
    }
    // Old id -> new id, in discovery order.
    let mut ids: HashMap<u32, u32> = HashMap::new();
    let mut order: Vec<u32> = Vec::new();
    let mut queue = roots;
    let keep_member =
        |raw: &RawBtf, name_off: u32| name_off == 0 || WANTED.contains(&raw.name(name_off));
    while let Some(id) = queue.pop() {
        if id == 0 || ids.contains_key(&id) {
            continue;
        }
        ids.insert(id, order.len() as u32 + 1);
        order.push(id);
        let r = raw.rec(id);
        let info = u32_at(r, 4);
        let vlen = (info & 0xffff) as usize;
        match kind_of(info) {
            8 | 9 | 10 | 11 | 18 => queue.push(u32_at(r, 8)),
            3 => queue.extend([u32_at(r, 12), u32_at(r, 16)]),
            4 | 5 => {
                for m in 0..vlen {
                    let at = 12 + 12 * m;
                    if keep_member(raw, u32_at(r, at)) {
                        queue.push(u32_at(r, at + 4));
                    }
                }
            }
            _ => {}
        }
    }
    let mut strings = Strings::new();
    let mut types = Vec::new();
    for &id in &order {
        let r = raw.rec(id);
        let info = u32_at(r, 4);
        let kind = kind_of(info);
        let vlen = (info & 0xffff) as usize;
        let mut rec = r[..12].to_vec();
        put_u32(&mut rec, 0, strings.add(raw.name(u32_at(r, 0))));
        match kind {
            2 => put_u32(&mut rec, 8, 0),
            8 | 9 | 10 | 11 | 18 => put_u32(&mut rec, 8, ids[&u32_at(r, 8)]),
            _ => {}
        }
        let mut tail = Vec::new();
        match kind {
            1 => tail.extend_from_slice(&r[12..16]),
            3 => {
                tail.extend_from_slice(&r[12..24]);
                put_u32(&mut tail, 0, ids[&u32_at(r, 12)]);
                put_u32(&mut tail, 4, ids[&u32_at(r, 16)]);
            }
            4 | 5 => {
                let mut kept = 0u32;
                for m in 0..vlen {
                    let at = 12 + 12 * m;
                    if !keep_member(raw, u32_at(r, at)) {
                        continue;
                    }
                    let mut mem = r[at..at + 12].to_vec();
                    put_u32(&mut mem, 0, strings.add(raw.name(u32_at(r, at))));
                    put_u32(&mut mem, 4, ids[&u32_at(r, at + 4)]);
                    tail.extend_from_slice(&mem);
                    kept += 1;
                }
                put_u32(&mut rec, 4, (info & !0xffff) | kept);
            }
            6 => {
                // The enum keeps a few names, SKB_CONSUMED and the ones the verdicts use.
                let mut kept = 0u32;
                for m in 0..vlen {
                    let at = 12 + 8 * m;
                    let name = raw.name(u32_at(r, at));
                    if m < 8 || name.ends_with("PAWS") || name == "SKB_CONSUMED" {
                        let mut e = r[at..at + 8].to_vec();
                        put_u32(&mut e, 0, strings.add(name));
                        tail.extend_from_slice(&e);
                        kept += 1;
                    }
                }
                put_u32(&mut rec, 4, (info & !0xffff) | kept);
            }
            _ => {}
        }
        types.extend_from_slice(&rec);
        types.extend_from_slice(&tail);
    }
    btf_blob(&types, &strings.bytes)
}

/// The first types of a real blob that fit in `budget` bytes, with their names: every kind
/// the kernel uses; references past the cut dangle (the parser must say so, not panic).
fn btf_head(raw: &RawBtf, budget: usize) -> Vec<u8> {
    let mut strings = Strings::new();
    let mut types = Vec::new();
    for id in 1..=raw.types.len() as u32 {
        let r = raw.rec(id);
        if types.len() + r.len() + strings.bytes.len() + BTF_HDR + 512 > budget {
            break;
        }
        let info = u32_at(r, 4);
        let vlen = (info & 0xffff) as usize;
        let mut rec = r.to_vec();
        put_u32(&mut rec, 0, strings.add(raw.name(u32_at(r, 0))));
        let named = match kind_of(info) {
            4 | 5 | 19 => Some(12),
            6 | 13 => Some(8),
            _ => None,
        };
        if let Some(per) = named {
            for m in 0..vlen {
                let at = 12 + per * m;
                put_u32(&mut rec, at, strings.add(raw.name(u32_at(r, at))));
            }
        }
        types.extend_from_slice(&rec);
    }
    btf_blob(&types, &strings.bytes)
}

fn main() {
    for k in KERNELS {
        let v = k.trim_start_matches("linux-");
        seed(
            "tracefs_format",
            &format!("{v}.format"),
            &fixture(k, "kfree_skb.format"),
        );
        let mut counters = fixture(k, "netstat");
        counters.extend(fixture(k, "snmp"));
        seed("netstat", &format!("{v}.netstat-snmp"), &counters);
        seed(
            "kallsyms",
            &format!("{v}.kallsyms"),
            &fixture(k, "kallsyms.excerpt"),
        );
        let gz_bytes = fixture(k, "vmlinux.btf.gz");
        let mut gz = flate2::read::GzDecoder::new(gz_bytes.as_slice());
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut gz, &mut raw).unwrap();
        let raw = RawBtf::new(raw);
        let subset = btf_subset(&raw, k);
        // The subset must be what swarmtrace accepts from a real kernel.
        let btf = swarmtrace::kernel::btf::Btf::parse(&subset).unwrap();
        btf.field("sk_buff", "dev").unwrap();
        btf.field("sock", "__sk_common.skc_net.net").unwrap();
        seed("btf", &format!("{v}.subset.btf"), &subset);
        if k == "linux-6.18" {
            swarmtrace::kernel::KernelFacts::from_parts(
                "6.18".into(),
                swarmtrace_fuzz::kfree_skb_format(),
                &btf,
            )
            .unwrap();
            let head = btf_head(&raw, 16 * 1024);
            swarmtrace::kernel::btf::Btf::parse(&head).unwrap();
            seed("btf", &format!("{v}.head16k.btf"), &head);
            seed("btf", &format!("{v}.first64k.btf"), &raw.data[..MAX_SEED]);
        }
    }
    for (name, bytes) in incident() {
        seed("event_decode", &format!("{name}.bin"), &bytes);
    }
    seed("event_decode", "drop-v6-syn.bin", &ipv6_drop());
    let rich = bundle_files();
    seed("bundle_load", "incident.bundle", &joined(&rich));
    seed("bundle_load", "minimal.bundle", &joined(&minimal_bundle()));
    seed("bundle_load", "incident.tar.gz", &tarball(&rich));
    // A bundle of each format version, as `capture` wrote it (tests/fixtures/bundles/).
    for version in ["v1", "v2"] {
        let name = format!("{version}-paws.tar.gz");
        let fixture = root().join("../tests/fixtures/bundles").join(&name);
        seed("bundle_load", &name, &std::fs::read(fixture).unwrap());
    }
    seed("pcapng_read", "incident.pcapng", &rich[3].1);
    seed("pcapng_read", "ipv6-no-comment.pcapng", &pcapng_ipv6());
}
