use crate::name::Name;

use serde_json::{json, Value};
use swarmtrace_common::{HandshakeKey, Hop};

use super::*;
use crate::trace::event::{Packet, PacketKind};
use crate::trace::tracker::{Answer, DropNote, Handshake};

fn hop(ifindex: u32, dir: u8) -> Hop {
    Hop {
        netns: 4026532174,
        ifindex,
        dir,
        _pad: [0; 3],
    }
}

/// One answered handshake and one whose SYN was dropped, as the tracker holds them.
fn recorded() -> Recorded {
    let syn = Packet {
        kind: PacketKind::Syn,
        src: "10.0.0.2:40000".parse().unwrap(),
        dst: "10.0.0.5:80".parse().unwrap(),
        seq: 2346420372,
        ack: 0,
        tsval: Some(3242308762),
        tsecr: Some(0),
        flags: 2,
    };
    let answered = Handshake {
        client: "10.10.0.11:40000".parse().unwrap(),
        service: "10.10.0.1:8080".parse().unwrap(),
        isn: 3582801664,
        first_ns: 16343193546986,
        syns: 1,
        keys: vec![HandshakeKey {
            isn: 3582801664,
            tsval: 3242408763,
        }],
        first_hop: Some(hop(2, 1)),
        answer: Some(Answer::SynAck {
            latency_ns: 123413,
            hop: hop(3, 2),
        }),
        drops: vec![],
        reported: true,
        overflow: Default::default(),
        overlay: None,
    };
    let dropped = Handshake {
        client: "10.10.0.12:40000".parse().unwrap(),
        isn: 2346420372,
        first_ns: 16343234525322,
        keys: vec![HandshakeKey {
            isn: 2346420372,
            tsval: 3242308762,
        }],
        first_hop: Some(hop(2, 0)),
        answer: Some(Answer::Reset { hop: hop(3, 1) }),
        drops: vec![DropNote {
            ts_ns: 16343234609658,
            kind: PacketKind::Syn,
            reason: Name::from("TCP_RFC7323_TW_PAWS"),
            location: Name::from("tcp_v4_rcv+0x99"),
            netns: 4026532304,
            netns_name: Some(Name::from("task1")),
            ifname: None,
            packet: syn,
            vxlan_from: None,
        }],
        ..answered.clone()
    };
    Recorded {
        handshakes: vec![answered, dropped],
        hops: vec![(4026532174, 2, "host".into(), "eth0".into())],
        forgotten: 7,
        clock: WallClock::from_offset_ns(1796339728777729459),
    }
}

fn read(bytes: &[u8]) -> Result<(Version, Recorded), String> {
    read_handshakes(&mut serde_json::Deserializer::from_slice(bytes)).map_err(|e| e.to_string())
}

/// The current format's JSON of what was recorded: equal for equal contents.
fn as_v2(r: &Recorded) -> Value {
    serde_json::from_slice(&handshakes_json(r).unwrap()).unwrap()
}

#[test]
fn version_2_round_trips_what_the_tracker_held() {
    let r = recorded();
    let bytes = handshakes_json(&r).unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(
        text.starts_with("{\"format\":\"swarmtrace-bundle/2\","),
        "{text}"
    );
    let (version, back) = read(&bytes).unwrap();
    assert_eq!(version, Version::V2);
    assert_eq!(as_v2(&back), as_v2(&r));
    assert_eq!(back.clock.offset_ns(), r.clock.offset_ns());
    assert_eq!(back.forgotten, 7);
    assert_eq!(back.hops, r.hops);
    let (a, b) = (&back.handshakes[1], &r.handshakes[1]);
    assert_eq!(
        (a.answer, &a.drops, a.first_hop),
        (b.answer, &b.drops, b.first_hop)
    );
    assert_eq!(a.outcome(), b.outcome());
}

/// A node's two views of an overlay blocked between nodes: here a SYN sent into the
/// overlay towards the task's node and never answered; there a SYN dropped inside a VXLAN
/// datagram from this node.
fn overlay_recorded() -> Recorded {
    let mut r = recorded();
    let mut sent = r.handshakes[0].clone();
    sent.answer = None;
    sent.overlay = Some(crate::trace::tracker::OverlaySend {
        local: "192.168.200.1".parse().unwrap(),
        remote: "192.168.200.2".parse().unwrap(),
        hop: hop(2, 2),
    });
    let mut blocked = r.handshakes[1].clone();
    blocked.answer = None;
    for d in &mut blocked.drops {
        d.reason = Name::from("NETFILTER_DROP");
        d.vxlan_from = Some("192.168.200.1".parse().unwrap());
    }
    r.handshakes = vec![sent, blocked];
    r
}

// The live run named both handshakes `overlay-unreachable` (circumstantial on the sending
// node, confirmed on the task's node): so must a report of its bundle.
#[test]
fn version_2_keeps_what_the_overlay_verdicts_need() {
    let r = overlay_recorded();
    let (_, back) = read(&handshakes_json(&r).unwrap()).unwrap();
    assert_eq!(back.handshakes[0].overlay, r.handshakes[0].overlay);
    assert_eq!(
        back.handshakes[1].drops[0].vxlan_from,
        r.handshakes[1].drops[0].vxlan_from
    );
    let ctx = verdict::Context::default();
    let causes = |r: &Recorded| {
        r.handshakes
            .iter()
            .map(|h| verdict::assess(h, &ctx))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        causes(&back),
        causes(&r),
        "a report of the bundle must name what the live run named"
    );
    assert!(causes(&r)
        .iter()
        .all(|c| c.is_some_and(|(c, _)| c == verdict::Cause::OverlayUnreachable)));
    // An older bundle without the fields reads as before.
    let v = as_v2(&recorded());
    let text = v.to_string();
    assert!(
        !text.contains("overlay") && !text.contains("vxlan_from"),
        "{text}"
    );
}

#[test]
fn version_2_is_not_the_in_memory_layout() {
    let v = as_v2(&recorded());
    let text = v.to_string();
    for internal in ["_pad", "reported", "SynAck", "\"Syn\""] {
        assert!(!text.contains(internal), "{internal} in {text}");
    }
    let h = &v["handshakes"][0];
    assert_eq!(
        h["first_hop"],
        json!({"netns": 4026532174u32, "ifindex": 2, "dir": "ingress"})
    );
    assert_eq!(h["answer"]["kind"], "syn-ack");
    assert_eq!(h["answer"]["hop"]["dir"], "egress");
    assert_eq!(v["handshakes"][1]["first_hop"]["dir"], "unknown");
    assert_eq!(v["handshakes"][1]["answer"]["kind"], "reset");
    assert_eq!(v["handshakes"][1]["drops"][0]["packet"]["kind"], "SYN");
    assert_eq!(
        v["hops"][0],
        json!({"netns": 4026532174u32, "ifindex": 2, "namespace": "host", "interface": "eth0"})
    );
}

#[test]
fn version_2_optional_fields_may_be_absent() {
    let text = r#"{"format":"swarmtrace-bundle/2","handshakes":[{"client":"10.0.0.1:1","service":"10.0.0.2:80","isn":5,"first_ns":9}],"clock":{"offset_ns":0}}"#;
    let (_, r) = read(text.as_bytes()).unwrap();
    let h = &r.handshakes[0];
    assert!(h.keys.is_empty() && h.drops.is_empty() && h.answer.is_none());
    assert_eq!(h.outcome(), crate::trace::tracker::Outcome::Unanswered);
    assert!(r.hops.is_empty());
}

/// A `handshakes.json` as version 1 wrote it (from tests/fixtures/bundles/v1-paws.tar.gz).
const V1: &str = r#"{"format":"swarmtrace-bundle/1","handshakes":[{"client":"10.10.0.12:40000","service":"10.10.0.1:8080","isn":2346420372,"first_ns":16343234525322,"syns":1,"keys":[{"isn":2346420372,"tsval":3242308762}],"first_hop":{"netns":4026532174,"ifindex":2,"dir":1,"_pad":[0,0,0]},"answer":{"SynAck":{"latency_ns":5,"hop":{"netns":4026532174,"ifindex":3,"dir":2,"_pad":[0,0,0]}}},"drops":[{"ts_ns":16343234609658,"kind":"Syn","reason":"TCP_RFC7323_TW_PAWS","location":"tcp_v4_rcv+0x99","netns":4026532304,"netns_name":"st2516fx-task1","ifname":"eth0","packet":{"kind":"Syn","src":"10.0.0.2:40000","dst":"10.0.0.5:80","seq":2346420372,"ack":0,"tsval":3242308762,"tsecr":0,"flags":2}}],"reported":false}],"hops":[[4026532174,2,"st2516fx-host","eth0"]],"forgotten":0,"clock":{"offset_ns":1796339728777729459}}"#;

#[test]
fn version_1_reads_as_the_tracker_held_it() {
    let (version, r) = read(V1.as_bytes()).unwrap();
    assert_eq!(version, Version::V1);
    let h = &r.handshakes[0];
    assert_eq!(h.first_hop, Some(hop(2, 1)));
    assert_eq!(
        h.answer,
        Some(Answer::SynAck {
            latency_ns: 5,
            hop: hop(3, 2)
        })
    );
    let d = &h.drops[0];
    assert_eq!((d.kind, d.packet.kind), (PacketKind::Syn, PacketKind::Syn));
    assert_eq!(&*d.reason, "TCP_RFC7323_TW_PAWS");
    assert_eq!(d.ifname.as_deref(), Some("eth0"));
    assert_eq!(d.packet.tsecr, Some(0));
    // A dropped SYN whose retransmission was answered.
    assert_eq!(h.outcome(), crate::trace::tracker::Outcome::Answered);
    assert_eq!(r.hops[0].2, "st2516fx-host");
    assert_eq!(r.clock.offset_ns(), 1796339728777729459);
}

#[test]
fn a_foreign_or_untagged_file_is_refused() {
    let e = read(br#"{"format":"swarmtrace-bundle/9","handshakes":[]}"#).unwrap_err();
    assert!(
        e.contains(
            "`swarmtrace-bundle/9`, expected `swarmtrace-bundle/1` or `swarmtrace-bundle/2`"
        ),
        "{e}"
    );
    let e = read(br#"{"format":"\u001b[2Jx","handshakes":[]}"#).unwrap_err();
    assert!(!e.contains('\x1b'), "{e}");
    let e = read(br#"{"handshakes":[],"format":"swarmtrace-bundle/2"}"#).unwrap_err();
    assert!(e.contains("no `format` field first"), "{e}");
    assert!(read(b"[]").is_err());
}

#[test]
fn system_json_reads_back_its_typed_part_in_both_versions() {
    let context = verdict::Context {
        kernel_release: "6.18".into(),
        has_tw_paws_reason: true,
        subnets: vec![LocalSubnet {
            netns: "host".into(),
            ifname: "eth0".into(),
            net: "10.10.0.1/24".parse().unwrap(),
        }],
        ingress_ifaces: [("host".to_owned(), "eth0".to_owned())].into(),
        counter_rises: [(
            "task1".to_owned(),
            [("TcpExt.PAWSTimewait".to_owned(), 1)].into(),
        )]
        .into(),
        // What the verdicts of a report need as much as the live run's: Docker's view of the
        // published ports, the handshakes the host answered itself, the drops no event showed.
        unseen_drops: [("TCP_RFC7323_TW_PAWS".to_owned(), 7)].into(),
        published: vec![verdict::PublishedService {
            service: "web".into(),
            port: 8081,
            mode: "ingress".into(),
            running: Some(0),
            desired: Some(2),
        }],
        host_answered: [("10.10.0.11:40000".parse().unwrap(), 3582801664)].into(),
        conntrack_fill: [("ingress_sbox".to_owned(), (262_144, 262_144))].into(),
        overlay_paths: vec![verdict::OverlayPath {
            local: "192.168.200.1".parse().unwrap(),
            remote: "192.168.200.2".parse().unwrap(),
            netns: "host".into(),
            ifname: "eth0".into(),
        }],
        netfilter: [(
            "ingress_sbox".to_owned(),
            verdict::NetfilterView {
                ipvs: [(0x100, vec![("10.0.0.7:0".to_owned(), 0)])].into(),
                ipvs_no_backend: [0x100].into(),
                port_marks: [(8081, 0x100)].into(),
                rules_rose: Some(vec![]),
                draining_at_start: [(0x100, ["10.0.0.7".parse().unwrap()].into())].into(),
                draining_at_end: [(0x100, ["10.0.0.7".parse().unwrap()].into())].into(),
                conn_reuse_mode: Some(0),
                expire_nodest_conn: Some(0),
            },
        )]
        .into(),
        // A swarm on another data-path port: the report's overlay texts name it.
        vxlan_port: 7789,
    };
    let system = v2::System {
        format: FORMAT,
        swarmtrace: "0",
        captured_at: "2026-12-04T03:48:17.558052Z".into(),
        duration_s: 4.0,
        hostname: Some("node-1".into()),
        kernel: json!({"release": "6.18"}),
        capabilities: None,
        sysctls: Default::default(),
        namespaces: vec![],
        docker: None,
        verdict_context: (&context).into(),
    };
    let v = serde_json::to_value(&system).unwrap();
    let read = read_system(&v).unwrap();
    assert_eq!(read.version, Version::V2);
    assert_eq!(read.hostname.as_deref(), Some("node-1"));
    assert_eq!(
        serde_json::to_value(&read.context).unwrap(),
        serde_json::to_value(&context).unwrap()
    );
    assert_eq!(read.context.vxlan_port(), 7789);
    // A bundle from before the port was recorded: the default, the only one then.
    let mut older = v.clone();
    older["verdict_context"]
        .as_object_mut()
        .unwrap()
        .remove("vxlan_port");
    assert_eq!(read_system(&older).unwrap().context.vxlan_port(), 4789);
    // Version 1 wrote the in-memory context as it was: the same fields.
    let mut v1 = v.clone();
    v1["format"] = json!("swarmtrace-bundle/1");
    v1["verdict_context"] = serde_json::to_value(&context).unwrap();
    assert_eq!(read_system(&v1).unwrap().version, Version::V1);
    let e = read_system(&json!({"format": 2})).unwrap_err();
    assert!(e.contains("format `2`"), "{e}");
    assert!(
        read_system(&json!({"format": FORMAT})).is_err(),
        "no verdict_context"
    );
}
