//! Rendering a run's results (text, markdown, JSON), live or offline from a capture bundle.

use std::fmt::Write;

use serde_json::Value;

use crate::verdict::Verdict;

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The end-of-run summary for a terminal, from the summary object of docs/json.md.
pub fn summary_text(sum: &Value, verdicts: &[Verdict]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== swarmtrace summary ({:.1}s) ==\ndropped handshake packets: {}",
        sum["duration_s"].as_f64().unwrap_or(0.0),
        n(&sum["drops"])
    );
    if n(&sum["drops"]) == 0 {
        s.push_str("  none: the kernel dropped no TCP handshake packet that matched the filters\n");
    }
    if let Some(by) = sum["drops_by_reason"].as_object() {
        let mut by: Vec<(&String, u64)> = by.iter().map(|(k, v)| (k, n(v))).collect();
        by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (r, c) in by {
            let _ = writeln!(s, "  {c:>8}  {r}");
        }
    }
    if let Some(locs) = sum["top_locations"].as_array().filter(|l| !l.is_empty()) {
        s.push_str("where (from events):\n");
        for l in locs {
            let _ = writeln!(
                s,
                "  {:>8}  {} in {}",
                n(&l["count"]),
                opt(&l["reason"]),
                opt(&l["function"])
            );
        }
    }
    for (title, key) in [
        ("top sources", "top_sources"),
        ("top destinations", "top_destinations"),
    ] {
        if let Some(top) = sum[key].as_array().filter(|t| !t.is_empty()) {
            let _ = writeln!(s, "{title}:");
            for t in top {
                let _ = writeln!(s, "  {:>8}  {}", n(&t["count"]), opt(&t["addr"]));
            }
        }
    }
    if n(&sum["lost_events"]) > 0 {
        let _ = writeln!(
            s,
            "lost events: {} (the ring buffer was full; the counts above are still exact)",
            n(&sum["lost_events"])
        );
    }
    if n(&sum["decode_errors"]) > 0 {
        let _ = writeln!(s, "undecodable events: {}", n(&sum["decode_errors"]));
    }
    let h = &sum["handshakes"];
    let _ = writeln!(
        s,
        "handshakes: {} answered (latency p50 {} us, p99 {} us), {} dropped, {} reset, {} unanswered",
        n(&h["answered"]),
        opt(&h["latency_us"]["p50"]),
        opt(&h["latency_us"]["p99"]),
        n(&h["dropped"]),
        n(&h["reset"]),
        n(&h["unanswered"])
    );
    if verdicts.is_empty() {
        s.push_str("verdicts: none: every handshake seen was answered\n");
    } else {
        s.push_str("verdicts:\n");
        for v in verdicts {
            s.push_str(&v.to_text());
        }
    }
    s
}

/// A postmortem report in markdown.
pub fn summary_markdown(
    sum: &Value,
    verdicts: &[Verdict],
    system: &Value,
    handshakes: &[Value],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# swarmtrace report\n");
    let _ = writeln!(
        s,
        "- host: {} (Linux {})\n- captured: {} for {:.1} s\n- watched: {}\n",
        opt(&system["hostname"]),
        opt(&system["kernel"]["release"]),
        opt(&system["captured_at"]),
        sum["duration_s"].as_f64().unwrap_or(0.0),
        sum["watched"]
            .as_array()
            .map(|w| w.iter().map(opt).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    let _ = writeln!(s, "## Verdicts\n");
    if verdicts.is_empty() {
        s.push_str("None: every handshake seen was answered.\n\n");
    }
    for v in verdicts {
        let _ = writeln!(s, "### `{}`: {} handshake(s)\n", v.cause.id(), v.count);
        let _ = writeln!(
            s,
            "- clients: {}\n- services: {}\n\n{}\n",
            v.clients
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            v.services
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            v.explanation
        );
        s.push_str("Evidence:\n\n");
        for (d, c) in &v.drops {
            let _ = writeln!(s, "- {c} x {d}");
        }
        if v.unanswered > 0 {
            let _ = writeln!(s, "- {} unanswered (no SYN-ACK, no drop)", v.unanswered);
        }
        if v.resets > 0 {
            let _ = writeln!(s, "- {} answered by a RST", v.resets);
        }
        for (c, k) in &v.counters {
            let _ = writeln!(s, "- {c} +{k}");
        }
        for note in &v.notes {
            let _ = writeln!(s, "- {note}");
        }
        let _ = writeln!(
            s,
            "\nConfirm:\n\n```sh\n{}\n```\n\nFix: {}\n",
            v.confirm, v.fix
        );
    }
    let h = &sum["handshakes"];
    let _ = writeln!(
        s,
        "## Handshakes\n\n| answered | dropped | reset | unanswered | latency p50 (us) | p99 (us) |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |\n",
        n(&h["answered"]),
        n(&h["dropped"]),
        n(&h["reset"]),
        n(&h["unanswered"]),
        opt(&h["latency_us"]["p50"]),
        opt(&h["latency_us"]["p99"])
    );
    let failed: Vec<&Value> = handshakes
        .iter()
        .filter(|h| h["verdict"] != "answered")
        .collect();
    if !failed.is_empty() {
        s.push_str("| client | service | verdict | reason | namespace | SYNs | last hop |\n|---|---|---|---|---|---|---|\n");
        for h in failed.iter().take(200) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                opt(&h["client"]),
                opt(&h["service"]),
                opt(&h["verdict"]),
                opt(&h["reason"]),
                opt(&h["netns_name"]),
                opt(&h["syns"]),
                opt(&h["last_hop"])
            );
        }
        if failed.len() > 200 {
            let _ = writeln!(s, "\n({} more in events.ndjson)", failed.len() - 200);
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "## Drops\n\n{} dropped handshake packets (exact), {} lost events.\n",
        n(&sum["drops"]),
        n(&sum["lost_events"])
    );
    if let Some(by) = sum["drops_by_reason"].as_object().filter(|b| !b.is_empty()) {
        s.push_str("| reason | count |\n|---|---|\n");
        for (r, c) in by {
            let _ = writeln!(s, "| {r} | {} |", n(c));
        }
        s.push('\n');
    }
    s
}
