//! Privileged end-to-end tests of drop capture: real namespaces, real kernel drops, observed
//! through `swarmtrace run --json`. Run as root (`sudo cargo xtask test`); skipped otherwise.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use swarmtrace::lab::{addr, traffic, veth, Netns};
use swarmtrace_tests::{drop_tcp_port, ns_name, require_privileged, test_port, Tracer};

/// A client namespace and a server namespace joined by a veth, IPv4 and IPv6.
struct Pair {
    client: Netns,
    server: Netns,
}

const CLIENT4: &str = "10.201.0.2";
const SERVER4: &str = "10.201.0.1";
const CLIENT6: &str = "fd20::2";
const SERVER6: &str = "fd20::1";

fn pair(tag: &str) -> Pair {
    let client = Netns::create(&ns_name(&format!("{tag}c"))).unwrap();
    let server = Netns::create(&ns_name(&format!("{tag}s"))).unwrap();
    veth(&client, "eth0", &server, "eth0").unwrap();
    addr(&client, "eth0", &format!("{CLIENT4}/24")).unwrap();
    addr(&server, "eth0", &format!("{SERVER4}/24")).unwrap();
    addr(&client, "eth0", &format!("{CLIENT6}/64")).unwrap();
    addr(&server, "eth0", &format!("{SERVER6}/64")).unwrap();
    Pair { client, server }
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    format!(
        "{}:{port}",
        if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        }
    )
    .parse()
    .unwrap()
}

fn is_drop_from(v: &Value, src: &SocketAddr) -> bool {
    v["type"] == "drop" && v["src"] == src.to_string()
}

fn closed_port(tag: &str, client_ip: &'static str, server_ip: &'static str, location: &str) {
    closed_port_env(tag, client_ip, server_ip, location, &[]);
}

fn closed_port_env(
    tag: &str,
    client_ip: &'static str,
    server_ip: &'static str,
    location: &str,
    env: &[(&str, &str)],
) {
    let p = pair(tag);
    let asked = env.iter().any(|(k, _)| *k == "SWARMTRACE_GENERAL_PATHS");
    // The general paths: asked by this test, or for the whole run by hand (the tracer inherits
    // the environment).
    let general = asked || std::env::var_os("SWARMTRACE_GENERAL_PATHS").is_some();
    let port = test_port(match (client_ip.contains(':'), asked) {
        (false, false) => 1,
        (true, _) => 2,
        (false, true) => 6,
    });
    let tracer = Tracer::start_env(&["--port", &port.to_string()], env).unwrap();
    let (local, outcome) = p
        .client
        .run(move || {
            traffic::connect(
                sock(client_ip, 0),
                sock(server_ip, port),
                Duration::from_secs(3),
            )
        })
        .unwrap();
    assert_eq!(outcome, traffic::Outcome::Refused);
    let mut seen = Vec::new();
    assert!(
        tracer.wait_for(&mut seen, Duration::from_secs(5), |v| is_drop_from(
            v, &local
        )),
        "no drop event for {local}; got {seen:?}; stderr: {}",
        tracer.stderr()
    );
    let out = tracer.stop(seen).unwrap();
    let d = out.iter().find(|v| is_drop_from(v, &local)).unwrap();
    assert_eq!(d["packet"], "SYN", "{d}");
    assert_eq!(d["reason"], "NO_SOCKET", "{d}");
    assert_eq!(d["dst"], sock(server_ip, port).to_string(), "{d}");
    assert!(d["location"].as_str().unwrap().starts_with(location), "{d}");
    assert_eq!(d["netns"], p.server.inode().unwrap(), "{d}");
    assert_eq!(d["netns_name"], p.server.name(), "{d}");
    assert_eq!(d["ifname"], "eth0", "{d}");
    // Linux clients send timestamps by default.
    assert!(d["tsval"].is_u64(), "{d}");
    assert!(d["isn"].is_u64(), "{d}");
    let summary = out.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert!(
        summary["drops_by_reason"]["NO_SOCKET"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert_eq!(summary["lost_events"], 0);
    // Which program saw it: the raw tracepoint (every kernel swarmtrace supports has it),
    // or the classic one on the general path.
    let hook = if general {
        "tracepoint (general path)"
    } else {
        "raw_tracepoint"
    };
    assert_eq!(summary["kfree_skb_hook"], hook, "{summary}");
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn closed_port_ipv4_is_no_socket() {
    require_privileged("closed_port_ipv4_is_no_socket");
    closed_port("a", CLIENT4, SERVER4, "tcp_v4_rcv");
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn closed_port_ipv6_is_no_socket() {
    require_privileged("closed_port_ipv6_is_no_socket");
    closed_port("b", CLIENT6, SERVER6, "tcp_v6_rcv");
}

/// The drop program reads the tracepoint record with plain loads where it knows the
/// record's layout; where it does not (a kernel newer than the program) it reads field by
/// field at the offsets of the format file. Both must name the same drop.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn closed_port_on_the_general_path_is_no_socket() {
    require_privileged("closed_port_on_the_general_path_is_no_socket");
    closed_port_env(
        "cg",
        CLIENT4,
        SERVER4,
        "tcp_v4_rcv",
        &[("SWARMTRACE_GENERAL_PATHS", "1")],
    );
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn drop_rule_is_netfilter_drop() {
    require_privileged("drop_rule_is_netfilter_drop");
    let p = pair("n");
    let port = test_port(3);
    drop_tcp_port(&p.server, port).unwrap();
    let tracer = Tracer::start(&["--port", &port.to_string()]).unwrap();
    let (local, outcome) = p
        .client
        .run(move || {
            traffic::connect(
                sock(CLIENT4, 0),
                sock(SERVER4, port),
                Duration::from_millis(1500),
            )
        })
        .unwrap();
    assert_eq!(outcome, traffic::Outcome::TimedOut);
    let mut seen = Vec::new();
    assert!(
        tracer.wait_for(&mut seen, Duration::from_secs(5), |v| is_drop_from(
            v, &local
        )),
        "no drop event for {local}; got {seen:?}; stderr: {}",
        tracer.stderr()
    );
    let out = tracer.stop(seen).unwrap();
    let drops: Vec<&Value> = out.iter().filter(|v| is_drop_from(v, &local)).collect();
    for d in &drops {
        assert_eq!(d["reason"], "NETFILTER_DROP", "{d}");
        assert_eq!(d["packet"], "SYN", "{d}");
        assert!(
            d["location"].as_str().unwrap().starts_with("nft_do_chain"),
            "{d}"
        );
        assert_eq!(d["netns_name"], p.server.name(), "{d}");
    }
    // The retransmitted SYN is the same handshake: same ISN and, here, within 1.5 s, 1 or 2 SYNs.
    assert!(
        drops.iter().all(|d| d["isn"] == drops[0]["isn"]),
        "{drops:?}"
    );
    let summary = out.last().unwrap();
    assert_eq!(
        summary["drops_by_reason"]["NETFILTER_DROP"]
            .as_u64()
            .unwrap(),
        drops.len() as u64,
        "{summary}"
    );
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn healthy_handshake_has_no_drop() {
    require_privileged("healthy_handshake_has_no_drop");
    let p = pair("h");
    let port = test_port(4);
    let listener = p
        .server
        .run(move || std::net::TcpListener::bind(sock(SERVER4, port)))
        .unwrap()
        .unwrap();
    let server = p.server.spawn(move || traffic::serve(listener, 3)).unwrap();
    let tracer = Tracer::start(&["--port", &port.to_string()]).unwrap();
    for _ in 0..3 {
        let (_, answer) = p
            .client
            .run(move || {
                traffic::request(
                    sock(CLIENT4, 0),
                    sock(SERVER4, port),
                    Duration::from_secs(3),
                )
            })
            .unwrap()
            .unwrap();
        assert_eq!(answer, "ok\n");
    }
    assert_eq!(server.join().unwrap().unwrap().unwrap(), 3);
    // A drop would be reported within milliseconds; give it a generous second.
    let mut seen = Vec::new();
    let got = tracer.wait_for(&mut seen, Duration::from_secs(1), |v| v["type"] == "drop");
    let out = tracer.stop(seen).unwrap();
    assert!(!got, "unexpected drop events: {out:?}");
    let summary = out.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["drops"], 0, "{summary}");
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn client_filter_keeps_only_its_network() {
    require_privileged("client_filter_keeps_only_its_network");
    let p = pair("f");
    let port = test_port(5);
    // The kernel programs are verified with the filter's values (read-only data): a filter
    // that makes them too complex for the verifier fails here.
    for (cidr, expect) in [
        ("10.201.0.0/24", true),
        ("192.0.2.0/24", false),
        ("fd20::/64", false),
    ] {
        let tracer = Tracer::start(&["--port", &port.to_string(), "--client", cidr]).unwrap();
        let (local, outcome) = p
            .client
            .run(move || {
                traffic::connect(
                    sock(CLIENT4, 0),
                    sock(SERVER4, port),
                    Duration::from_secs(3),
                )
            })
            .unwrap();
        assert_eq!(outcome, traffic::Outcome::Refused);
        let mut seen = Vec::new();
        let got = tracer.wait_for(
            &mut seen,
            Duration::from_secs(if expect { 5 } else { 1 }),
            |v| is_drop_from(v, &local),
        );
        let out = tracer.stop(seen).unwrap();
        assert_eq!(got, expect, "--client {cidr}: {out:?}");
        let drops = out.last().unwrap()["drops"].as_u64().unwrap();
        assert_eq!(
            drops > 0,
            expect,
            "--client {cidr}: exact counters follow the filter"
        );
    }
}

/// SYNs whose TCP options are laid out as different stacks lay them out, crafted on a raw
/// socket: the kernel programs decode Linux's layout from one read and walk any other, and
/// both must find the same timestamp (or none). Each SYN goes to a closed port of the server
/// (freed as NO_SOCKET there), whose eth0 is watched: the classifier's key (`tsvals` of the
/// handshake) and the drop hook's parse (`tsval` of the drop) are both checked.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn every_option_layout_gives_the_same_timestamp() {
    require_privileged("every_option_layout_gives_the_same_timestamp");
    let p = pair("o");
    let port = test_port(7);
    const TS: [u8; 10] = [8, 10, 0, 0, 0, 0, 0, 0, 0, 0];
    // (name, options without the timestamp's values, where the timestamp starts or None)
    let layouts: [(&str, Vec<u8>, Option<usize>); 7] = [
        // Linux: MSS, SACK_PERM, TS, NOP, WS.
        (
            "linux",
            [&[2, 4, 5, 180, 4, 2][..], &TS, &[1, 3, 3, 7]].concat(),
            Some(6),
        ),
        // Linux with SACK off: MSS, NOP, NOP, TS, NOP, WS.
        (
            "linux-nosack",
            [&[2, 4, 5, 180, 1, 1][..], &TS, &[1, 3, 3, 7]].concat(),
            Some(6),
        ),
        // macOS: MSS, NOP, WS, NOP, NOP, TS, SACK_PERM, EOL, EOL.
        (
            "macos",
            [&[2, 4, 5, 180, 1, 3, 3, 6, 1, 1][..], &TS, &[4, 2, 0, 0]].concat(),
            Some(10),
        ),
        // Timestamp first: NOP, NOP, TS, MSS, NOP, WS.
        (
            "ts-first",
            [&[1, 1][..], &TS, &[2, 4, 5, 180, 1, 3, 3, 7]].concat(),
            Some(2),
        ),
        // Windows: MSS, NOP, WS, NOP, NOP, SACK_PERM: no timestamp.
        ("windows", vec![2, 4, 5, 180, 1, 3, 3, 8, 1, 1, 4, 2], None),
        // Linux's prefix, but at the timestamp's place an option 8 of length 9 (not a
        // timestamp: the walk steps over it), then NOPs.
        (
            "near-linux",
            vec![2, 4, 5, 180, 4, 2, 8, 9, 7, 7, 7, 7, 7, 7, 7, 1, 1, 1, 1, 1],
            None,
        ),
        // A timestamp after a malformed SACK_PERM of length 3, where the walk finds it.
        (
            "odd-step",
            [&[2, 4, 5, 180, 4, 3, 1][..], &TS, &[1, 1, 1]].concat(),
            Some(7),
        ),
    ];
    let tracer = Tracer::start(&[
        "--port",
        &port.to_string(),
        "--iface",
        &format!("{}:eth0", p.server.name()),
    ])
    .unwrap();
    let mut sent = Vec::new();
    for (i, (name, opts, ts_at)) in layouts.iter().enumerate() {
        let sport = 41000 + i as u16;
        let tsval = 0x5157_0000 + i as u32 * 0x101;
        let isn = 0x1234_0000 + i as u32;
        let mut opts = opts.clone();
        while opts.len() % 4 != 0 {
            opts.push(0);
        }
        if let Some(at) = ts_at {
            opts[at + 2..at + 6].copy_from_slice(&tsval.to_be_bytes());
        }
        let mut seg = vec![0u8; 20];
        seg[0..2].copy_from_slice(&sport.to_be_bytes());
        seg[2..4].copy_from_slice(&port.to_be_bytes());
        seg[4..8].copy_from_slice(&isn.to_be_bytes());
        seg[12] = ((20 + opts.len()) as u8 / 4) << 4;
        seg[13] = 0x02;
        seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
        seg.extend_from_slice(&opts);
        let (src, dst) = (
            CLIENT4.parse().unwrap(),
            SERVER4.parse::<std::net::Ipv4Addr>().unwrap(),
        );
        let sum = swarmtrace::net::tcp_checksum_v4(src, dst, &seg);
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
        p.client
            .run(move || -> std::io::Result<()> {
                use socket2::{Domain, Protocol, SockAddr, Socket, Type};
                let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP))?;
                s.bind(&SockAddr::from(sock(CLIENT4, 0)))?;
                s.send_to(&seg, &SockAddr::from(sock(SERVER4, 0)))?;
                Ok(())
            })
            .unwrap()
            .unwrap();
        sent.push((name, sock(CLIENT4, sport), isn, ts_at.map(|_| tsval)));
    }
    let mut seen = Vec::new();
    let last = sent.last().unwrap().1;
    tracer.wait_for(&mut seen, Duration::from_secs(5), |v| {
        is_drop_from(v, &last)
    });
    let out = tracer.stop(seen).unwrap();
    for (name, client, isn, tsval) in &sent {
        let d = out
            .iter()
            .find(|v| is_drop_from(v, client))
            .unwrap_or_else(|| panic!("{name}: no drop of {client}: {out:?}"));
        assert_eq!(d["reason"], "NO_SOCKET", "{name}: {d}");
        assert_eq!(d["isn"], *isn, "{name}: {d}");
        assert_eq!(
            d["tsval"].as_u64(),
            tsval.map(u64::from),
            "{name}: the drop's {d}"
        );
        let h = out
            .iter()
            .find(|v| v["type"] == "handshake" && v["client"] == client.to_string())
            .unwrap_or_else(|| panic!("{name}: no handshake of {client}: {out:?}"));
        assert_eq!(
            h["tsvals"],
            serde_json::json!([tsval.unwrap_or(0)]),
            "{name}: the classifier's key, {h}"
        );
    }
}
