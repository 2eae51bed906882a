//! `iptables-save` dumps: their tables, chains and rules, and the routing mesh's DNAT rules
//! in them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub(super) use crate::kernel::iptables_save::arg;
use crate::kernel::iptables_save::{lines, Line};

/// One table of an `iptables-save` dump.
#[derive(Debug, Default, Clone)]
pub(super) struct Table {
    pub(super) policies: BTreeMap<String, String>,
    pub(super) chains: BTreeSet<String>,
    /// (chain, the rule after `-A CHAIN`).
    pub(super) rules: Vec<(String, String)>,
}

pub(super) fn parse_iptables_save(text: &str) -> BTreeMap<String, Table> {
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    let mut cur: Option<&str> = None;
    for line in lines(text, usize::MAX) {
        match line {
            Line::Table(t) => {
                cur = t;
                if let Some(t) = t {
                    tables.entry(t.to_owned()).or_default();
                }
            }
            Line::Commit => cur = None,
            Line::Chain { name, policy } => {
                let Some(t) = cur.and_then(|t| tables.get_mut(t)) else {
                    continue;
                };
                t.chains.insert(name.to_owned());
                if let Some(p) = policy {
                    t.policies.insert(name.to_owned(), p.to_owned());
                }
            }
            Line::Rule { chain, rule, .. } => {
                let Some(t) = cur.and_then(|t| tables.get_mut(t)) else {
                    continue;
                };
                t.chains.insert(chain.to_owned());
                t.rules.push((chain.to_owned(), rule.to_owned()));
            }
        }
    }
    tables
}

pub(super) fn jumps_to(rule: &str) -> Option<&str> {
    arg(rule, "-j").or_else(|| arg(rule, "-g"))
}

pub(super) fn protocol(rule: &str) -> String {
    arg(rule, "-p").unwrap_or("tcp").to_owned()
}

/// A DNAT rule of the nat table's DOCKER-INGRESS chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IngressDnat {
    pub(super) protocol: String,
    pub(super) dport: u16,
    pub(super) to: Option<IpAddr>,
    pub(super) to_port: u16,
}

fn ingress_dnats(nat: &Table) -> Vec<IngressDnat> {
    nat.rules
        .iter()
        .filter(|(c, r)| c == "DOCKER-INGRESS" && jumps_to(r) == Some("DNAT"))
        .filter_map(|(_, r)| {
            let dport: u16 = arg(r, "--dport")?.parse().ok()?;
            let dest = arg(r, "--to-destination").unwrap_or("");
            let (ip, port) = match dest.rsplit_once(':') {
                Some((ip, port)) if !ip.contains(':') || ip.ends_with(']') => (
                    ip.trim_matches(['[', ']']).parse().ok(),
                    port.parse().unwrap_or(dport),
                ),
                _ => (dest.parse().ok(), dport),
            };
            Some(IngressDnat {
                protocol: protocol(r),
                dport,
                to: ip,
                to_port: port,
            })
        })
        .collect()
}

/// Whether `chain` of `table` is reached from `from` through jumps.
pub(super) fn reaches(t: &Table, from: &str, chain: &str) -> bool {
    reachable(t, from).contains(chain)
}

/// The chains `from` reaches by jumps (itself included): one pass over the rules for the
/// jumps, then a walk of them, so that a table of many rules costs time linear in its size.
pub(super) fn reachable<'a>(t: &'a Table, from: &'a str) -> BTreeSet<&'a str> {
    let mut jumps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (c, r) in &t.rules {
        if let Some(j) = jumps_to(r).filter(|j| t.chains.contains(*j)) {
            jumps.entry(c.as_str()).or_default().push(j);
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![from];
    while let Some(c) = todo.pop() {
        if seen.insert(c) {
            todo.extend(jumps.get(c).into_iter().flatten().copied());
        }
    }
    seen
}

pub(super) struct Backend {
    pub(super) name: String,
    pub(super) tables: BTreeMap<String, Table>,
}

impl Backend {
    pub(super) fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    pub(super) fn dnats(&self) -> Vec<IngressDnat> {
        self.table("nat").map(ingress_dnats).unwrap_or_default()
    }

    pub(super) fn prerouting_jump(&self) -> bool {
        self.table("nat")
            .is_some_and(|t| reaches(t, "PREROUTING", "DOCKER-INGRESS"))
    }

    /// The filter table lets a forwarded packet to `port` through: FORWARD reaches
    /// DOCKER-INGRESS, which accepts the port, or FORWARD's policy is ACCEPT.
    pub(super) fn forward_accepts(&self, proto: &str, port: u16) -> bool {
        let Some(t) = self.table("filter") else {
            return true;
        };
        let accepted = t.rules.iter().any(|(c, r)| {
            c == "DOCKER-INGRESS"
                && jumps_to(r) == Some("ACCEPT")
                && protocol(r) == proto
                && arg(r, "--dport").and_then(|p| p.parse::<u16>().ok()) == Some(port)
        });
        (accepted && reaches(t, "FORWARD", "DOCKER-INGRESS"))
            || t.policies.get("FORWARD").is_none_or(|p| p == "ACCEPT")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fake::*;

    #[test]
    fn parses_iptables_save() {
        let t = parse_iptables_save(&fixture("doctor/swarm-node.iptables-save"));
        assert_eq!(t.keys().collect::<Vec<_>>(), ["filter", "mangle", "nat"]);
        assert_eq!(t["filter"].policies["FORWARD"], "DROP");
        assert!(!t["filter"].policies.contains_key("DOCKER"));
        let d = ingress_dnats(&t["nat"]);
        assert_eq!(
            d,
            [
                IngressDnat {
                    protocol: "tcp".into(),
                    dport: 443,
                    to: Some("172.18.0.2".parse().unwrap()),
                    to_port: 443
                },
                IngressDnat {
                    protocol: "tcp".into(),
                    dport: 8080,
                    to: Some("172.18.0.2".parse().unwrap()),
                    to_port: 8080
                },
            ]
        );
        assert!(reaches(&t["nat"], "PREROUTING", "DOCKER-INGRESS"));
        assert!(reaches(&t["filter"], "FORWARD", "DOCKER-INGRESS"));
        assert!(!reaches(&t["filter"], "INPUT", "DOCKER-INGRESS"));
        // `iptables-save -c` counters, a DNAT without a port, the lab's shape.
        let t = parse_iptables_save(
            "*nat\n:PREROUTING ACCEPT [5:300]\n[83361:5932124] -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n[0:0] -A DOCKER-INGRESS -p udp -m udp --dport 53 -j DNAT --to-destination 172.18.0.2\n-A DOCKER-INGRESS -d 10.10.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:18080\nCOMMIT\n",
        );
        let d = ingress_dnats(&t["nat"]);
        assert_eq!(
            (d[0].protocol.as_str(), d[0].dport, d[0].to_port),
            ("udp", 53, 53)
        );
        assert_eq!((d[1].dport, d[1].to_port), (8080, 18080));
        assert!(reaches(&t["nat"], "PREROUTING", "DOCKER-INGRESS"));
    }
}
