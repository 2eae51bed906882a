//! The ports a swarm's nodes talk on, in this host's INPUT chain (iptables) and input hook
//! (native nftables: firewalld, nftables.conf): the data-path port (UDP, the overlays' VXLAN)
//! and 7946 (TCP and UDP, the nodes' gossip). A firewall that drops them is the cause `run`
//! names `overlay-unreachable` once a SYN is lost in the overlay; here it is seen before any
//! packet. The rules are read as they are: a rule that names the port is quoted; one doctor
//! cannot weigh (an interface, a source, a set) is not judged, so a "DROP policy and no rule
//! naming the port" is said as what it is, not as a certain drop.

use std::collections::BTreeSet;

use super::iptables::{arg, jumps_to, reachable, Backend, Table};
use super::nft::Nft;
use super::report::{first_of, Finding, Severity};

/// The swarm's gossip port (TCP and UDP), fixed by Docker.
const GOSSIP: u16 = 7946;
/// Rules quoted at most per finding.
const QUOTED: usize = 3;

/// Checks every backend's filter table and the native nftables rules (`nft`) for the data-path
/// port `vxlan` (and how it was learnt: `source`) and the gossip port.
pub(super) fn swarm_ports(
    backends: &[Backend],
    nft: Option<&Nft>,
    vxlan: u16,
    source: &str,
    f: &mut Vec<Finding>,
) {
    let wanted = [
        ("udp", vxlan, format!("the overlays' VXLAN, {source}")),
        ("udp", GOSSIP, "the nodes' gossip".to_owned()),
        ("tcp", GOSSIP, "the nodes' gossip".to_owned()),
    ];
    // Each backend's filter table and the chains INPUT reaches, found once.
    let filters: Vec<(&Backend, &Table, BTreeSet<&str>)> = backends
        .iter()
        .filter_map(|b| {
            let t = b.table("filter")?;
            Some((b, t, reachable(t, "INPUT")))
        })
        .collect();
    // The native rules the input hook runs, found once.
    let nft = nft.map(Nft::input);
    // What refuses every port no rule accepts, the same for every port: the backends whose
    // INPUT policy is DROP, and the native chains that end in a drop.
    let mut closed: Vec<String> = filters
        .iter()
        .filter(|(_, t, _)| t.policies.get("INPUT").is_some_and(|p| p == "DROP"))
        .map(|(b, _, _)| format!("{}: INPUT's policy is DROP", b.name))
        .collect();
    closed.extend(nft.iter().flat_map(|n| n.closed.iter().cloned()));
    let mut clean = Vec::new();
    for (proto, port, what) in &wanted {
        let mut refused = Vec::new();
        let mut named_accept = false;
        for (b, t, input) in &filters {
            for (chain, rule) in &t.rules {
                if !matches_port(rule, proto, *port) || !input.contains(chain.as_str()) {
                    continue;
                }
                match jumps_to(rule) {
                    Some("DROP" | "REJECT") => {
                        refused.push(format!("{}: -A {chain} {rule}", b.name))
                    }
                    Some("ACCEPT") => named_accept = true,
                    _ => {}
                }
            }
        }
        // Native nftables: the rules naming the port.
        if let Some(judged) = nft.as_ref().map(|n| n.judge(proto, *port)) {
            refused.extend(judged.refused);
            named_accept |= judged.accepted;
        }
        let name = format!("{} {port} ({what})", proto.to_uppercase());
        if !refused.is_empty() {
            f.push(
                Finding::new(
                    "swarm-ports",
                    Severity::Warning,
                    format!("a rule of INPUT drops {name}"),
                )
                .detail(format!(
                    "{}. From the other nodes these packets are dropped here unless a rule before it accepts them: a task on this node is then unreachable through the overlay (`swarmtrace run` names it overlay-unreachable).",
                    first_of(&refused, QUOTED, "; ")
                ))
                .fix(format!("Accept {name} from the other nodes before that rule (and in every other firewall between the nodes)."))
            );
        } else if !closed.is_empty() && !named_accept {
            f.push(
                Finding::new(
                    "swarm-ports",
                    Severity::Warning,
                    format!("INPUT drops what it does not accept and no rule names {name}"),
                )
                .detail(format!(
                    "{}: unless a broader rule accepts the other nodes (by interface or source), {name} from them is dropped here.",
                    first_of(&closed, QUOTED, "; ")
                ))
                .fix(format!("Accept {name} from the other nodes, e.g. `iptables -I INPUT -p {proto} --dport {port} -s NODES_SUBNET -j ACCEPT`.")),
            );
        } else {
            clean.push(name);
        }
    }
    if clean.len() == wanted.len() {
        f.push(Finding::new(
            "swarm-ports",
            Severity::Ok,
            format!(
                "no INPUT rule or policy drops {}{}",
                clean.join(", "),
                if nft.is_some() {
                    " (iptables and native nftables read)"
                } else {
                    ""
                }
            ),
        ));
    }
}

/// The rule matches `proto` packets to `port`: `-p proto` and `--dport` (a port or a range
/// `a:b`) or multiport's `--dports` (a list of ports and ranges) holding it. A negated match
/// (`! --dport`, `! -p`) or a rule without a port is not judged.
fn matches_port(rule: &str, proto: &str, port: u16) -> bool {
    if rule.contains("! -p") || rule.contains("! --dport") || arg(rule, "-p") != Some(proto) {
        return false;
    }
    let list = arg(rule, "--dport").or_else(|| arg(rule, "--dports"));
    list.is_some_and(|l| l.split(',').any(|item| in_range(item, port)))
}

/// `port` is `item`: a port, or a range `a:b` (an open end: 0 or 65535).
fn in_range(item: &str, port: u16) -> bool {
    let (lo, hi) = item.split_once(':').unwrap_or((item, item));
    let end = |s: &str, open: u16| {
        if s.is_empty() {
            Ok(open)
        } else {
            s.parse::<u16>()
        }
    };
    match (end(lo, 0), end(hi, u16::MAX)) {
        (Ok(lo), Ok(hi)) if !item.is_empty() => (lo..=hi).contains(&port),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::doctor::fake::*;
    use crate::doctor::{Finding, Severity};

    /// The swarm manager with `rules` added to its filter table (before FORWARD's first rule).
    fn with_rules(rules: &str) -> Fake {
        let mut h = Fake::swarm();
        h.replace_rules(
            "-A FORWARD -j DOCKER-USER",
            &format!("{rules}\n-A FORWARD -j DOCKER-USER"),
        );
        h
    }

    fn ports(h: &Fake) -> Vec<Finding> {
        h.run(&[])
            .findings
            .into_iter()
            .filter(|f| f.id == "swarm-ports")
            .collect()
    }

    fn warnings(h: &Fake) -> Vec<String> {
        ports(h)
            .into_iter()
            .filter(|f| f.severity == Severity::Warning)
            .map(|f| f.title)
            .collect()
    }

    #[test]
    fn an_open_input_chain_is_ok() {
        let f = ports(&Fake::swarm());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Ok);
        assert!(f[0].title.contains("UDP 4789") && f[0].title.contains("TCP 7946"));
    }

    #[test]
    fn a_rule_that_drops_the_data_path_port_is_quoted() {
        let h = with_rules("-A INPUT -p udp -m udp --dport 4789 -j DROP");
        let f = ports(&h);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].title.contains("drops UDP 4789"), "{}", f[0].title);
        assert!(
            f[0].detail
                .contains("-A INPUT -p udp -m udp --dport 4789 -j DROP"),
            "{}",
            f[0].detail
        );
        assert!(f[0].fix.as_deref().unwrap().contains("UDP 4789"));
    }

    /// The swarm's own port is the one checked: 7789 dropped is named, 4789 dropped is not
    /// (the overlay does not use it).
    #[test]
    fn the_swarms_data_path_port_is_checked() {
        let mut h = with_rules(
            "-A INPUT -p udp --dport 7789 -j REJECT --reject-with icmp-port-unreachable",
        );
        h.data_path_port = (7789, "Docker's data-path port".to_owned());
        assert_eq!(
            warnings(&h),
            ["a rule of INPUT drops UDP 7789 (the overlays' VXLAN, Docker's data-path port)"]
        );
        let mut h = with_rules("-A INPUT -p udp --dport 4789 -j DROP");
        h.data_path_port = (7789, "Docker's data-path port".to_owned());
        assert!(warnings(&h).is_empty());
    }

    #[test]
    fn a_drop_policy_without_a_rule_for_the_port() {
        let mut h = with_rules(
            "-A INPUT -p tcp -m tcp --dport 7946 -j ACCEPT\n-A INPUT -p udp -m udp --dport 7946 -j ACCEPT",
        );
        h.replace_rules(":INPUT ACCEPT [0:0]", ":INPUT DROP [0:0]");
        assert_eq!(
            warnings(&h),
            ["INPUT drops what it does not accept and no rule names UDP 4789 (the overlays' VXLAN, the default)"]
        );
    }

    /// firewalld's nftables backend: its input chain ends in a reject, the zone accepts 4789
    /// by name and a named set drops 7946/udp; TCP 7946 is neither accepted nor named.
    #[test]
    fn native_nftables_rules_are_read_beside_iptables() {
        let mut h = with_rules("");
        h.nft = Some(Ok(fixture("doctor/firewalld.nft.json")));
        let w = warnings(&h);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w.contains(&"a rule of INPUT drops UDP 7946 (the nodes' gossip)".to_owned()),
            "{w:?}"
        );
        assert!(w.contains(&"INPUT drops what it does not accept and no rule names TCP 7946 (the nodes' gossip)".to_owned()), "{w:?}");
        let all = ports(&h);
        let detail = |title: &str| {
            all.iter()
                .find(|f| f.title.contains(title))
                .map(|f| f.detail.clone())
                .unwrap_or_default()
        };
        assert!(
            detail("drops UDP 7946")
                .contains("filter_IN_public_deny handle 20: udp dport { 7946, 7947 } drop"),
            "{all:#?}"
        );
        assert!(
            detail("names TCP 7946").contains("filter_INPUT handle"),
            "{all:#?}"
        );
        // Unreadable: said, and iptables' view still checked.
        h.nft = Some(Err("nft: not permitted".to_owned()));
        let all = ports(&h);
        assert!(
            all.iter()
                .any(|f| f.severity == Severity::Info && f.detail == "nft: not permitted"),
            "{all:#?}"
        );
        assert!(warnings(&h).is_empty());
    }

    /// Lists, ranges and chains reached from INPUT (as ufw makes them) count; negations,
    /// other protocols and chains INPUT never reaches do not.
    #[test]
    fn ports_in_lists_ranges_and_chains() {
        let h = with_rules("-A INPUT -p udp -m multiport --dports 53,4789,7946 -j DROP");
        assert_eq!(warnings(&h).len(), 2, "{:?}", warnings(&h));
        let h = with_rules("-A INPUT -p tcp -m tcp --dport 7000:8000 -j DROP");
        assert_eq!(
            warnings(&h),
            ["a rule of INPUT drops TCP 7946 (the nodes' gossip)"]
        );
        let h = with_rules("-A INPUT -p udp -m udp --dport 4000: -j DROP");
        assert_eq!(warnings(&h).len(), 2, "{:?}", warnings(&h));
        let mut h = with_rules(
            "-A INPUT -j ufw-user-input\n-A ufw-user-input -p udp -m udp --dport 4789 -j REJECT",
        );
        h.replace_rules(
            ":INPUT ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]\n:ufw-user-input - [0:0]",
        );
        assert_eq!(warnings(&h).len(), 1, "{:?}", warnings(&h));
        for rules in [
            "-A INPUT -p udp -m udp ! --dport 4789 -j DROP",
            "-A INPUT ! -p udp -j DROP",
            "-A INPUT -p tcp -m tcp --dport 4789 -j DROP",
            "-A INPUT -p udp -m udp --dport 4789 -j LOG",
            "-A INPUT -p udp -m udp --dport x:y -j DROP",
            "-A INPUT -p udp -m udp --dport 70000 -j DROP",
        ] {
            assert!(warnings(&with_rules(rules)).is_empty(), "{rules}");
        }
        let mut h = with_rules("-A not-reached -p udp -m udp --dport 4789 -j DROP");
        h.replace_rules(
            ":INPUT ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]\n:not-reached - [0:0]",
        );
        assert!(warnings(&h).is_empty());
    }

    /// A host with a firewall of many chains and rules (as a Kubernetes node has): each chain
    /// INPUT reaches is found once, not once per rule.
    #[test]
    fn many_rules_cost_linear_time() {
        let (chains, per_chain) = (2_000, 20);
        let mut decl = String::from(":INPUT ACCEPT [0:0]");
        let mut rules = String::new();
        for c in 0..chains {
            decl.push_str(&format!("\n:c{c} - [0:0]"));
            let from = if c == 0 {
                "INPUT".to_owned()
            } else {
                format!("c{}", c - 1)
            };
            rules.push_str(&format!("-A {from} -j c{c}\n"));
            for i in 0..per_chain {
                rules.push_str(&format!(
                    "-A c{c} -p udp -m udp --dport {} -j ACCEPT\n",
                    10_000 + i
                ));
            }
        }
        rules.push_str(&format!(
            "-A c{} -p udp -m udp --dport 4789 -j DROP",
            chains - 1
        ));
        let mut h = with_rules(&rules);
        h.replace_rules(":INPUT ACCEPT [0:0]", &decl);
        let t = std::time::Instant::now();
        assert_eq!(warnings(&h).len(), 1, "{:?}", warnings(&h));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn not_reached_chains_are_not_judged() {
        let mut h = with_rules("-A not-reached -p udp -m udp --dport 4789 -j DROP");
        h.replace_rules(
            ":INPUT ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]\n:not-reached - [0:0]",
        );
        assert!(warnings(&h).is_empty());
    }
}
