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

/// Handshakes seen in several bundles, joined by their kernel key (ISN, TSval): the same SYN
/// on several nodes (or hops), node by node in time order.
pub fn join(bundles: &[bundle::Bundle]) -> serde_json::Value {
    use std::collections::BTreeMap;
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
    let handshakes: Vec<serde_json::Value> = by_key
        .into_iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|((isn, tsval), mut nodes)| {
            nodes.sort_by_key(|(i, h)| bundles[*i].handshakes.clock.to_unix_ns(h.first_ns));
            let first = nodes[0].1;
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
                "service": first.service.to_string(),
                "nodes": nodes,
            })
        })
        .collect();
    serde_json::json!({
        "type": "join",
        "bundles": bundles.iter().map(|b| b.source.clone()).collect::<Vec<_>>(),
        "handshakes": handshakes,
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
            "{}ISN {} TSval {}: {} -> {}",
            if markdown { "\n### " } else { "" },
            h["isn"],
            h["tsval"],
            str_of(&h["client"]),
            str_of(&h["service"])
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
    s
}
