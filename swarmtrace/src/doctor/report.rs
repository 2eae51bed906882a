//! What doctor found, and how it is printed: a finding has an id, a severity and a text; the
//! text output groups findings under headings, the JSON output is one object.

use serde_json::{json, Value};

/// The first `max` of `items` joined with `sep`, and " (and N more)" when there are more: a
/// finding's quoted list stays short whatever the host holds.
pub(super) fn first_of(items: &[String], max: usize, sep: &str) -> String {
    let more = items.len().saturating_sub(max);
    let shown = items[..items.len().min(max)].join(sep);
    if more > 0 {
        format!("{shown} (and {more} more)")
    } else {
        shown
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Serious,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Serious => "serious",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Severity::Ok => "[ok]",
            Severity::Info => "[info]",
            Severity::Warning => "[WARNING]",
            Severity::Serious => "[SERIOUS]",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    /// Stable identifier (`rp-filter`, `client-overlap`, ...); several findings may share one.
    pub id: &'static str,
    pub severity: Severity,
    pub title: String,
    /// What it means here, for published ports behind NAT.
    pub detail: String,
    pub fix: Option<String>,
}

impl Finding {
    pub(super) fn new(id: &'static str, severity: Severity, title: impl Into<String>) -> Self {
        Self {
            id,
            severity,
            title: title.into(),
            detail: String::new(),
            fix: None,
        }
    }

    pub(super) fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = d.into();
        self
    }

    pub(super) fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = Some(f.into());
        self
    }

    /// The heading the text output files this finding under.
    pub fn group(&self) -> &'static str {
        group_of(self.id).1
    }
}

/// Every finding id, with its group (in output order).
pub(super) const GROUPS: &[(&str, &[&str])] = &[
    ("scope", &["scope"]),
    (
        "sysctls",
        &[
            "tcp-tw-recycle",
            "tcp-timestamps",
            "tcp-tw-reuse",
            "tcp-syncookies",
            "somaxconn",
            "tcp-max-syn-backlog",
            "ip-forward",
            "bridge-nf-call-iptables",
            "rp-filter",
        ],
    ),
    (
        "subnets",
        &[
            "docker-subnets",
            "client-overlap",
            "route-overlap",
            "docker-overlap",
        ],
    ),
    (
        "Docker and the routing mesh",
        &[
            "docker",
            "docker-api",
            "iptables",
            "ingress-dnat",
            "ingress-jump",
            "ingress-forward",
            "ingress-sbox-mark",
            "iptables-backends",
            "swarm-ports",
            "overlay-mtu",
        ],
    ),
    ("conntrack", &["conntrack"]),
    (
        "what `swarmtrace run` can see on this kernel",
        &[
            "kernel",
            "privileges",
            "btf",
            "tracefs",
            "ring-buffer",
            "drop-reasons",
            "tw-paws-reason",
            "tcx",
        ],
    ),
];

pub(super) fn group_of(id: &str) -> (usize, &'static str) {
    GROUPS
        .iter()
        .enumerate()
        .find(|(_, (_, ids))| ids.contains(&id))
        .map_or((GROUPS.len(), "other"), |(i, (g, _))| (i, *g))
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    pub fn serious(&self) -> usize {
        self.count(Severity::Serious)
    }

    /// The findings with this id.
    pub fn by_id<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.id == id)
    }

    /// The worst severity among the findings with this id.
    pub fn worst(&self, id: &str) -> Option<Severity> {
        self.by_id(id).map(|f| f.severity).max()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "type": "doctor",
            "findings": self.findings.iter().map(|f| json!({
                "id": f.id,
                "severity": f.severity.as_str(),
                "title": f.title,
                "detail": f.detail,
                "fix": f.fix,
            })).collect::<Vec<_>>(),
            "serious": self.serious(),
        })
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut order: Vec<&Finding> = self.findings.iter().collect();
        // Stable: keeps each group's findings in check order.
        order.sort_by_key(|f| group_of(f.id).0);
        let mut group = "";
        for f in order {
            if f.group() != group {
                group = f.group();
                if !out.is_empty() {
                    out.push('\n');
                }
                let _ = writeln!(out, "{group}");
            }
            // The title's first line carries the tag in the indentation.
            let title = wrap(&f.title, 12, 100);
            let _ = write!(
                out,
                "  {:<10}{}",
                f.severity.tag(),
                &title[12.min(title.len())..]
            );
            if title.is_empty() {
                out.push('\n');
            }
            if !f.detail.is_empty() {
                out.push_str(&wrap(&f.detail, 12, 100));
            }
            if let Some(fix) = &f.fix {
                out.push_str(&wrap(&format!("fix: {fix}"), 12, 100));
            }
        }
        let _ = writeln!(
            out,
            "\n{} serious, {} warning(s), {} info, {} ok{}",
            self.serious(),
            self.count(Severity::Warning),
            self.count(Severity::Info),
            self.count(Severity::Ok),
            if self.serious() > 0 {
                ": fix the serious findings first (exit status 1)"
            } else {
                ""
            }
        );
        out
    }
}

/// Word-wraps `text` to `width` columns, every line indented by `indent`. Findings name
/// interfaces, namespaces and Docker's networks: each word is escaped for the terminal.
fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let pad = " ".repeat(indent);
    let mut line = String::new();
    for word in text.split_whitespace() {
        let word = crate::escape::terminal(word);
        if !line.is_empty() && indent + line.len() + 1 + word.len() > width {
            out.push_str(&pad);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        out.push_str(&pad);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fake::*;
    use crate::doctor::Ruleset;

    #[test]
    fn a_quoted_list_says_how_many_it_left_out() {
        let items: Vec<String> = ["a", "b", "c", "d"].map(String::from).into();
        assert_eq!(first_of(&items, 3, "; "), "a; b; c (and 1 more)");
        assert_eq!(first_of(&items[..2], 3, ", "), "a, b");
        assert_eq!(first_of(&[], 3, ", "), "");
    }
    use std::collections::BTreeSet;

    #[test]
    fn every_id_has_a_group() {
        let mut h = Fake::swarm();
        h.set("net.ipv4.tcp_tw_recycle", "1");
        h.set("net.ipv4.ip_forward", "0");
        h.routes
            .push(route("10.0.0.0/8", Some("192.168.1.254"), "eth0"));
        h.ifaces.push(iface("host", "br-1", "172.17.0.1/16", true));
        h.replace_rules(
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n",
            "",
        );
        h.replace_rules("-A FORWARD -j DOCKER-INGRESS\n", "");
        h.mangle = Some(String::new());
        h.rules.push(Ruleset {
            backend: "legacy".into(),
            text: h.rules[0].text.clone(),
        });
        h.scope.root = false;
        let mut all = h.run(&["172.18.0.0/24"]).findings;
        let mut p = Fake::plain();
        p.conntrack.clear();
        all.extend(p.run(&[]).findings);
        p.rules = vec![];
        p.ifaces
            .push(iface("host", "docker_gwbridge", "172.18.0.1/16", true));
        all.extend(p.run(&[]).findings);
        let ids: BTreeSet<&str> = all.iter().map(|f| f.id).collect();
        for id in &ids {
            assert_ne!(group_of(id).1, "other", "{id} has no group");
        }
        let known: BTreeSet<&str> = GROUPS
            .iter()
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        let unseen: Vec<&&str> = known.difference(&ids).collect();
        assert!(unseen.is_empty(), "ids never produced here: {unseen:?}");
    }

    #[test]
    fn json_and_text_output() {
        let mut h = Fake::swarm();
        h.set("net.ipv4.tcp_tw_recycle", "1");
        let r = h.run(&["172.18.5.0/24"]);
        let v = r.to_json();
        assert_eq!(v["type"], "doctor");
        assert_eq!(v["serious"], r.serious());
        assert_eq!(r.serious(), 2, "{:?}", problems(&r));
        let findings = v["findings"].as_array().unwrap();
        assert_eq!(findings.len(), r.findings.len());
        let f = findings
            .iter()
            .find(|f| f["id"] == "tcp-tw-recycle")
            .unwrap();
        assert_eq!(f["severity"], "serious");
        assert!(f["fix"].is_string());
        let keys: Vec<&String> = f.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "severity", "title", "detail", "fix"]);
        let ok = findings.iter().find(|f| f["id"] == "somaxconn").unwrap();
        assert!(ok["fix"].is_null());

        let text = r.to_text();
        let groups: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(' '))
            .collect();
        assert_eq!(
            &groups[..6],
            [
                "scope",
                "sysctls",
                "subnets",
                "Docker and the routing mesh",
                "conntrack",
                "what `swarmtrace run` can see on this kernel"
            ]
        );
        assert!(
            text.contains("  [SERIOUS] net.ipv4.tcp_tw_recycle = 1"),
            "{text}"
        );
        assert!(
            text.contains("\n            fix: sysctl -w net.ipv4.tcp_tw_recycle=0"),
            "{text}"
        );
        assert!(
            text.lines().all(|l| l.len() <= 100 || !l.contains(' ')),
            "{text}"
        );
        assert!(text.trim_end().ends_with("(exit status 1)"), "{text}");
    }

    #[test]
    fn wraps_words() {
        assert_eq!(wrap("aaa bbb ccc", 2, 9), "  aaa bbb\n  ccc\n");
        assert_eq!(wrap("", 2, 9), "");
        assert_eq!(
            wrap("averyveryverylongword x", 2, 9),
            "  averyveryverylongword\n  x\n"
        );
    }

    #[test]
    fn names_in_findings_are_escaped_in_text_and_exact_in_json() {
        let name = "br-\x1b]0;pwn\x07\u{9b}31m\nX";
        let r = Report {
            findings: vec![Finding::new(
                "rp-filter",
                Severity::Warning,
                format!("strict rp_filter in force on {name}"),
            )
            .detail(format!("{name} is strict"))],
        };
        let text = r.to_text();
        assert!(!text.contains('\x1b') && !text.contains('\u{9b}'), "{text}");
        assert!(
            // wrap() reads the newline as a space: no line of its own either.
            text.contains("strict rp_filter in force on br-\\x1b]0;pwn\\x07\\u{9b}31m X"),
            "{text}"
        );
        assert_eq!(
            r.to_json()["findings"][0]["title"],
            format!("strict rp_filter in force on {name}")
        );
    }
}
