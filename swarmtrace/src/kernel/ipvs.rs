//! What tells an IPVS drop from a firewall rule's, both of which the kernel reports alike
//! (NETFILTER_DROP, or `nf_hook_slow` on kernels without reasons), read per namespace at the
//! start and the end of a run:
//!
//! - the namespace's IPVS services by firewall mark and their destinations with weights
//!   (`/proc/net/ip_vs`, addresses in hex). Docker's routing mesh uses fwmark services in
//!   `ingress_sbox` (and `lb_*`); a service with no destination of weight above 0 makes IPVS
//!   answer a new connection's SYN with an ICMP port unreachable and drop it (`ip_vs_leave`);
//! - the mark the mangle table's PREROUTING sets on each TCP port (Docker:
//!   `-A PREROUTING -p tcp -m tcp --dport 8080 -j MARK --set-xmark 0x100/0xffffffff`) and the
//!   packet counters of the DROP and REJECT rules, from `iptables-save -c` run inside the
//!   namespace (the `iptables` Docker uses: the system's, through its alternatives).
//!
//! Everything read is hostile: bounded in size and count, malformed lines ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::kernel::iptables_save::{arg, lines, Line};

/// `/proc/net/ip_vs` is read up to this many bytes, this many services and this many
/// destinations a service.
const IP_VS_MAX_BYTES: u64 = 1024 * 1024;
const MAX_SERVICES: usize = 4096;
const MAX_DESTS: usize = 256;
/// `iptables-save -c` output is read up to this many bytes and rules, and may run this long.
const IPTABLES_MAX_BYTES: usize = 4 * 1024 * 1024;
const MAX_RULES: usize = 20_000;
const IPTABLES_TIMEOUT: Duration = Duration::from_secs(5);
/// The namespaces read: the host's and those with IPVS services, at most this many.
pub const MAX_NAMESPACES: usize = 32;

/// An IPVS destination: its address as `ipvsadm -Ln` shows it, and its weight.
pub type Dest = (String, u32);

/// IPVS services by firewall mark -> their destinations.
pub type FwmServices = BTreeMap<u32, Vec<Dest>>;

/// Parses `/proc/net/ip_vs`: the fwmark services (`FWM  00000100 rr`) and their destinations
/// (`  -> 0A000007:0000      Masq    1      0          0`, or `[ipv6]:port`). Address
/// services (`TCP 0A000002:1F90 rr`) end the destinations of the service before them and are
/// not kept. Bounded by [`MAX_SERVICES`] and [`MAX_DESTS`].
pub fn parse_ip_vs(text: &str) -> FwmServices {
    let mut out = FwmServices::new();
    let mut current: Option<u32> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().take(8).collect();
        match f.as_slice() {
            ["FWM", mark, ..] => {
                current = None;
                let Some(mark) = hex_u32(mark) else { continue };
                if out.len() >= MAX_SERVICES && !out.contains_key(&mark) {
                    continue;
                }
                out.entry(mark).or_default();
                current = Some(mark);
            }
            ["->", addr, _fwd, weight, ..] => {
                let Some(mark) = current else { continue };
                let (Some(addr), Ok(weight)) = (dest_addr(addr), weight.parse::<u32>()) else {
                    continue;
                };
                let dests = out.get_mut(&mark).expect("current is a kept service");
                if dests.len() < MAX_DESTS {
                    dests.push((addr, weight));
                }
            }
            // The header lines, an address service, anything else.
            _ => current = None,
        }
    }
    out
}

fn hex_u32(s: &str) -> Option<u32> {
    (s.len() <= 8 && !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

/// `0A000007:0000` -> `10.0.0.7:0`; `[fd00::7]:1F90` -> `[fd00::7]:8080`.
fn dest_addr(s: &str) -> Option<String> {
    let (addr, port) = s.rsplit_once(':')?;
    let port = (port.len() == 4)
        .then(|| u16::from_str_radix(port, 16).ok())
        .flatten()?;
    if let Some(v6) = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = v6.parse().ok()?;
        return Some(format!("[{ip}]:{port}"));
    }
    let ip = std::net::Ipv4Addr::from((addr.len() == 8).then(|| hex_u32(addr)).flatten()?);
    Some(format!("{ip}:{port}"))
}

/// The fwmarks of services with no destination that can take a new connection (weight
/// above 0: IPVS schedules none with weight 0).
pub fn without_backend(services: &FwmServices) -> BTreeSet<u32> {
    services
        .iter()
        .filter(|(_, d)| d.iter().all(|(_, w)| *w == 0))
        .map(|(m, _)| *m)
        .collect()
}

/// The addresses of the destinations of weight 0 by service mark: backends Docker is draining
/// (it sets a task's weight to 0 when the task is shutting down, before it removes it). IPVS
/// schedules no new connection to them, but with `net.ipv4.vs.conn_reuse_mode=0` (Docker's
/// setting in its load-balancing namespaces) a SYN from a client port that has a connection
/// entry still goes where that entry points: to such a backend too.
pub fn draining(services: &FwmServices) -> BTreeMap<u32, BTreeSet<IpAddr>> {
    services
        .iter()
        .filter_map(|(mark, dests)| {
            let addrs: BTreeSet<IpAddr> = dests
                .iter()
                .filter(|(_, w)| *w == 0)
                .filter_map(|(a, _)| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.ip())
                .collect();
            (!addrs.is_empty()).then_some((*mark, addrs))
        })
        .collect()
}

/// `net.ipv4.vs.NAME` of the calling thread's namespace (`/proc/sys/net` follows the reading
/// thread's namespace); None without IPVS or when it is not a small number.
fn vs_sysctl_here(name: &str) -> Option<u8> {
    let mut text = String::new();
    std::fs::File::open(format!("/proc/sys/net/ipv4/vs/{name}"))
        .and_then(|f| f.take(16).read_to_string(&mut text))
        .ok()?;
    text.trim().parse().ok()
}

/// What `iptables-save -c` says of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// TCP port -> the mark the mangle table's PREROUTING sets on it (the first such rule).
    pub port_marks: BTreeMap<u16, u32>,
    /// Each DROP or REJECT rule (`-t TABLE -A CHAIN ...`) -> its packet counter (identical
    /// rules summed).
    pub drop_rules: BTreeMap<String, u64>,
}

/// Parses `iptables-save -c` output: `*TABLE` starts a table, `[PACKETS:BYTES] -A CHAIN ...`
/// is a rule with its counters. Lines that are not, and rules past [`MAX_RULES`], are
/// ignored.
pub fn parse_iptables_save(text: &str) -> Rules {
    let mut out = Rules::default();
    let mut table: Option<&str> = None;
    for line in lines(text, MAX_RULES) {
        let (packets, chain, rule) = match line {
            Line::Table(t) => {
                table = t;
                continue;
            }
            Line::Rule {
                packets: Some(p),
                chain,
                rule,
            } => (p, chain, rule),
            _ => continue,
        };
        let Some(table) = table else { continue };
        let target = arg(rule, "-j");
        if matches!(target, Some("DROP" | "REJECT")) {
            let words: Vec<&str> = rule.split_whitespace().collect();
            let key = format!("-t {table} -A {chain} {}", words.join(" "));
            let e = out.drop_rules.entry(key).or_insert(0);
            *e = e.saturating_add(packets);
        } else if table == "mangle"
            && chain == "PREROUTING"
            && target == Some("MARK")
            && arg(rule, "-p") == Some("tcp")
            && !rule.split_whitespace().any(|w| w == "!")
        {
            let port = arg(rule, "--dport").and_then(|p| p.parse::<u16>().ok());
            let mark = arg(rule, "--set-xmark")
                .or_else(|| arg(rule, "--set-mark"))
                .and_then(|m| m.split('/').next())
                .and_then(|m| m.strip_prefix("0x").map_or(m.parse().ok(), hex_u32));
            if let (Some(port), Some(mark)) = (port, mark) {
                out.port_marks.entry(port).or_insert(mark);
            }
        }
    }
    out
}

/// The DROP or REJECT rules whose packet counter rose between two readings (a rule only in
/// the second counts from 0), with the rise.
pub fn rules_rose(before: &Rules, after: &Rules) -> Vec<(String, u64)> {
    after
        .drop_rules
        .iter()
        .filter_map(|(rule, n)| {
            let d = n.saturating_sub(before.drop_rules.get(rule).copied().unwrap_or(0));
            (d > 0).then(|| (rule.clone(), d))
        })
        .collect()
}

/// One reading of a namespace.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// None where the kernel has no IPVS (no `/proc/net/ip_vs`).
    pub services: Option<FwmServices>,
    /// None where `iptables-save` could not be run.
    pub rules: Option<Rules>,
    /// `net.ipv4.vs.conn_reuse_mode` and `expire_nodest_conn` there; None where they could
    /// not be read.
    pub conn_reuse_mode: Option<u8>,
    pub expire_nodest_conn: Option<u8>,
}

/// The IPVS services of the calling thread's namespace; None without IPVS.
fn services_here() -> Option<FwmServices> {
    let mut text = String::new();
    std::fs::File::open("/proc/thread-self/net/ip_vs")
        .and_then(|f| f.take(IP_VS_MAX_BYTES).read_to_string(&mut text))
        .ok()?;
    Some(parse_ip_vs(&text))
}

/// `iptables-save -c` in the calling thread's namespace (the system's, which follows the
/// alternatives to iptables-nft or iptables-legacy as Docker's `iptables` does): bounded
/// output, killed past [`IPTABLES_TIMEOUT`]; None when it cannot be run or fails.
fn rules_here() -> Option<Rules> {
    let out = super::tool::run_bounded(
        "iptables-save",
        &["-c"],
        IPTABLES_MAX_BYTES,
        IPTABLES_TIMEOUT,
    )?
    .ok()?;
    Some(parse_iptables_save(&out.text))
}

/// Reads the namespace in `ns_file`: always its IPVS services; its rules only where `host`
/// or where it has IPVS services (Docker's load-balancing namespaces), so a host with many
/// containers runs few commands.
pub fn read_in(ns_file: &Path, host: bool) -> Option<Reading> {
    super::netns::within(ns_file, || {
        let services = services_here();
        let has_services = services.as_ref().is_some_and(|s| !s.is_empty());
        if !host && !has_services {
            return None;
        }
        Some(Reading {
            conn_reuse_mode: has_services
                .then(|| vs_sysctl_here("conn_reuse_mode"))
                .flatten(),
            expire_nodest_conn: has_services
                .then(|| vs_sysctl_here("expire_nodest_conn"))
                .flatten(),
            services: services.filter(|s| !s.is_empty()),
            rules: rules_here(),
        })
    })
    .ok()
    .flatten()
}

/// The readings of the host's namespace and of those with IPVS services, at most
/// [`MAX_NAMESPACES`].
pub fn read_all(namespaces: &[(String, std::path::PathBuf)]) -> BTreeMap<String, Reading> {
    namespaces
        .iter()
        .filter_map(|(name, file)| Some((name.clone(), read_in(file, name == "host")?)))
        .take(MAX_NAMESPACES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(crate::kernel::fixtures::dir("docker-ingress-sbox").join(name))
            .unwrap()
    }

    #[test]
    fn parses_docker_ingress_sbox_ip_vs() {
        let s = parse_ip_vs(&fixture("ip_vs"));
        assert_eq!(
            s[&0x100],
            [("10.0.0.7:0".to_owned(), 1), ("10.0.0.8:0".to_owned(), 1)]
        );
        assert_eq!(s[&0x101], []);
        assert_eq!(s[&0x102], [("10.0.0.12:0".to_owned(), 0)]);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(without_backend(&s), [0x101, 0x102].into());
        assert_eq!(
            draining(&s),
            [(0x102, ["10.0.0.12".parse().unwrap()].into())].into()
        );
    }

    #[test]
    fn parses_docker_ingress_sbox_iptables_save() {
        let r = parse_iptables_save(&fixture("iptables-save"));
        assert_eq!(r.port_marks[&8080], 0x100);
        assert_eq!(r.port_marks[&8081], 0x101);
        // The UDP port's mark is not a TCP port's.
        assert!(!r.port_marks.contains_key(&5353));
        assert_eq!(
            r.drop_rules["-t filter -A INPUT -p tcp -m tcp --dport 8081 -j DROP"],
            2
        );
        assert_eq!(r.drop_rules.len(), 2, "{r:?}");
        let mut after = r.clone();
        *after
            .drop_rules
            .get_mut("-t filter -A INPUT -p tcp -m tcp --dport 8081 -j DROP")
            .unwrap() = 5;
        after
            .drop_rules
            .insert("-t raw -A PREROUTING -s 10.9.9.9/32 -j DROP".into(), 1);
        assert_eq!(
            rules_rose(&r, &after),
            [
                (
                    "-t filter -A INPUT -p tcp -m tcp --dport 8081 -j DROP".to_owned(),
                    3
                ),
                ("-t raw -A PREROUTING -s 10.9.9.9/32 -j DROP".to_owned(), 1)
            ]
        );
        assert!(rules_rose(&after, &r).is_empty());
    }

    #[test]
    fn hostile_ip_vs_is_bounded_and_malformed_lines_ignored() {
        assert!(parse_ip_vs("").is_empty());
        let s = parse_ip_vs(
            "FWM  zz rr\n  -> 0A000007:0000 Masq 1 0 0\n\
             FWM  100000000 rr\n  -> 0A000007:0000 Masq 1 0 0\n\
             TCP  0A000002:1F90 rr\n  -> 0A000007:1F90 Masq 1 0 0\n\
             FWM  00000100 rr\n\
               -> 0A0007:0000 Masq 1 0 0\n\
               -> 0A000007:00000 Masq 1 0 0\n\
               -> 0A000007:0000 Masq -1 0 0\n\
               -> [not::an::ip]:0000 Masq 1 0 0\n\
               -> [fd00::7]:1F90 Masq 2 0 0\n\
               -> 0A000009:0000\n",
        );
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[&0x100], [("[fd00::7]:8080".to_owned(), 2)]);
        // A flood of services and destinations: bounded.
        let mut text = String::new();
        for m in 0..MAX_SERVICES + 10 {
            text.push_str(&format!("FWM  {m:08X} rr\n"));
        }
        for _ in 0..MAX_DESTS + 10 {
            text.push_str("  -> 0A000007:0000 Masq 1 0 0\n");
        }
        let s = parse_ip_vs(&text);
        assert_eq!(s.len(), MAX_SERVICES);
        assert!(s.values().all(|d| d.len() <= MAX_DESTS));
    }

    #[test]
    fn hostile_iptables_save_is_bounded_and_malformed_lines_ignored() {
        let r = parse_iptables_save(
            "[3:180] -A INPUT -j DROP\n\
             *fil ter\n[3:180] -A INPUT -j DROP\n\
             *mangle\n\
             [0:0] -A PREROUTING -p tcp -m tcp --dport 99999 -j MARK --set-xmark 0x1/0xffffffff\n\
             [0:0] -A PREROUTING -p tcp -m tcp --dport 81 -j MARK --set-xmark 0xzz/0xffffffff\n\
             [0:0] -A PREROUTING -p tcp -m tcp ! --dport 82 -j MARK --set-xmark 0x5/0xffffffff\n\
             [0:0] -A PREROUTING -p tcp -m tcp --dport 83 -j MARK --set-mark 7\n\
             [0:0] -A PREROUTING -p tcp -m tcp --dport 83 -j MARK --set-xmark 0x9/0xffffffff\n\
             *filter\n\
             [x:1] -A INPUT -j DROP\n\
             [-1:1] -A INPUT -j DROP\n\
             [1:1]-A INPUT -j DROP\n\
             [1:1] -I INPUT -j DROP\n\
             [18446744073709551615:1] -A INPUT -j REJECT\n\
             [1:1] -A INPUT -j REJECT\n\
             [4:1] -A INPUT -j ACCEPT\n",
        );
        assert_eq!(r.port_marks, [(83, 7)].into());
        assert_eq!(
            r.drop_rules,
            [("-t filter -A INPUT -j REJECT".into(), u64::MAX)].into()
        );
        // A flood of rules: only the first MAX_RULES lines are read.
        let mut text = "*filter\n".to_owned();
        for i in 0..MAX_RULES + 10 {
            text.push_str(&format!(
                "[1:1] -A INPUT -s 10.0.{}.{}/32 -j DROP\n",
                i / 250,
                i % 250
            ));
        }
        assert_eq!(parse_iptables_save(&text).drop_rules.len(), MAX_RULES - 1);
    }
}
