//! User-space cost per event: decoding ring-buffer records, naming drops and aggregating them
//! (handshake tracker and drop summary), on one core. Run with `cargo bench -p swarmtrace
//! --bench decode` (or `cargo xtask bench`, which records the figures in BENCHMARKS.md).
//!
//! The records are built as the kernel writes them (`swarmtrace_common` wire types): for each
//! handshake, the SYN sighting of the classifier and the joined drop of that SYN (the flood's
//! event mix). 200 000 distinct handshakes are cycled, twice the tracker's capacity, so the
//! steady state includes eviction, as under a long flood.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use swarmtrace::clock::WallClock;
use swarmtrace::kernel::kallsyms::Kallsyms;
use swarmtrace::kernel::netns::NetnsNames;
use swarmtrace::kernel::DropReasons;
use swarmtrace::present::output::Output;
use swarmtrace::trace::drops::{Drop, Namer, Summary};
use swarmtrace::trace::event::Event;
use swarmtrace::trace::hops::HopNames;
use swarmtrace::trace::observe::{HandshakeRecord, Observer};
use swarmtrace::trace::tracker::{DropNote, Handshake, Tracker};
use swarmtrace_common::{class, kind, seen, DropEvent, HandshakeEvent, HandshakeKey, Hop};

const HANDSHAKES: usize = 200_000;
/// Where the synthetic drops happen: `nft_do_chain+0x1a2` in a kallsyms-like table.
const NFT_DO_CHAIN: u64 = 0xffff_ffff_81a0_0000;

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: the wire types are repr(C) plain old data without padding (checked at compile
    // time in swarmtrace-common).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

/// The SYN sighting and the joined drop of handshake `i`, as the kernel writes them.
fn records(i: usize, netns: u32) -> (Vec<u8>, Vec<u8>) {
    let isn = 0x1000_0000u32.wrapping_add(i as u32 * 7919);
    let tsval = 5_000_000 + i as u32;
    let sport = 1024 + (i % 60_000) as u16;
    let key = HandshakeKey { isn, tsval };
    let client = [10, 10, 0, 200];
    let published = [10, 10, 0, 1];
    let ts = 1_000_000_000 + i as u64 * 1000;

    let mut hs = HandshakeEvent::default();
    hs.header.kind = kind::HANDSHAKE;
    hs.header.ts_ns = ts;
    hs.key = key;
    hs.hop = Hop {
        netns,
        ifindex: 3,
        dir: 1,
        _pad: [0; 3],
    };
    hs.what = seen::SYN;
    hs.packet.family = 4;
    hs.packet.class = class::SYN;
    hs.packet.saddr[..4].copy_from_slice(&client);
    hs.packet.daddr[..4].copy_from_slice(&published);
    hs.packet.sport = sport;
    hs.packet.dport = 8080;
    hs.packet.seq = isn;
    hs.packet.has_ts = 1;
    hs.packet.tsval = tsval;
    hs.packet.tcp_flags = 0x02;

    let mut d = DropEvent::default();
    d.header.kind = kind::DROP;
    d.header.ts_ns = ts + 20_000;
    d.location = NFT_DO_CHAIN + 0x1a2;
    d.netns = netns;
    d.ifindex = 3;
    d.ifname[..4].copy_from_slice(b"eth0");
    d.reason = 6;
    d.packet = hs.packet;
    // After DNAT: the destination is ingress_sbox's address on docker_gwbridge.
    d.packet.daddr = [0; 16];
    d.packet.daddr[..4].copy_from_slice(&[172, 18, 0, 2]);
    d.packet.dport = 80;
    d.key = key;
    d.client[..4].copy_from_slice(&client);
    d.service[..4].copy_from_slice(&published);
    d.client_port = sport;
    d.service_port = 8080;
    d.joined = 1;
    (bytes_of(&hs), bytes_of(&d))
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn kallsyms() -> Kallsyms {
    // The running kernel's table when readable (its size sets the lookup cost), else one of a
    // similar size.
    if let Ok(k) = Kallsyms::read(Path::new("/proc/kallsyms")) {
        if k.lookup(NFT_DO_CHAIN + 0x1a2).is_some() && k.len() > 10_000 {
            return k;
        }
    }
    let mut text = String::new();
    for i in 0..150_000u64 {
        text.push_str(&format!(
            "{:x} T sym_{i}\n",
            NFT_DO_CHAIN - 0x10_0000 + i * 64
        ));
    }
    Kallsyms::parse(&text)
}

fn bench(c: &mut Criterion) {
    let names = NetnsNames::live();
    let host = names.host_inode().unwrap_or(4026531840);
    let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..HANDSHAKES).map(|i| records(i, host)).collect();
    let mut reasons = BTreeMap::new();
    reasons.insert(6, "NETFILTER_DROP".to_owned());
    reasons.insert(2, "NO_SOCKET".to_owned());
    let mut namer = Namer {
        reasons: DropReasons::from_names(reasons),
        kallsyms: kallsyms(),
        netns: names,
        clock: WallClock::sample(),
    };

    let mut g = c.benchmark_group("events");
    // Two events per handshake: the SYN sighting and the drop.
    g.throughput(Throughput::Elements(2));
    g.bench_function("decode", |b| {
        let mut i = 0;
        b.iter(|| {
            let (s, d) = &recs[i % HANDSHAKES];
            i += 1;
            black_box(Event::try_from(black_box(s.as_slice())).ok());
            black_box(Event::try_from(black_box(d.as_slice())).ok());
        })
    });
    g.sample_size(20);
    g.bench_function("decode_name_aggregate", |b| {
        b.iter_custom(|iters| {
            // A fresh tracker per sample, warmed past its capacity so eviction is included.
            let mut tracker = Tracker::new(1_000_000_000);
            let mut summary = Summary::default();
            let mut i = 0usize;
            let mut one = |i: usize, tracker: &mut Tracker, summary: &mut Summary| {
                let (s, d) = &recs[i % HANDSHAKES];
                if let Ok(Event::Handshake(s)) = Event::try_from(s.as_slice()) {
                    black_box(tracker.on_sighting(&s));
                }
                if let Ok(Event::Drop(raw)) = Event::try_from(d.as_slice()) {
                    let d = namer.name(raw);
                    summary.add(&d);
                    black_box(tracker.on_drop(&d));
                }
            };
            while tracker.len() < swarmtrace::trace::tracker::MAX_HANDSHAKES {
                one(i, &mut tracker, &mut summary);
                i += 1;
            }
            // This thread's CPU time, not the wall clock: "on one core" is what it costs, and
            // on a machine shared with other work the wall clock measures the others too.
            let start = thread_cpu();
            for _ in 0..iters {
                one(i, &mut tracker, &mut summary);
                i += 1;
            }
            let took = thread_cpu().saturating_sub(start);
            black_box(&summary);
            took
        })
    });
    g.finish();

    // One NDJSON line per named drop and per reported handshake (`swarmtrace run --json`), the
    // other per-event cost of a run. The sink discards the bytes, not the formatting.
    let mut g = c.benchmark_group("ndjson");
    g.throughput(Throughput::Elements(1));
    let drops: Vec<Drop> = recs
        .iter()
        .take(1000)
        .filter_map(|(_, d)| match Event::try_from(d.as_slice()) {
            Ok(Event::Drop(raw)) => Some(namer.name(raw)),
            _ => None,
        })
        .collect();
    let mut sink = std::io::sink();
    let mut out = Output::new(&mut sink, true);
    g.bench_function("drop", |b| {
        let mut i = 0;
        b.iter(|| {
            out.on_drop(black_box(&drops[i % drops.len()])).unwrap();
            i += 1;
        })
    });
    let hops = HopNames::from_entries(&[(4026531840, 3, "host".into(), "eth0".into())]);
    let hop = Hop {
        netns: 4026531840,
        ifindex: 3,
        dir: 1,
        _pad: [0; 3],
    };
    let handshakes: Vec<Handshake> = drops
        .iter()
        .map(|d| {
            let j = d.joined.expect("the drops are joined");
            Handshake {
                client: j.client,
                service: j.service,
                isn: d.packet.seq,
                first_ns: d.ts_ns,
                syns: 1,
                keys: vec![],
                first_hop: Some(hop),
                answer: None,
                drops: vec![DropNote::from(d)],
                reported: false,
                overflow: Default::default(),
                overlay: None,
            }
        })
        .collect();
    g.bench_function("handshake", |b| {
        let mut i = 0;
        b.iter(|| {
            let h = &handshakes[i % handshakes.len()];
            let rec =
                HandshakeRecord::new(black_box(h), &hops, Some(hop), 1_700_000_000_000_000_000);
            out.on_handshake(&rec).unwrap();
            i += 1;
        })
    });
    // The way lines were made before (through a `serde_json::Value`), for comparison.
    let mut sink = std::io::sink();
    g.bench_function("drop_via_value", |b| {
        let mut i = 0;
        b.iter(|| {
            let d = black_box(&drops[i % drops.len()]);
            writeln!(sink, "{}", d.to_json()).unwrap();
            i += 1;
        })
    });
    g.bench_function("handshake_via_value", |b| {
        let mut i = 0;
        b.iter(|| {
            let h = black_box(&handshakes[i % handshakes.len()]);
            let rec = HandshakeRecord::new(h, &hops, Some(hop), 1_700_000_000_000_000_000);
            let v = serde_json::to_value(rec).unwrap();
            writeln!(sink, "{v}").unwrap();
            i += 1;
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
