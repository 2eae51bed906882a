//! `swarmtrace join`: several nodes' `run --json` streams (`docker service logs --raw -f` of
//! the global service of `deploy/`, or files) joined live. In a Swarm the SYN enters on one
//! node and its task often runs on another, behind the routing mesh's SNAT: the node where the
//! client is known is not the node where the drop happens. Each node's lines carry the kernel
//! keys of their handshakes (ISN and the SYNs' TSvals, which survive every NAT hop and the
//! ingress overlay), so the same SYN is recognised on every node that saw it.
//!
//! As lines arrive: a `joined` record each time a key seen on two nodes or more gets a drop or
//! a verdict, naming the real client (the first client address any node saw for that key:
//! the node where the SYN entered the mesh knows it before SNAT) and each node's view. When a
//! node's `summary` arrives, its verdicts again, charged to the real clients behind the
//! addresses that node saw. Every table is bounded: keys (oldest forgotten first), nodes,
//! views per key, the real clients behind one address, the length of a line.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, Read, Write};
use std::sync::mpsc;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::cli::JoinArgs;
use crate::escape;

/// A line longer than this is skipped (a `summary` is bounded well below it).
const MAX_LINE: usize = 1 << 20;
/// Nodes told apart; the others' lines count as `other nodes`.
const MAX_NODES: usize = 256;
/// Views kept per key (a SYN crosses a handful of nodes at most).
const MAX_VIEWS: usize = 8;
/// `joined` records per key (each new view of it makes one).
const MAX_PRINTS: u8 = 4;
/// Real clients kept behind one address a node saw (an SNAT address hides many).
const MAX_REAL: usize = 16;
/// Addresses a node saw that are kept with their real clients.
const MAX_SEEN: usize = 65_536;

/// What one node saw of one key.
#[derive(Debug, Clone, Serialize)]
struct View {
    node: String,
    /// The client as this node saw it (after NAT on a later node), if it saw the SYN.
    client: Option<String>,
    service: Option<String>,
    /// The handshake's verdict on this node, once it reported it.
    verdict: Option<String>,
    first_hop: Option<String>,
    latency_us: Option<u64>,
    drops: Vec<DropView>,
}

#[derive(Debug, Clone, Serialize)]
struct DropView {
    packet: String,
    reason: String,
    location: String,
    netns_name: Option<String>,
    /// The packet's source where it was dropped.
    src: Option<String>,
}

#[derive(Default)]
struct Entry {
    views: Vec<View>,
    printed: u8,
}

#[derive(Serialize)]
struct Joined<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    isn: u32,
    tsval: u32,
    /// The real client: the first client address a node saw for this key.
    client: Option<&'a str>,
    client_node: Option<&'a str>,
    service: Option<&'a str>,
    nodes: &'a [View],
}

#[derive(Default, Serialize)]
pub struct JoinStats {
    pub lines: u64,
    pub skipped: u64,
    pub keys: usize,
    pub joined: u64,
    pub forgotten: u64,
    pub nodes: usize,
}

/// The join's state: keys to the views of every node, in arrival order.
pub struct Joiner {
    entries: HashMap<(u32, u32), Entry>,
    order: VecDeque<(u32, u32)>,
    max_keys: usize,
    nodes: HashSet<String>,
    /// (node, address it saw) -> the real clients behind it.
    real: HashMap<(String, String), Vec<String>>,
    pending: Vec<Pending>,
    stats: JoinStats,
}

/// A node's summary waiting for [`SUMMARY_GRACE`].
struct Pending {
    node: String,
    verdicts: Vec<Value>,
    at: std::time::Instant,
}

/// How long a node's summary waits for the other nodes' lines before its verdicts are written.
pub const SUMMARY_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The view that knows the real client: one whose node saw the SYN come in (`first_hop`
/// `.../in`: on the node where it entered the mesh, before any NAT), else one whose node saw
/// the SYN itself on a watched interface (a first hop at all: the global service of deploy/
/// on a node without a default route watches docker_gwbridge only, where the SYN leaves
/// towards ingress_sbox before its SNAT), else one that saw a client at all; the first such to
/// arrive. A node behind the mesh's SNAT sees the SYN leave ingress_sbox or only its drop (no
/// first hop), with the SNAT address.
fn real_view(views: &[View]) -> Option<&View> {
    let came_in = |w: &&View| w.first_hop.as_deref().is_some_and(|h| h.ends_with("/in"));
    let saw_it = |w: &&View| w.first_hop.is_some();
    let with_client = || views.iter().filter(|w| w.client.is_some());
    with_client()
        .find(came_in)
        .or_else(|| with_client().find(saw_it))
        .or_else(|| with_client().next())
}

/// `ip` of `ip:port` / `[ip6]:port`.
fn ip_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            ip.trim_start_matches('[').trim_end_matches(']')
        }
        _ => addr,
    }
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

impl Joiner {
    pub fn new(max_keys: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            max_keys: max_keys.max(1),
            nodes: HashSet::new(),
            real: HashMap::new(),
            pending: Vec::new(),
            stats: JoinStats::default(),
        }
    }

    /// The node a line names (`fallback`, the input's name, for lines without one).
    fn node_of(&mut self, v: &Value, fallback: &str) -> String {
        let mut name = v
            .get("node")
            .and_then(Value::as_str)
            .unwrap_or(fallback)
            .to_owned();
        if name.len() > 255 {
            let mut end = 255;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name.truncate(end);
        }
        if self.nodes.contains(&name) {
            return name;
        }
        if self.nodes.len() >= MAX_NODES {
            return "other nodes".to_owned();
        }
        self.nodes.insert(name.clone());
        name
    }

    /// One line of a node's stream; what to print because of it.
    pub fn line(&mut self, line: &str, fallback_node: &str) -> Vec<Value> {
        self.stats.lines += 1;
        // `docker service logs` without --raw prefixes `task@node | `.
        let Some(v) = line
            .find('{')
            .and_then(|i| serde_json::from_str::<Value>(&line[i..]).ok())
        else {
            self.stats.skipped += 1;
            return Vec::new();
        };
        let node = self.node_of(&v, fallback_node);
        match v.get("type").and_then(Value::as_str) {
            Some("drop") => self.drop_line(&v, node),
            Some("handshake") => self.handshake_line(&v, node),
            Some("summary") => self.summary_line(&v, &node),
            _ => Vec::new(),
        }
    }

    fn drop_line(&mut self, v: &Value, node: String) -> Vec<Value> {
        let (Some(isn), tsval) = (
            v.get("isn").and_then(Value::as_u64),
            v.get("tsval").and_then(Value::as_u64).unwrap_or(0),
        ) else {
            self.stats.skipped += 1;
            return Vec::new();
        };
        let drop = DropView {
            packet: str_field(v, "packet").unwrap_or_default(),
            reason: str_field(v, "reason").unwrap_or_default(),
            location: str_field(v, "location").unwrap_or_default(),
            netns_name: str_field(v, "netns_name"),
            src: str_field(v, "src"),
        };
        let key = (isn as u32, tsval as u32);
        let client = str_field(v, "client");
        let service = str_field(v, "service");
        self.add(key, node, |view| {
            if view.client.is_none() {
                view.client = client.clone();
                view.service = service.clone();
            }
            if view.drops.len() < MAX_VIEWS {
                view.drops.push(drop.clone());
            }
        })
        .into_iter()
        .collect()
    }

    fn handshake_line(&mut self, v: &Value, node: String) -> Vec<Value> {
        let Some(isn) = v.get("isn").and_then(Value::as_u64) else {
            self.stats.skipped += 1;
            return Vec::new();
        };
        let tsvals: Vec<u32> = v
            .get("tsvals")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .take(MAX_VIEWS)
                    .map(|t| t as u32)
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for tsval in if tsvals.is_empty() { vec![0] } else { tsvals } {
            let (client, service) = (str_field(v, "client"), str_field(v, "service"));
            let verdict = str_field(v, "verdict");
            let first_hop = str_field(v, "first_hop");
            let latency = v.get("latency_us").and_then(Value::as_u64);
            out.extend(self.add((isn as u32, tsval), node.clone(), |view| {
                view.client = client.clone();
                view.service = service.clone();
                view.verdict = verdict.clone();
                view.first_hop = first_hop.clone();
                view.latency_us = latency;
            }));
        }
        out
    }

    /// Updates `node`'s view of `key`; a `joined` record when the key is now seen on two nodes
    /// or more.
    fn add(&mut self, key: (u32, u32), node: String, update: impl Fn(&mut View)) -> Option<Value> {
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.max_keys {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if self.entries.remove(&old).is_some() {
                    self.stats.forgotten += 1;
                }
            }
            self.order.push_back(key);
        }
        let entry = self.entries.entry(key).or_default();
        let i = match entry.views.iter().position(|w| w.node == node) {
            Some(i) => i,
            None if entry.views.len() < MAX_VIEWS => {
                entry.views.push(View {
                    node,
                    client: None,
                    service: None,
                    verdict: None,
                    first_hop: None,
                    latency_us: None,
                    drops: Vec::new(),
                });
                entry.views.len() - 1
            }
            None => return None,
        };
        update(&mut entry.views[i]);
        if entry.views.len() < 2 || entry.printed >= MAX_PRINTS {
            return None;
        }
        entry.printed += 1;
        let entry = &self.entries[&key];
        let real = real_view(&entry.views);
        let (client, client_node) = (
            real.and_then(|w| w.client.as_deref()),
            real.map(|w| w.node.as_str()),
        );
        // Remember which real clients each other node's address stands for, where that node
        // saw the handshake fail (its verdicts are about those).
        if let (Some(client), Some(client_node)) = (client, client_node) {
            let real_ip = ip_of(client).to_owned();
            let failed = |w: &&View| {
                !w.drops.is_empty() || w.verdict.as_deref().is_some_and(|v| v != "answered")
            };
            for w in entry
                .views
                .iter()
                .filter(|w| w.node != client_node)
                .filter(failed)
            {
                let seen = w
                    .client
                    .iter()
                    .chain(w.drops.iter().filter_map(|d| d.src.as_ref()))
                    .map(|a| ip_of(a).to_owned());
                for seen in seen.collect::<HashSet<_>>() {
                    if seen == real_ip {
                        continue;
                    }
                    let k = (w.node.clone(), seen);
                    if !self.real.contains_key(&k) && self.real.len() >= MAX_SEEN {
                        continue;
                    }
                    let reals = self.real.entry(k).or_default();
                    if !reals.contains(&real_ip) && reals.len() < MAX_REAL {
                        reals.push(real_ip.clone());
                    }
                }
            }
        }
        self.stats.joined += 1;
        let record = Joined {
            kind: "joined",
            isn: key.0,
            tsval: key.1,
            client,
            client_node,
            service: real.and_then(|w| w.service.as_deref()),
            nodes: &entry.views,
        };
        serde_json::to_value(&record).ok()
    }

    /// A node's summary is held [`SUMMARY_GRACE`] before its verdicts are written (the other
    /// nodes' lines about the same handshakes may still be on their way); at most one per node.
    fn summary_line(&mut self, v: &Value, node: &str) -> Vec<Value> {
        let verdicts: Vec<Value> = v
            .get("verdicts")
            .and_then(Value::as_array)
            .map(|a| a.iter().take(64).cloned().collect())
            .unwrap_or_default();
        self.pending.retain(|p| p.node != node);
        self.pending.push(Pending {
            node: node.to_owned(),
            verdicts,
            at: std::time::Instant::now(),
        });
        Vec::new()
    }

    /// The verdicts of the summaries held at least `grace` (all of them with zero).
    pub fn due(&mut self, grace: std::time::Duration) -> Vec<Value> {
        let (due, keep): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.at.elapsed() >= grace);
        self.pending = keep;
        due.iter()
            .flat_map(|p| self.verdicts(&p.verdicts, &p.node))
            .collect()
    }

    /// A node's verdicts, their clients replaced by the real clients behind them.
    fn verdicts(&self, verdicts: &[Value], node: &str) -> Vec<Value> {
        verdicts
            .iter()
            .map(|verdict| {
                let seen: Vec<&str> = verdict
                    .get("clients")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .take(1000)
                    .collect();
                let mut real: Vec<String> = Vec::new();
                for s in &seen {
                    match self.real.get(&(node.to_owned(), ip_of(s).to_owned())) {
                        Some(r) => real.extend(r.iter().cloned()),
                        None => real.push((*s).to_owned()),
                    }
                }
                real.sort();
                real.dedup();
                serde_json::json!({
                    "type": "verdict",
                    "node": node,
                    "cause": verdict.get("cause"),
                    "count": verdict.get("count"),
                    "clients": real,
                    "seen_as": seen,
                    "services": verdict.get("services"),
                    "explanation": verdict.get("explanation"),
                    "confirm": verdict.get("confirm"),
                    "fix": verdict.get("fix"),
                })
            })
            .collect()
    }

    pub fn stats(&self) -> JoinStats {
        JoinStats {
            keys: self.entries.len(),
            nodes: self.nodes.len(),
            ..self.stats
        }
    }
}

/// A record as one text line, names escaped for the terminal.
pub fn text(v: &Value) -> String {
    let s = |v: &Value| escape::terminal(v.as_str().unwrap_or("?")).into_owned();
    match v["type"].as_str() {
        Some("joined") => {
            let nodes: Vec<String> = v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    let drops: Vec<String> = n["drops"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|d| {
                            format!(
                                "{} {} at {} in {}",
                                s(&d["packet"]),
                                s(&d["reason"]),
                                s(&d["location"]),
                                s(&d["netns_name"])
                            )
                        })
                        .collect();
                    let mut t = format!("[{}]", s(&n["node"]));
                    if let Some(c) = n["client"].as_str() {
                        t.push_str(&format!(" saw {}", escape::terminal(c)));
                    }
                    if let Some(h) = n["first_hop"].as_str() {
                        t.push_str(&format!(" at {}", escape::terminal(h)));
                    }
                    if let Some(verdict) = n["verdict"].as_str() {
                        t.push_str(&format!(": {}", escape::terminal(verdict)));
                    }
                    if !drops.is_empty() {
                        t.push_str(&format!(", dropped {}", drops.join(", ")));
                    }
                    t
                })
                .collect();
            format!(
                "ISN {} TSval {}: client {} (real, seen on {}) -> {}: {}",
                v["isn"],
                v["tsval"],
                s(&v["client"]),
                s(&v["client_node"]),
                s(&v["service"]),
                nodes.join("; ")
            )
        }
        Some("verdict") => format!(
            "verdict on [{}]: {} for {} (seen there as {}): {} Fix: {}",
            s(&v["node"]),
            s(&v["cause"]),
            v["clients"]
                .as_array()
                .map(|c| c.iter().map(s).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            v["seen_as"]
                .as_array()
                .map(|c| c.iter().map(s).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            s(&v["explanation"]),
            s(&v["fix"])
        ),
        _ => escape::terminal(&v.to_string()).into_owned(),
    }
}

/// Reads one input into `tx` line by line, skipping (and counting as skipped) lines longer
/// than [`MAX_LINE`].
fn read_input(name: String, mut r: impl BufRead, tx: mpsc::SyncSender<(String, Option<String>)>) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match r
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let line = if n > MAX_LINE {
            // The rest of the long line, thrown away.
            let mut sink = Vec::new();
            let _ = r.read_until(b'\n', &mut sink);
            None
        } else {
            Some(String::from_utf8_lossy(&buf).into_owned())
        };
        if tx.send((name.clone(), line)).is_err() {
            break;
        }
    }
}

pub fn join(args: JoinArgs) -> Result<()> {
    let inputs = if args.inputs.is_empty() {
        vec!["-".to_owned()]
    } else {
        args.inputs.clone()
    };
    let (tx, rx) = mpsc::sync_channel(1024);
    for name in inputs {
        let tx = tx.clone();
        if name == "-" {
            std::thread::spawn(move || read_input(name, std::io::stdin().lock(), tx));
        } else {
            let f = std::fs::File::open(&name).with_context(|| format!("cannot open {name}"))?;
            std::thread::spawn(move || read_input(name, std::io::BufReader::new(f), tx));
        }
    }
    drop(tx);
    let mut joiner = Joiner::new(args.max_handshakes as usize);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let write = |out: &mut std::io::StdoutLock, recs: Vec<Value>| -> Result<()> {
        for rec in recs {
            if args.json {
                serde_json::to_writer(&mut *out, &rec)?;
                out.write_all(b"\n")?;
            } else {
                writeln!(out, "{}", text(&rec))?;
            }
        }
        out.flush()?;
        Ok(())
    };
    loop {
        let recs = match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok((input, Some(line))) => joiner.line(&line, &input),
            Ok((_, None)) => {
                joiner.stats.lines += 1;
                joiner.stats.skipped += 1;
                Vec::new()
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        write(&mut out, recs)?;
        let due = joiner.due(SUMMARY_GRACE);
        write(&mut out, due)?;
    }
    let rest = joiner.due(std::time::Duration::ZERO);
    write(&mut out, rest)?;
    let stats = joiner.stats();
    if args.json {
        let mut v = serde_json::to_value(&stats)?;
        v["type"] = "join-summary".into();
        serde_json::to_writer(&mut out, &v)?;
        out.write_all(b"\n")?;
    } else {
        writeln!(
            out,
            "join: {} lines from {} nodes, {} skipped; {} keys kept, {} joined records, {} keys forgotten beyond {}",
            stats.lines, stats.nodes, stats.skipped, stats.keys, stats.joined, stats.forgotten, args.max_handshakes
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Node 1 saw the real client before SNAT; node 2 saw only the SNAT address and dropped it.
    const N1: &str = r#"{"type":"handshake","ts":"2026-12-04T05:56:59.633031Z","verdict":"unanswered","client":"192.168.100.3:40000","service":"192.168.100.1:8083","latency_us":null,"reason":null,"netns_name":null,"isn":77,"syns":2,"first_hop":"lan0/in","last_hop":null,"answer_hop":null,"tsvals":[1000,2000],"node":"n1"}"#;
    const N2: &str = r#"{"type":"drop","ts":"2026-12-04T05:56:59.6Z","packet":"SYN","reason":"TCP_RFC7323_TW_PAWS","location":"tcp_v4_rcv+0x1","netns":9,"netns_name":"container paws.1","ifname":"eth0","src":"10.0.0.2:40000","dst":"10.0.0.9:80","isn":77,"tsval":2000,"client":null,"service":null,"node":"n2"}"#;
    const S2: &str = r#"{"type":"summary","verdicts":[{"cause":"paws-timestamps","count":1,"clients":["10.0.0.2"],"services":["10.0.0.9:80"],"explanation":"e","confirm":"c","fix":"f"}],"node":"n2"}"#;

    #[test]
    fn a_drop_on_one_node_is_charged_to_the_client_another_node_saw() {
        let mut j = Joiner::new(100);
        assert!(j.line(N1, "a").is_empty(), "one node: nothing joined yet");
        let out = j.line(&format!("paws_st.abc@n2    | {N2}"), "b");
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(r["type"], "joined");
        assert_eq!(r["client"], "192.168.100.3:40000");
        assert_eq!(r["client_node"], "n1");
        assert_eq!(r["tsval"], 2000);
        assert_eq!(r["nodes"][1]["drops"][0]["reason"], "TCP_RFC7323_TW_PAWS");
        let t = text(r);
        assert!(
            t.contains("client 192.168.100.3:40000 (real, seen on n1)"),
            "{t}"
        );
        assert!(t.contains("[n2], dropped SYN TCP_RFC7323_TW_PAWS"), "{t}");
        // Node 2's verdict names the SNAT address; the join names the real client.
        assert!(
            j.line(S2, "b").is_empty(),
            "held for the other nodes' lines"
        );
        assert!(j.due(SUMMARY_GRACE).is_empty());
        let v = j.due(std::time::Duration::ZERO);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["clients"], serde_json::json!(["192.168.100.3"]));
        assert_eq!(v[0]["seen_as"], serde_json::json!(["10.0.0.2"]));
        assert!(text(&v[0]).contains("paws-timestamps for 192.168.100.3 (seen there as 10.0.0.2)"));
    }

    #[test]
    fn the_real_client_is_the_one_seen_coming_in_whatever_arrives_first() {
        // Node 2 saw the SYN leave ingress_sbox, SNATed, and its lines arrive first.
        let n2 = N2
            .replace(r#""client":null"#, r#""client":"10.0.0.2:40000""#)
            .replace(r#""service":null"#, r#""service":"10.0.0.9:80""#);
        let mut j = Joiner::new(100);
        assert!(j.line(&n2, "b").is_empty());
        let out = j.line(N1, "a");
        assert_eq!(out[0]["client"], "192.168.100.3:40000");
        assert_eq!(out[0]["client_node"], "n1");
        j.line(S2, "b");
        let v = j.due(std::time::Duration::ZERO);
        assert_eq!(v[0]["clients"], serde_json::json!(["192.168.100.3"]));
    }

    #[test]
    fn a_node_that_saw_the_syn_itself_beats_one_that_knew_it_only_from_its_drop() {
        // The global service of deploy/ watches its defaults: node 1 without a default route
        // sees the SYN only on docker_gwbridge (out, towards ingress_sbox, before its SNAT);
        // node 2's handshake line (the SNAT address, known from the drop alone: no first hop)
        // arrives first.
        let n2 = r#"{"type":"handshake","verdict":"dropped","client":"10.0.0.2:40001","service":"10.0.0.9:80","isn":77,"syns":1,"first_hop":null,"tsvals":[2000],"node":"n2"}"#;
        let n1 = N1.replace(
            r#""first_hop":"lan0/in""#,
            r#""first_hop":"docker_gwbridge/out""#,
        );
        let mut j = Joiner::new(100);
        assert!(j.line(N2, "b").is_empty());
        assert!(j.line(n2, "b").is_empty());
        let out = j.line(&n1, "a");
        assert_eq!(out[0]["client"], "192.168.100.3:40000", "{}", out[0]);
        assert_eq!(out[0]["client_node"], "n1");
        j.line(S2, "b");
        let v = j.due(std::time::Duration::ZERO);
        assert_eq!(v[0]["clients"], serde_json::json!(["192.168.100.3"]));
    }

    #[test]
    fn tables_stay_bounded_whatever_the_input() {
        let mut j = Joiner::new(1000);
        for i in 0..20_000u32 {
            let line = format!(
                r#"{{"type":"drop","packet":"SYN","reason":"R","location":"l","isn":{i},"tsval":1,"src":"10.{}.{}.1:1","node":"n{}"}}"#,
                i >> 8 & 255,
                i & 255,
                i % 1000
            );
            j.line(&line, "x");
        }
        let s = j.stats();
        assert!(s.keys <= 1000, "{}", s.keys);
        assert_eq!(s.forgotten, 19_000);
        assert!(s.nodes <= MAX_NODES);
        // Garbage and a hostile name are handled, not trusted.
        assert!(j.line("not json {", "x").is_empty());
        let hostile = N2.replace("\"n2\"", "\"n2\\u001b[2J\"");
        j.line(N1, "a");
        let out = j.line(&hostile, "b");
        assert!(!text(&out[0]).contains('\u{1b}'));
    }
}
