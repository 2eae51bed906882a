//! Rendering a run's results (text, markdown, JSON), live or offline from a capture bundle.
//!
//! Every string of a summary may come from another host's bundle: text goes through
//! [`escape::terminal`], markdown through [`escape::markdown`] (or a code block's fence).

use std::fmt::Write;

use serde_json::Value;

use crate::escape;
use crate::verdict::Verdict;

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A value as it is (`-` for none).
fn raw(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value for a terminal.
fn opt(v: &Value) -> String {
    escape::terminal(&raw(v)).into_owned()
}

/// A value as markdown text (also in a table cell).
fn md(v: &Value) -> String {
    escape::markdown(&raw(v)).into_owned()
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
            let _ = writeln!(s, "  {c:>8}  {}", escape::terminal(r));
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
        md(&system["hostname"]),
        md(&system["kernel"]["release"]),
        md(&system["captured_at"]),
        sum["duration_s"].as_f64().unwrap_or(0.0),
        sum["watched"]
            .as_array()
            .map(|w| w.iter().map(md).collect::<Vec<_>>().join(", "))
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
                .map(|c| escape::code_span(&c.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            v.services
                .iter()
                .map(|c| escape::code_span(c))
                .collect::<Vec<_>>()
                .join(", "),
            v.explanation
        );
        s.push_str("Evidence:\n\n");
        for (d, c) in &v.drops {
            let _ = writeln!(s, "- {c} x {}", escape::markdown(d));
        }
        if v.unanswered > 0 {
            let _ = writeln!(s, "- {} unanswered (no SYN-ACK, no drop)", v.unanswered);
        }
        if v.resets > 0 {
            let _ = writeln!(s, "- {} answered by a RST", v.resets);
        }
        for (c, k) in &v.counters {
            let _ = writeln!(s, "- {} +{k}", escape::markdown(c));
        }
        for note in &v.notes {
            let _ = writeln!(s, "- {}", escape::markdown(note));
        }
        // In a code block nothing is markup, but a run of backticks could end it: the fence
        // is longer than any run inside.
        let confirm = escape::terminal(&v.confirm);
        let fence = escape::fence(&confirm);
        let _ = writeln!(
            s,
            "\nConfirm:\n\n{fence}sh\n{confirm}\n{fence}\n\nFix: {}\n",
            v.fix
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
        md(&h["latency_us"]["p50"]),
        md(&h["latency_us"]["p99"])
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
                md(&h["client"]),
                md(&h["service"]),
                md(&h["verdict"]),
                md(&h["reason"]),
                md(&h["netns_name"]),
                md(&h["syns"]),
                md(&h["last_hop"])
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
            let _ = writeln!(s, "| {} | {} |", escape::markdown(r), n(c));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Cause;
    use serde_json::json;

    const HOSTILE: &str = "\x1b]0;pwn\x07\u{9b}2J`$(touch pwned)`\n# <b>|x|</b>";

    fn verdict() -> Verdict {
        let key = format!("SYN NO_SOCKET at tcp_v4_rcv in {HOSTILE}");
        Verdict {
            cause: Cause::NoListener,
            count: 1,
            clients: ["10.0.0.2".parse().unwrap()].into(),
            services: ["10.0.0.1:80".to_owned()].into(),
            drops: [(key.clone(), 1)].into(),
            unanswered: 0,
            resets: 0,
            counters: [(format!("{HOSTILE}: OutRsts"), 1)].into(),
            drop_netns: [(key, HOSTILE.to_owned())].into(),
            counter_netns: Default::default(),
            notes: vec![format!("note on {HOSTILE}")],
            explanation: "why".into(),
            confirm: format!(
                "ip netns exec {} ss -ltn ```",
                crate::escape::shell_word(HOSTILE)
            ),
            fix: "fix".into(),
        }
    }

    fn summary() -> Value {
        json!({
            "duration_s": 1.0, "drops": 1, "drops_by_reason": {HOSTILE: 1},
            "top_locations": [{"reason": HOSTILE, "function": HOSTILE, "count": 1}],
            "top_sources": [{"addr": HOSTILE, "count": 1}],
            "handshakes": {"answered": 0, "dropped": 1, "latency_us": {"p50": HOSTILE}},
            "watched": [HOSTILE],
        })
    }

    fn no_raw_controls(s: &str) {
        assert!(
            !s.chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{9b}'),
            "{s}"
        );
    }

    #[test]
    fn text_escapes_every_string_of_a_summary() {
        let text = summary_text(&summary(), &[verdict()]);
        no_raw_controls(&text);
        let lines = text.lines().count();
        let plain = summary_text(&summary(), &[verdict()]).replace(HOSTILE, "x");
        assert_eq!(lines, plain.lines().count(), "a name adds no line");
        assert!(text.contains("\\x1b]0;pwn\\x07\\u{9b}2J`$(touch pwned)`\\n# <b>|x|</b>"));
    }

    #[test]
    fn markdown_renders_names_as_text() {
        let system = json!({"hostname": HOSTILE, "kernel": {"release": "6.18"}});
        let hs = [json!({"verdict": "dropped", "netns_name": HOSTILE, "client": "10.0.0.2:1"})];
        let md = summary_markdown(&summary(), &[verdict()], &system, &hs);
        no_raw_controls(&md);
        let escaped =
            "\\\\x1b\\]0;pwn\\\\x07\\\\u{9b}2J\\`$(touch pwned)\\`\\\\n\\# \\<b\\>\\|x\\|\\</b\\>";
        assert!(
            md.contains(&format!("- host: {escaped} (Linux 6.18)")),
            "{md}"
        );
        assert!(md.contains(&format!("| {escaped} |")), "{md}");
        assert!(md.contains(&format!("- note on {escaped}")), "{md}");
        // No raw markup outside code: every `<` and backtick is escaped or in the block.
        let (before, after) = md.split_once("````sh\n").expect("a longer fence");
        let (block, rest) = after
            .split_once("\n````\n")
            .expect("closed by the same fence");
        assert!(block.starts_with("ip netns exec '\\x1b]0;pwn"), "{block}");
        for text in [before, rest] {
            let unescaped = |c: char| {
                text.match_indices(c)
                    .filter(|(i, _)| !text[..*i].ends_with('\\'))
                    .count()
            };
            assert_eq!(unescaped('<'), 0, "{text}");
            // `no-listener`, the client and the service are our code spans.
            assert_eq!(unescaped('`'), if text == before { 6 } else { 0 }, "{text}");
        }
    }
}
