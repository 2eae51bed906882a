//! Rendering a run's results (text, markdown, JSON), live or offline from a capture bundle.
//!
//! Every string of a summary may come from another host's bundle: text goes through
//! [`escape::terminal`], markdown through [`escape::markdown`] (or a code block's fence).

use std::fmt::Write;

use serde_json::Value;

use crate::escape;
use crate::trace::summary::RunSummary;
use crate::verdict::Verdict;

/// A value as it is (`-` for none).
fn raw(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A name for a terminal.
fn t(s: &str) -> String {
    escape::terminal(s).into_owned()
}

/// A number, `-` for none.
fn num(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// A value as markdown text (also in a table cell).
fn md(v: &Value) -> String {
    escape::markdown(&raw(v)).into_owned()
}

/// The end-of-run summary for a terminal.
pub fn summary_text(sum: &RunSummary, verdicts: &[Verdict]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n== swarmtrace summary ({:.1}s) ==\ndropped handshake packets: {}",
        sum.duration_s, sum.drops
    );
    if sum.drops == 0 {
        s.push_str("  none: the kernel dropped no TCP handshake packet that matched the filters\n");
    }
    let mut by: Vec<(&String, u64)> = sum.drops_by_reason.iter().map(|(k, v)| (k, *v)).collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (r, c) in by {
        let _ = writeln!(s, "  {c:>8}  {}", t(r));
    }
    if !sum.top_locations.is_empty() {
        s.push_str("where (from events):\n");
        for l in &sum.top_locations {
            let _ = writeln!(
                s,
                "  {:>8}  {} in {}",
                l.count,
                t(&l.reason),
                t(&l.function)
            );
        }
    }
    for (title, top, others) in [
        ("top sources", &sum.top_sources, sum.other_sources),
        (
            "top destinations",
            &sum.top_destinations,
            sum.other_destinations,
        ),
    ] {
        if !top.is_empty() {
            let _ = writeln!(s, "{title}:");
            for a in top {
                let _ = writeln!(s, "  {:>8}  {}", a.count, t(&a.addr));
            }
            if others > 0 {
                let _ = writeln!(s, "  {others:>8}  (others)");
            }
        }
    }
    if sum.lost_events > 0 {
        let _ = writeln!(
            s,
            "lost events: {} (the ring buffer was full; the counts above are still exact)",
            sum.lost_events
        );
    }
    if sum.decode_errors > 0 {
        let _ = writeln!(s, "undecodable events: {}", sum.decode_errors);
    }
    let h = &sum.handshakes;
    let _ = writeln!(
        s,
        "handshakes: {} answered (latency p50 {} us, p99 {} us), {} dropped, {} reset, {} unanswered",
        h.answered,
        num(h.latency_us.p50),
        num(h.latency_us.p99),
        h.dropped,
        h.reset,
        h.unanswered
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
    sum: &RunSummary,
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
        sum.duration_s,
        sum.watched
            .iter()
            .map(|w| escape::markdown(w))
            .collect::<Vec<_>>()
            .join(", ")
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
        if v.confidence == crate::verdict::Confidence::Circumstantial && !v.alternatives.is_empty()
        {
            let _ = writeln!(
                s,
                "Confidence: circumstantial. It could also be: {}.\n",
                v.alternatives.join("; ")
            );
        }
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
    let h = &sum.handshakes;
    let _ = writeln!(
        s,
        "## Handshakes\n\n| answered | dropped | reset | unanswered | latency p50 (us) | p99 (us) |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |\n",
        h.answered,
        h.dropped,
        h.reset,
        h.unanswered,
        num(h.latency_us.p50),
        num(h.latency_us.p99)
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
        sum.drops, sum.lost_events
    );
    if !sum.drops_by_reason.is_empty() {
        s.push_str("| reason | count |\n|---|---|\n");
        for (r, c) in &sum.drops_by_reason {
            let _ = writeln!(s, "| {} | {c} |", escape::markdown(r));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::summary::{AddrCount, HandshakeTotals, LocationCount};
    use crate::verdict::Cause;
    use serde_json::json;

    const HOSTILE: &str = "\x1b]0;pwn\x07\u{9b}2J`$(touch pwned)`\n# <b>|x|</b>";

    fn verdict() -> Verdict {
        let key = format!("SYN NO_SOCKET at tcp_v4_rcv in {HOSTILE}");
        Verdict {
            cause: Cause::NoListener,
            confidence: crate::verdict::Confidence::Confirmed,
            alternatives: vec![],
            count: 1,
            forgotten: 0,
            from_counters: 0,
            clients: ["10.0.0.2".parse().unwrap()].into(),
            clients_total: 1,
            services: ["10.0.0.1:80".to_owned()].into(),
            services_total: 1,
            drops: [(key.clone(), 1)].into(),
            drops_other: 0,
            unanswered: 0,
            resets: 0,
            counters: [(format!("{HOSTILE}: OutRsts"), 1)].into(),
            drop_netns: [(key, HOSTILE.to_owned())].into(),
            counter_netns: Default::default(),
            overlay_paths: vec![],
            overlay_from: Default::default(),
            overlay_reasons: Default::default(),
            unreachable: Default::default(),
            notes: vec![format!("note on {HOSTILE}")],
            explanation: "why".into(),
            confirm: format!(
                "ip netns exec {} ss -ltn ```",
                crate::escape::shell_word(HOSTILE)
            ),
            fix: "fix".into(),
        }
    }

    fn summary() -> RunSummary {
        RunSummary {
            duration_s: 1.0,
            drops: 1,
            drops_by_reason: [(HOSTILE.to_owned(), 1)].into(),
            top_locations: vec![LocationCount {
                reason: HOSTILE.into(),
                function: HOSTILE.into(),
                count: 1,
            }],
            top_sources: vec![AddrCount {
                addr: HOSTILE.into(),
                count: 1,
            }],
            handshakes: HandshakeTotals {
                dropped: 1,
                ..HandshakeTotals::default()
            },
            watched: vec![HOSTILE.into()],
            ..RunSummary::default()
        }
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

    /// A summary line is written and read back as the same type; an older bundle's line
    /// lacks fields, which read as their defaults.
    #[test]
    fn the_summary_line_reads_back_and_old_ones_default() {
        let mut sum = summary();
        sum.handshakes.latency_us.p50 = Some(12);
        sum.verdicts = vec![json!({"cause": "no-listener"})];
        let line = serde_json::to_string(&sum).unwrap();
        assert!(
            line.starts_with(r#"{"type":"summary","duration_s":1.0,"drops":1,"#),
            "{line}"
        );
        assert!(
            line.ends_with(
                &(r#""verdicts":[{"cause":"no-listener"}],"watched":["#.to_owned()
                    + &serde_json::to_string(HOSTILE).unwrap()
                    + r#"],"kernel_lacks":[],"kfree_skb_hook":"","sampled":null,"other_sources":0,"other_destinations":0,"events_by_reason":{}}"#)
            ),
            "{line}"
        );
        let back: RunSummary = serde_json::from_str(&line).unwrap();
        assert_eq!(back, sum);
        let old: RunSummary = serde_json::from_str(
            r#"{"type":"summary","drops":3,"handshakes":{"dropped":1},"verdicts":[]}"#,
        )
        .unwrap();
        assert_eq!(old.drops, 3);
        assert_eq!(old.handshakes.dropped, 1);
        assert_eq!(old.handshakes.latency_us, Default::default());
        let text = summary_text(&old, &[]);
        assert!(text.contains("dropped handshake packets: 3"), "{text}");
        assert!(
            text.contains("handshakes: 0 answered (latency p50 - us, p99 - us), 1 dropped"),
            "{text}"
        );
    }

    #[test]
    fn text_names_where_the_drops_were() {
        let sum = RunSummary {
            drops: 2,
            drops_by_reason: [("NO_SOCKET".to_owned(), 2)].into(),
            top_locations: vec![LocationCount {
                reason: "NO_SOCKET".into(),
                function: "tcp_v4_rcv".into(),
                count: 2,
            }],
            ..RunSummary::default()
        };
        let text = summary_text(&sum, &[]);
        assert!(text.contains("       2  NO_SOCKET in tcp_v4_rcv"), "{text}");
        assert!(text.contains("verdicts: none"), "{text}");
    }
}
