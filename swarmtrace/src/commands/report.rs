//! `swarmtrace report`: renders bundles offline, without root; several bundles (nodes) are
//! also joined handshake by handshake.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::cli::{ReportArgs, ReportFormat};
use crate::evidence::bundle;

/// `swarmtrace report`: renders bundles offline, without root; several bundles (nodes) are
/// also joined handshake by handshake.
pub fn report(args: ReportArgs) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    // One budget for every bundle: what they decompress and what is kept of them.
    let budget = bundle::Budget::default();
    let bundles = args
        .bundles
        .iter()
        .map(|p| bundle::Bundle::load_within(Path::new(p), &budget, false))
        .collect::<Result<Vec<_>>>()?;
    for b in &bundles {
        if b.failed_not_kept > 0 {
            eprintln!(
                "swarmtrace: bundle {}: events.ndjson: {} more failed handshake lines than the {} kept (a limit of `report`); the counts and verdicts include them",
                b.source, b.failed_not_kept, budget.limits.kept_lines
            );
        }
        let verdicts = b.verdicts();
        // Typed for rendering; a field an older bundle lacks is its default.
        let summary = || {
            crate::trace::summary::RunSummary::from_json(b.summary()).with_context(|| {
                format!(
                    "bundle {}: events.ndjson: the summary line",
                    crate::escape::terminal(&b.source)
                )
            })
        };
        match args.format {
            ReportFormat::Json => {
                let mut sum = b.summary().clone();
                sum["verdicts"] =
                    serde_json::Value::Array(verdicts.iter().map(|v| v.to_json()).collect());
                sum["bundle"] = serde_json::Value::String(b.source.clone());
                writeln!(stdout, "{sum}")?;
            }
            ReportFormat::Markdown => {
                write!(
                    stdout,
                    "{}",
                    crate::present::summary::summary_markdown(
                        &summary()?,
                        &verdicts,
                        &b.system,
                        &b.handshake_events()
                    )
                )?;
                if b.failed_not_kept > 0 {
                    writeln!(
                        stdout,
                        "({} more failed handshakes in events.ndjson than the {} this report read.)\n",
                        b.failed_not_kept, budget.limits.kept_lines
                    )?;
                }
            }
            ReportFormat::Text => {
                // A bundle is another host's word: every string of it is escaped.
                let t = |v: &serde_json::Value| {
                    crate::escape::terminal(v.as_str().unwrap_or("?")).into_owned()
                };
                writeln!(
                    stdout,
                    "bundle {}: {} (Linux {}), captured {}",
                    crate::escape::terminal(&b.source),
                    t(&b.system["hostname"]),
                    t(&b.system["kernel"]["release"]),
                    t(&b.system["captured_at"])
                )
                .context("stdout")?;
                write!(
                    stdout,
                    "{}",
                    crate::present::summary::summary_text(&summary()?, &verdicts)
                )?;
            }
        }
    }
    if bundles.len() > 1 {
        let joined = join(&bundles);
        match args.format {
            ReportFormat::Json => writeln!(stdout, "{joined}")?,
            ReportFormat::Markdown | ReportFormat::Text => write!(
                stdout,
                "{}",
                join_text(&joined, matches!(args.format, ReportFormat::Markdown))
            )?,
        }
    }
    Ok(())
}

/// Real clients kept behind one address a node saw (an SNAT address hides many).
const MAX_REAL: usize = 16;

/// Handshakes seen in several bundles, joined by their kernel key (ISN, TSval): the same SYN
/// on several nodes (or hops), node by node in time order. The real client is the one of the
/// node that saw the SYN come in (a first hop `.../in`: where it entered the mesh, before any
/// NAT), else of the first node that saw the SYN at all, else the earliest: not simply the
/// earliest, since each node's clock is its own. Each bundle's verdicts follow (`verdicts`),
/// their clients replaced by the real clients behind the addresses that node saw where the
/// handshake failed there (as `swarmtrace join` does live).
pub fn join(bundles: &[bundle::Bundle]) -> serde_json::Value {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;
    use swarmtrace_common::HandshakeKey;
    type Nodes<'a> = Vec<(usize, &'a crate::trace::tracker::Handshake)>;
    let mut by_key: BTreeMap<(u32, u32), Nodes> = BTreeMap::new();
    for (i, b) in bundles.iter().enumerate() {
        for h in &b.handshakes.handshakes {
            for HandshakeKey { isn, tsval } in &h.keys {
                let nodes = by_key.entry((*isn, *tsval)).or_default();
                if !nodes.iter().any(|(j, _)| *j == i) {
                    nodes.push((i, h));
                }
            }
        }
    }
    // (bundle, address it saw) -> the real clients behind it. Bounded by the bundles' own
    // budgets (keys) and MAX_REAL per address.
    let mut real: BTreeMap<(usize, IpAddr), Vec<IpAddr>> = BTreeMap::new();
    let handshakes: Vec<serde_json::Value> = by_key
        .into_iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|((isn, tsval), mut nodes)| {
            nodes.sort_by_key(|(i, h)| bundles[*i].handshakes.clock.to_unix_ns(h.first_ns));
            let (ri, first) = *nodes
                .iter()
                .find(|(_, h)| h.first_hop.is_some_and(|x| x.dir == 1))
                .or_else(|| nodes.iter().find(|(_, h)| h.first_hop.is_some()))
                .unwrap_or(&nodes[0]);
            let real_ip = first.client.ip();
            for (i, h) in nodes.iter().filter(|(i, _)| *i != ri) {
                if h.outcome() == crate::trace::tracker::Outcome::Answered {
                    continue;
                }
                let seen: BTreeSet<IpAddr> = std::iter::once(h.client.ip())
                    .chain(h.drops.iter().map(|d| d.packet.src.ip()))
                    .filter(|ip| *ip != real_ip)
                    .collect();
                for ip in seen {
                    let reals = real.entry((*i, ip)).or_default();
                    if !reals.contains(&real_ip) && reals.len() < MAX_REAL {
                        reals.push(real_ip);
                    }
                }
            }
            let nodes: Vec<serde_json::Value> = nodes
                .iter()
                .map(|(i, h)| {
                    let b = &bundles[*i];
                    let hops = b.hop_names();
                    serde_json::json!({
                        "bundle": b.source,
                        "host": b.hostname,
                        "first_seen": crate::clock::rfc3339_micros(b.handshakes.clock.to_unix_ns(h.first_ns)),
                        "client": h.client.to_string(),
                        "service": h.service.to_string(),
                        "first_hop": h.first_hop.map(|x| hops.name(&x)),
                        "verdict": h.outcome().as_str(),
                        "latency_us": h.latency_ns().map(|n| n / 1000),
                        "drops": h.drops.iter().map(|d| serde_json::json!({
                            "packet": d.packet.kind.as_str(),
                            "reason": d.reason,
                            "location": d.location,
                            "netns_name": d.netns_name,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            serde_json::json!({
                "isn": isn,
                "tsval": tsval,
                "client": first.client.to_string(),
                "client_host": bundles[ri].hostname,
                "client_bundle": bundles[ri].source,
                "service": first.service.to_string(),
                "nodes": nodes,
            })
        })
        .collect();
    let verdicts: Vec<serde_json::Value> = bundles
        .iter()
        .enumerate()
        .flat_map(|(i, b)| {
            let real = &real;
            b.verdicts().into_iter().map(move |v| {
                let mut clients: Vec<IpAddr> = v
                    .clients
                    .iter()
                    .flat_map(|c| real.get(&(i, *c)).cloned().unwrap_or_else(|| vec![*c]))
                    .collect();
                clients.sort();
                clients.dedup();
                serde_json::json!({
                    "bundle": b.source,
                    "host": b.hostname,
                    "cause": v.cause.id(),
                    "count": v.count,
                    "clients": clients.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "seen_as": v.clients.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "services": v.services,
                })
            })
        })
        .collect();
    serde_json::json!({
        "type": "join",
        "bundles": bundles.iter().map(|b| b.source.clone()).collect::<Vec<_>>(),
        "handshakes": handshakes,
        "verdicts": verdicts,
    })
}

fn join_text(joined: &serde_json::Value, markdown: bool) -> String {
    use std::fmt::Write as _;
    // Names from the bundles (hosts, namespaces, hops): escaped for where they go.
    let str_of = |v: &serde_json::Value| {
        let s = v.as_str().unwrap_or("?");
        if markdown {
            crate::escape::markdown(s).into_owned()
        } else {
            crate::escape::terminal(s).into_owned()
        }
    };
    let mut s = String::new();
    let hs = joined["handshakes"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        s,
        "{}handshakes seen in more than one of {} bundles (joined by ISN and TSval): {}",
        if markdown { "\n## " } else { "\n== " },
        joined["bundles"].as_array().map_or(0, |b| b.len()),
        hs.len()
    );
    for h in hs {
        let _ = writeln!(
            s,
            "{}ISN {} TSval {}: {} -> {} (the client as [{}] saw it come in)",
            if markdown { "\n### " } else { "" },
            h["isn"],
            h["tsval"],
            str_of(&h["client"]),
            str_of(&h["service"]),
            str_of(&h["client_host"])
        );
        for n in h["nodes"].as_array().into_iter().flatten() {
            let drops: Vec<String> = n["drops"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{} {} in {}",
                        str_of(&d["packet"]),
                        str_of(&d["reason"]),
                        str_of(&d["netns_name"])
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "{}{} [{}] {}: seen at {} as {} -> {}: {}{}{}",
                if markdown { "- " } else { "  " },
                str_of(&n["first_seen"]),
                str_of(&n["host"]),
                str_of(&n["bundle"]),
                str_of(&n["first_hop"]),
                str_of(&n["client"]),
                str_of(&n["service"]),
                str_of(&n["verdict"]),
                n["latency_us"]
                    .as_u64()
                    .map(|l| format!(" in {l} us"))
                    .unwrap_or_default(),
                if drops.is_empty() {
                    String::new()
                } else {
                    format!("; dropped: {}", drops.join(", "))
                }
            );
        }
    }
    let vs = joined["verdicts"].as_array().cloned().unwrap_or_default();
    if !vs.is_empty() {
        let _ = writeln!(
            s,
            "{}each bundle's verdicts, charged to the real clients behind the addresses it saw",
            if markdown { "\n## " } else { "\n== " }
        );
    }
    let list = |v: &serde_json::Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .map(&str_of)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for v in vs {
        let (clients, seen) = (list(&v["clients"]), list(&v["seen_as"]));
        let _ = writeln!(
            s,
            "{}[{}] {}: {} ({} handshakes): clients {}{}",
            if markdown { "- " } else { "  " },
            str_of(&v["host"]),
            str_of(&v["bundle"]),
            str_of(&v["cause"]),
            v["count"],
            clients,
            if clients == seen {
                String::new()
            } else {
                format!(" (seen there as {seen})")
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::format::{handshakes_json, Recorded, FORMAT};
    use crate::trace::event::{Packet, PacketKind};
    use crate::trace::tracker::{DropNote, Handshake};
    use swarmtrace_common::{HandshakeKey, Hop};

    /// A bundle as `capture` writes it, through the library, into `dir`.
    fn write_bundle(
        dir: &Path,
        host: &str,
        hops: Vec<(u32, u32, String, String)>,
        hs: Vec<Handshake>,
    ) {
        let rec = Recorded {
            handshakes: hs,
            hops,
            forgotten: 0,
            clock: crate::clock::WallClock::sample(),
        };
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("handshakes.json"), handshakes_json(&rec).unwrap()).unwrap();
        let system = serde_json::json!({"format": FORMAT, "hostname": host, "kernel": {"release": "6.12"}, "verdict_context": crate::verdict::Context::default()});
        std::fs::write(dir.join("system.json"), system.to_string()).unwrap();
        std::fs::write(
            dir.join("events.ndjson"),
            "{\"type\":\"summary\",\"drops\":0,\"handshakes\":{},\"verdicts\":[]}\n",
        )
        .unwrap();
    }

    fn syn(client: &str, first_ns: u64, first_hop: Option<Hop>) -> Handshake {
        Handshake {
            client: client.parse().unwrap(),
            service: "192.168.100.1:8083".parse().unwrap(),
            isn: 77,
            first_ns,
            syns: 1,
            keys: vec![HandshakeKey {
                isn: 77,
                tsval: 2000,
            }],
            first_hop,
            answer: None,
            drops: vec![],
            reported: true,
            overflow: Default::default(),
            overlay: None,
        }
    }

    // Node 1 saw client .3's SYN come in on lan0 before the mesh's SNAT; node 2 saw only its
    // PAWS drop in the paws task, from node 1's ingress address, and its clock runs 4 ms ahead:
    // by time alone node 2 came first.
    #[test]
    fn the_join_names_the_client_that_came_in_and_charges_the_other_nodes_verdicts_to_it() {
        let dir = std::env::temp_dir().join(format!("st-report-join-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let n1 = syn(
            "192.168.100.3:40000",
            5_000_000,
            Some(Hop {
                netns: 1,
                ifindex: 2,
                dir: 1,
                ..Hop::default()
            }),
        );
        let mut n2 = syn("10.0.0.2:40000", 1_000_000, None);
        n2.service = "10.0.0.9:80".parse().unwrap();
        n2.drops.push(DropNote {
            ts_ns: 1_000_000,
            kind: PacketKind::Syn,
            reason: "TCP_RFC7323_TW_PAWS".into(),
            location: "tcp_v4_rcv+0x1".into(),
            netns: 9,
            netns_name: Some("container paws.1.x".into()),
            ifname: Some("eth0".into()),
            vxlan_from: None,
            packet: Packet {
                kind: PacketKind::Syn,
                src: "10.0.0.2:40000".parse().unwrap(),
                dst: "10.0.0.9:80".parse().unwrap(),
                seq: 77,
                ack: 0,
                tsval: Some(2000),
                tsecr: None,
                flags: 2,
            },
        });
        write_bundle(
            &dir.join("n1"),
            "node1",
            vec![(1, 2, "host".into(), "lan0".into())],
            vec![n1],
        );
        write_bundle(&dir.join("n2"), "node2", vec![], vec![n2]);
        let bundles: Vec<bundle::Bundle> = ["n1", "n2"]
            .iter()
            .map(|n| bundle::Bundle::load(&dir.join(n)).unwrap())
            .collect();
        assert!(
            bundles[1]
                .verdicts()
                .iter()
                .any(|v| v.cause.id() == "paws-timestamps"),
            "node 2 alone names PAWS"
        );
        let j = join(&bundles);
        let h = &j["handshakes"][0];
        assert_eq!(h["client"], "192.168.100.3:40000", "{j:#}");
        assert_eq!(h["client_host"], "node1", "{j:#}");
        let paws = j["verdicts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["cause"] == "paws-timestamps")
            .unwrap_or_else(|| panic!("no paws-timestamps verdict in the join: {j:#}"));
        assert_eq!(paws["host"], "node2", "{paws:#}");
        assert_eq!(
            paws["clients"],
            serde_json::json!(["192.168.100.3"]),
            "{paws:#}"
        );
        assert_eq!(paws["seen_as"], serde_json::json!(["10.0.0.2"]), "{paws:#}");
        let text = join_text(&j, false);
        assert!(
            text.contains("paws-timestamps")
                && text.contains("192.168.100.3 (seen there as 10.0.0.2)"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
