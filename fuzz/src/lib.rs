//! What the fuzz targets share: the kernel facts of a real kernel (the 6.18 fixtures of
//! `tests/fixtures/`, embedded at build time and parsed once per process) and the helpers
//! that drive a decoded event or a loaded bundle through the code that renders and judges it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::OnceLock;

use serde_json::Value;
use swarmtrace::kernel::btf::Btf;
use swarmtrace::kernel::kallsyms::Kallsyms;
use swarmtrace::kernel::tracefs::TracepointFormat;
use swarmtrace::kernel::DropReasons;
use swarmtrace::verdict::{Context, LocalSubnet};

const FORMAT_6_18: &str = include_str!("../../tests/fixtures/linux-6.18/kfree_skb.format");
const KALLSYMS_6_18: &str = include_str!("../../tests/fixtures/linux-6.18/kallsyms.excerpt");
const BTF_6_18_GZ: &[u8] = include_bytes!("../../tests/fixtures/linux-6.18/vmlinux.btf.gz");

/// The `skb:kfree_skb` tracepoint description of Linux 6.18.
pub fn kfree_skb_format() -> &'static TracepointFormat {
    static F: OnceLock<TracepointFormat> = OnceLock::new();
    F.get_or_init(|| TracepointFormat::parse(FORMAT_6_18).expect("6.18 fixture parses"))
}

/// The raw (decompressed) vmlinux BTF of Linux 6.18.
pub fn btf_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(BTF_6_18_GZ)
        .read_to_end(&mut out)
        .expect("6.18 BTF fixture decompresses");
    out
}

/// The vmlinux BTF of Linux 6.18, parsed.
pub fn btf() -> &'static Btf {
    static B: OnceLock<Btf> = OnceLock::new();
    B.get_or_init(|| Btf::parse(&btf_bytes()).expect("6.18 BTF fixture parses"))
}

/// Code symbols around the drop locations of Linux 6.18.
pub fn kallsyms() -> Kallsyms {
    Kallsyms::parse(KALLSYMS_6_18)
}

/// Drop-reason names of Linux 6.18, from its tracepoint.
pub fn reasons() -> DropReasons {
    DropReasons::from_names(kfree_skb_format().symbols("reason"))
}

/// A verdict context that reaches every branch: counters that rose in two namespaces, a
/// Docker subnet that overlaps a client network, and the interface SYNs came in on.
pub fn context() -> Context {
    let net = |s: &str| swarmtrace::net::parse_cidr(s).expect("valid CIDR");
    let mut rises = BTreeMap::new();
    for (ns, counters) in [
        (
            "host",
            &[("TcpExt.PAWSPassive", 3u64), ("TcpExt.ListenOverflows", 1)][..],
        ),
        (
            "ingress_sbox",
            &[("TcpExt.IPReversePathFilter", 2), ("TcpExt.ListenDrops", 4)][..],
        ),
    ] {
        rises.insert(
            ns.to_owned(),
            counters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        );
    }
    Context {
        counter_rises: rises,
        subnets: vec![
            LocalSubnet {
                netns: "host".into(),
                ifname: "docker_gwbridge".into(),
                net: net("10.0.0.0/8"),
            },
            LocalSubnet {
                netns: "ingress_sbox".into(),
                ifname: "eth0".into(),
                net: net("fd00::/64"),
            },
        ],
        kernel_release: "6.18.0".into(),
        has_tw_paws_reason: true,
        ingress_ifaces: BTreeSet::from([("host".to_owned(), "eth0".to_owned())]),
        // Drops no event showed: the verdicts count them by reason.
        unseen_drops: [
            ("NETFILTER_DROP".to_owned(), 3),
            ("NO_SOCKET".to_owned(), 2),
        ]
        .into(),
        // ingress_sbox's conntrack table full, so conntrack-full is explored too.
        conntrack_fill: [("ingress_sbox".to_owned(), (262_144, 262_144))].into(),
        // IPVS in ingress_sbox without a backend for 8080's mark (ipvs-no-backend), and a
        // DROP rule that rose in the host (named by netfilter-drop).
        netfilter: [
            (
                "ingress_sbox".to_owned(),
                swarmtrace::verdict::NetfilterView {
                    ipvs: [(0x100, vec![]), (0x101, vec![("10.0.0.7:0".to_owned(), 1)])].into(),
                    ipvs_no_backend: [0x100].into(),
                    port_marks: [(8080, 0x100), (8081, 0x101)].into(),
                    rules_rose: Some(vec![]),
                    // 8081's backend 10.0.0.8 draining (ipvs-misdirected).
                    draining_at_start: [(0x101, ["10.0.0.8".parse().unwrap()].into())].into(),
                    draining_at_end: [(0x101, ["10.0.0.8".parse().unwrap()].into())].into(),
                    conn_reuse_mode: Some(0),
                expire_nodest_conn: Some(0),
                },
            ),
            (
                "host".to_owned(),
                swarmtrace::verdict::NetfilterView {
                    rules_rose: Some(vec![("-t filter -A INPUT -j DROP".to_owned(), 1)]),
                    ..Default::default()
                },
            ),
        ]
        .into(),
        // A swarm on another data-path port: the overlay texts name it.
        vxlan_port: 7789,
        // SYNs sent into the overlay towards another node (overlay-unreachable).
        overlay_paths: vec![swarmtrace::verdict::OverlayPath {
            local: "192.168.200.1".parse().unwrap(),
            remote: "192.168.200.2".parse().unwrap(),
            netns: "host".into(),
            ifname: "eth0".into(),
        }],
        // Docker's view of two ports, so the causes it names are explored too.
        published: [(8080, 2), (8081, 0)]
            .into_iter()
            .map(|(port, running)| swarmtrace::verdict::PublishedService {
                service: format!("svc{port}"),
                port,
                mode: "ingress".into(),
                running: Some(running),
                desired: Some(2),
            })
            .collect(),
        host_answered: BTreeSet::new(),
    }
}

/// Checks that what swarmtrace writes as `handshakes.pcapng` reads back: the writer and the
/// reader are the same module, so a file one makes that the other rejects is a bug.
pub fn pcapng_round_trip(hs: &swarmtrace::evidence::format::Recorded, ctx: &Context) {
    // The writer refuses timestamps outside 1970..2554 (an error, not a bug).
    if let Ok(bytes) = swarmtrace::evidence::bundle::pcapng(hs, ctx) {
        if let Err(e) = swarmtrace::evidence::pcapng::read_packets(&bytes) {
            panic!("swarmtrace cannot read back its own pcapng: {e}");
        }
    }
}

/// Renders a JSON value the way the outputs do (forces every string and number through).
pub fn render(v: &Value) -> usize {
    v.to_string().len()
}

/// A fixed wall clock (2026-11-27, as in the clock tests), so that a run is reproducible.
pub fn clock() -> swarmtrace::clock::WallClock {
    serde_json::from_value(serde_json::json!({ "offset_ns": 1_795_766_400_000_000_000i64 }))
        .expect("WallClock deserializes")
}
