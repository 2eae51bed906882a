//! Native nftables rules (`nft -j list ruleset`): the chains on the input hook and what they
//! do with a port, for the firewalls iptables-save does not show (firewalld's nftables
//! backend, an `nftables.conf`). Only what can be read for certain is judged: a rule that
//! matches `udp dport` / `tcp dport` (a port, a range, an anonymous set or a named set with
//! its elements) and ends in a verdict; a negated port match or a set without elements is
//! not judged, and a chain counts as closed to what it does not accept only by a drop policy
//! or a drop/reject rule with no condition at all (a rate limit is one). Tables of the `ip`
//! and `inet` families (IPv4, as iptables-save's). The text is the host's (another root
//! user's rules): every field is optional and every walk is bounded by the ruleset's own size.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What a rule ends in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Accept,
    /// `drop` or `reject`.
    Refuse(&'static str),
    Jump(String),
    /// Anything else (`return`, `continue`, a counter alone, ...): not a decision here.
    Other,
}

/// A port match of a rule: the protocol and the ports (inclusive ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ports {
    pub(super) proto: String,
    pub(super) ranges: Vec<(u16, u16)>,
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    /// The rule's `dport` match, when it has one that can be read.
    pub(super) ports: Option<Ports>,
    /// It matches on something else too (an address, an interface, a state, a negated port):
    /// it does not decide for every packet.
    pub(super) conditional: bool,
    pub(super) verdict: Verdict,
    /// `handle N` and a short text of what was read, to quote.
    pub(super) text: String,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Chain {
    pub(super) hook: Option<String>,
    pub(super) policy: Option<String>,
    pub(super) rules: Vec<Rule>,
}

/// The native tables: (family, table) -> chain name -> chain.
#[derive(Debug, Clone, Default)]
pub(super) struct Nft {
    pub(super) tables: BTreeMap<(String, String), BTreeMap<String, Chain>>,
}

/// Statements that never decide which packets reach the verdict.
const NEUTRAL: [&str; 3] = ["counter", "log", "comment"];

/// The families whose input hook sees the nodes' IPv4 datagrams (iptables-save, beside, is
/// IPv4's too).
const FAMILIES: [&str; 2] = ["ip", "inet"];

/// The tables iptables-nft makes (read already through `iptables-nft-save`).
const IPTABLES_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// Parses `nft -j list ruleset`. `skip_iptables`: leave out the ip/ip6 tables iptables-nft
/// owns (their rules were read from iptables-nft-save).
pub(super) fn parse(json: &str, skip_iptables: bool) -> Result<Nft, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not nft's JSON: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" list")?;
    let s = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let skipped = |family: &str, table: &str| {
        skip_iptables && matches!(family, "ip" | "ip6") && IPTABLES_TABLES.contains(&table)
    };
    // Named sets' elements first: rules refer to them by name.
    let mut sets: BTreeMap<(String, String, String), Vec<(u16, u16)>> = BTreeMap::new();
    for set in items.iter().filter_map(|i| i.get("set")) {
        let (Some(f), Some(t), Some(n)) = (s(set, "family"), s(set, "table"), s(set, "name"))
        else {
            continue;
        };
        if let Some(ranges) = set.get("elem").and_then(port_ranges) {
            sets.insert((f, t, n), ranges);
        }
    }
    let mut nft = Nft::default();
    for item in items {
        if let Some(c) = item.get("chain") {
            let (Some(f), Some(t), Some(n)) = (s(c, "family"), s(c, "table"), s(c, "name")) else {
                continue;
            };
            if skipped(&f, &t) {
                continue;
            }
            let chain = nft.tables.entry((f, t)).or_default().entry(n).or_default();
            chain.hook = s(c, "hook");
            chain.policy = s(c, "policy");
        } else if let Some(r) = item.get("rule") {
            let (Some(f), Some(t), Some(n)) = (s(r, "family"), s(r, "table"), s(r, "chain")) else {
                continue;
            };
            if skipped(&f, &t) {
                continue;
            }
            let rule = read_rule(r, |name| sets.get(&(f.clone(), t.clone(), name.to_owned())));
            nft.tables
                .entry((f, t))
                .or_default()
                .entry(n)
                .or_default()
                .rules
                .push(rule);
        }
    }
    Ok(nft)
}

fn read_rule<'a>(r: &Value, set: impl Fn(&str) -> Option<&'a Vec<(u16, u16)>>) -> Rule {
    let mut ports = None;
    let mut conditional = false;
    let mut verdict = Verdict::Other;
    let mut said = Vec::new();
    for e in r
        .get("expr")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(m) = e.get("match") {
            match port_match(m, &set) {
                Some(p) if ports.is_none() => {
                    said.push(format!("{} dport {}", p.proto, show(&p.ranges)));
                    ports = Some(p);
                }
                _ => {
                    conditional = true;
                    said.push("(a match)".to_owned());
                }
            }
        } else if e.get("accept").is_some() {
            verdict = Verdict::Accept;
        } else if e.get("drop").is_some() {
            verdict = Verdict::Refuse("drop");
        } else if e.get("reject").is_some() {
            verdict = Verdict::Refuse("reject");
        } else if let Some(j) = e.get("jump").or_else(|| e.get("goto")) {
            if let Some(t) = j.get("target").and_then(Value::as_str) {
                verdict = Verdict::Jump(t.to_owned());
            }
        } else if !NEUTRAL.iter().any(|k| e.get(k).is_some()) {
            // A statement that may decide which packets go on (`limit`, `quota`, a set
            // update, ...): the rule is not judged as one for every packet.
            conditional = true;
        }
    }
    said.push(match &verdict {
        Verdict::Accept => "accept".to_owned(),
        Verdict::Refuse(v) => (*v).to_owned(),
        Verdict::Jump(t) => format!("jump {t}"),
        Verdict::Other => "(no verdict)".to_owned(),
    });
    let handle = r.get("handle").and_then(Value::as_u64).unwrap_or(0);
    Rule {
        ports,
        conditional,
        verdict,
        text: format!("handle {handle}: {}", said.join(" ")),
    }
}

/// `udp dport` / `tcp dport` (or `th dport` after `meta l4proto`, which nft prints the same)
/// `==` or `in` a port, a range, an anonymous set or a named set with elements.
fn port_match<'a>(m: &Value, set: &impl Fn(&str) -> Option<&'a Vec<(u16, u16)>>) -> Option<Ports> {
    let op = m.get("op").and_then(Value::as_str)?;
    if op != "==" && op != "in" {
        return None;
    }
    let payload = m.get("left")?.get("payload")?;
    if payload.get("field").and_then(Value::as_str) != Some("dport") {
        return None;
    }
    let proto = payload.get("protocol").and_then(Value::as_str)?;
    if proto != "udp" && proto != "tcp" {
        return None;
    }
    let right = m.get("right")?;
    let ranges = match right.as_str() {
        Some(name) => set(name.strip_prefix('@')?)?.clone(),
        None => port_ranges(right)?,
    };
    Some(Ports {
        proto: proto.to_owned(),
        ranges,
    })
}

/// A port, `{"range": [a, b]}`, `{"set": [...]}` or a list of those; None when any part is
/// something else (a concatenation, a variable): not judged rather than half read.
fn port_ranges(v: &Value) -> Option<Vec<(u16, u16)>> {
    let one = |v: &Value| -> Option<Vec<(u16, u16)>> {
        if let Some(p) = v.as_u64() {
            let p = u16::try_from(p).ok()?;
            return Some(vec![(p, p)]);
        }
        let r = v.get("range")?.as_array()?;
        let lo = u16::try_from(r.first()?.as_u64()?).ok()?;
        let hi = u16::try_from(r.get(1)?.as_u64()?).ok()?;
        Some(vec![(lo, hi)])
    };
    let list = v
        .get("set")
        .and_then(Value::as_array)
        .or_else(|| v.as_array());
    match list {
        Some(items) => {
            let mut all = Vec::new();
            for i in items {
                // Set elements may come wrapped: {"elem": {"val": 4789, ...}}.
                let i = i.get("elem").and_then(|e| e.get("val")).unwrap_or(i);
                all.extend(one(i)?);
            }
            Some(all)
        }
        None => one(v),
    }
}

fn show(ranges: &[(u16, u16)]) -> String {
    let items: Vec<String> = ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    if items.len() == 1 {
        items.concat()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

/// What the input hook's chains do with `proto` packets to `port`.
#[derive(Debug, Default)]
pub(super) struct Judged {
    /// Rules that drop or reject it, quoted.
    pub(super) refused: Vec<String>,
    /// A rule accepts it by name.
    pub(super) accepted: bool,
}

/// The rules the input hook runs, found once for every port asked: each with where it is
/// (`nft FAMILY TABLE CHAIN`), and the chains closed to what they do not accept.
pub(super) struct Input<'a> {
    rules: Vec<(String, &'a Rule)>,
    /// Chains that refuse what they do not accept (a drop policy, or an unconditional drop or
    /// reject as firewalld ends its input chain), named: the same for every port.
    pub(super) closed: Vec<String>,
}

impl Nft {
    /// The chains the input hook reaches (its base chains and the chains they jump or go to,
    /// within their table), in the `ip` and `inet` tables.
    pub(super) fn input(&self) -> Input<'_> {
        let mut input = Input {
            rules: Vec::new(),
            closed: Vec::new(),
        };
        for ((family, table), chains) in &self.tables {
            if !FAMILIES.contains(&family.as_str()) {
                continue;
            }
            for name in reached_from_input(chains) {
                let Some(chain) = chains.get(name) else {
                    continue;
                };
                let at = format!("nft {family} {table} {name}");
                if chain.hook.is_some() && chain.policy.as_deref() == Some("drop") {
                    input.closed.push(format!("{at}: policy drop"));
                }
                for r in &chain.rules {
                    if matches!(r.verdict, Verdict::Refuse(_))
                        && r.ports.is_none()
                        && !r.conditional
                    {
                        input.closed.push(format!("{at} {}", r.text));
                    }
                    input.rules.push((at.clone(), r));
                }
            }
        }
        input
    }

    /// [`Nft::input`], then [`Input::judge`].
    #[cfg(test)]
    fn judge(&self, proto: &str, port: u16) -> Judged {
        self.input().judge(proto, port)
    }
}

impl Input<'_> {
    /// What these rules do with `proto` packets to `port`.
    pub(super) fn judge(&self, proto: &str, port: u16) -> Judged {
        let mut j = Judged::default();
        for (at, r) in &self.rules {
            let named = r.ports.as_ref().is_some_and(|p| {
                p.proto == proto && p.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
            });
            match (&r.verdict, named) {
                (Verdict::Refuse(_), true) => j.refused.push(format!("{at} {}", r.text)),
                (Verdict::Accept, true) => j.accepted = true,
                _ => {}
            }
        }
        j
    }
}

/// The chains of one table that the input hook runs: its base chains on `input` and every
/// chain reached from them by jump or goto (each once).
fn reached_from_input(chains: &BTreeMap<String, Chain>) -> BTreeSet<&str> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = chains
        .iter()
        .filter(|(_, c)| c.hook.as_deref() == Some("input"))
        .map(|(n, _)| n.as_str())
        .collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name) {
            continue;
        }
        for r in chains.get(name).map(|c| c.rules.as_slice()).unwrap_or(&[]) {
            if let Verdict::Jump(t) = &r.verdict {
                if let Some((k, _)) = chains.get_key_value(t.as_str()) {
                    todo.push(k.as_str());
                }
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fake::fixture;

    #[test]
    fn reads_firewalld_style_input_chains() {
        let nft = parse(&fixture("doctor/firewalld.nft.json"), true).unwrap();
        // The iptables-nft table is left to iptables-save's reading.
        assert!(nft.tables.keys().all(|(_, t)| t != "filter"), "{nft:#?}");
        // 4789/udp: accepted by name in the zone's chain reached by jump then goto.
        let j = nft.judge("udp", 4789);
        assert!(j.accepted, "{j:?}");
        assert!(j.refused.is_empty(), "{j:?}");
        // The input chain ends in an unconditional reject: what nothing accepts is refused.
        let closed = nft.input().closed;
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert!(closed[0].contains("filter_INPUT") && closed[0].contains("reject"));
        // 7946/tcp: not accepted, so only the closing reject applies.
        let j = nft.judge("tcp", 7946);
        assert!(!j.accepted && j.refused.is_empty(), "{j:?}");
        // 7946/udp: a named set's elements.
        let j = nft.judge("udp", 7946);
        assert_eq!(
            j.refused,
            ["nft inet firewalld filter_IN_public_deny handle 20: udp dport { 7946, 7947 } drop"]
        );
    }

    #[test]
    fn a_drop_rule_and_a_drop_policy_are_read() {
        let json = r#"{"nftables": [
          {"chain": {"family": "inet", "table": "t", "name": "in", "hook": "input", "policy": "drop"}},
          {"chain": {"family": "inet", "table": "t", "name": "out", "hook": "output", "policy": "drop"}},
          {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 3, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": {"range": [4000, 5000]}}},
            {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}},
          {"rule": {"family": "inet", "table": "t", "chain": "in", "handle": 4, "expr": [
            {"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 7946}},
            {"drop": null}]}},
          {"rule": {"family": "inet", "table": "t", "chain": "out", "handle": 5, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 7946}},
            {"drop": null}]}}
        ]}"#;
        let nft = parse(json, true).unwrap();
        let j = nft.judge("udp", 4789);
        assert_eq!(
            j.refused,
            ["nft inet t in handle 3: udp dport 4000-5000 drop"]
        );
        assert_eq!(nft.input().closed, ["nft inet t in: policy drop"]);
        // A negated match is not judged, and the output hook's chain is not input's.
        let j = nft.judge("tcp", 7946);
        assert!(j.refused.is_empty() && !j.accepted, "{j:?}");
        // A rate limit decides which packets are dropped: not a chain closed to all; an arp
        // or ip6 table's input is not IPv4's.
        let json = r#"{"nftables": [
          {"chain": {"family": "inet", "table": "t", "name": "in", "hook": "input"}},
          {"rule": {"family": "inet", "table": "t", "chain": "in", "expr": [
            {"limit": {"rate": 10, "per": "second", "inv": true}}, {"counter": null}, {"drop": null}]}},
          {"chain": {"family": "arp", "table": "a", "name": "in", "hook": "input", "policy": "drop"}},
          {"chain": {"family": "ip6", "table": "b", "name": "in", "hook": "input", "policy": "drop"}}
        ]}"#;
        let closed = parse(json, true).unwrap().input().closed;
        assert!(closed.is_empty(), "{closed:?}");
    }

    #[test]
    fn hostile_or_odd_json_is_refused_or_ignored_never_a_panic() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"nftables": 3}"#,
            "{\"nftables\": [",
            "null",
        ] {
            assert!(parse(bad, true).is_err(), "{bad}");
        }
        // Fields of the wrong kinds, ports out of range, loops of jumps, unknown sets.
        let json = r#"{"nftables": [
          {"chain": {"family": 1, "table": "t", "name": "x"}},
          {"chain": {"family": "inet", "table": "t", "name": "a", "hook": "input"}},
          {"chain": {"family": "inet", "table": "t", "name": "b"}},
          {"rule": {"family": "inet", "table": "t", "chain": "a", "expr": [{"jump": {"target": "b"}}]}},
          {"rule": {"family": "inet", "table": "t", "chain": "b", "expr": [{"goto": {"target": "a"}}]}},
          {"rule": {"family": "inet", "table": "t", "chain": "b", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 70000}},
            {"drop": null}]}},
          {"rule": {"family": "inet", "table": "t", "chain": "b", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": "@nope"}},
            {"drop": null}]}},
          {"rule": {"family": "inet", "table": "t", "chain": "b", "expr": "drop"}},
          {"rule": {"family": "inet", "table": "t", "chain": "b"}}
        ]}"#;
        let nft = parse(json, true).unwrap();
        let j = nft.judge("udp", 4789);
        assert!(j.refused.is_empty() && !j.accepted, "{j:?}");
        assert!(nft.input().closed.is_empty());
    }

    #[test]
    fn a_chain_reached_from_many_rules_is_walked_once() {
        // 2 000 chains, each jumping to every one of the 10 before it: reached once each.
        let mut items = vec![
            r#"{"chain": {"family": "inet", "table": "t", "name": "c0", "hook": "input"}}"#
                .to_owned(),
        ];
        for i in 1..2000 {
            items.push(format!(
                r#"{{"chain": {{"family": "inet", "table": "t", "name": "c{i}"}}}}"#
            ));
        }
        for i in 0..1999 {
            for k in 1..=10 {
                let to = (i + k).min(1999);
                items.push(format!(r#"{{"rule": {{"family": "inet", "table": "t", "chain": "c{i}", "expr": [{{"jump": {{"target": "c{to}"}}}}]}}}}"#));
            }
        }
        items.push(r#"{"rule": {"family": "inet", "table": "t", "chain": "c1999", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 4789}}, {"drop": null}]}}"#.to_owned());
        let json = format!(r#"{{"nftables": [{}]}}"#, items.join(","));
        let t = std::time::Instant::now();
        let nft = parse(&json, true).unwrap();
        let j = nft.judge("udp", 4789);
        assert_eq!(j.refused.len(), 1, "{j:?}");
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }
}
