//! What the kernel shows from inside one namespace: SNMP counters, TCP sockets, conntrack
//! entries, neighbour states. Everything is read in the namespace itself, never in the caller's.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, Result};

use super::Netns;

/// The namespace's SNMP counters (`/proc/net/snmp` and `/proc/net/netstat` as the namespace sees
/// them), keyed `Group.Name`: `TcpExt.ListenDrops`, `Tcp.OutRsts`, `IpExt.InNoRoutes`...
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<String, i64>);

impl Counters {
    /// Parses the two-line-per-group format (`TcpExt: A B` then `TcpExt: 1 2`).
    pub fn parse(text: &str) -> Self {
        let mut out = BTreeMap::new();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let (Some((group, names)), Some((group2, values))) =
                (names.split_once(':'), values.split_once(':'))
            else {
                continue;
            };
            if group != group2 {
                continue;
            }
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                if let Ok(v) = value.parse::<i64>() {
                    out.insert(format!("{group}.{name}"), v);
                }
            }
        }
        Self(out)
    }

    /// A counter's value; 0 when this kernel does not have it.
    pub fn get(&self, key: &str) -> i64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// The counters that changed since `before`, as differences.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters(
            self.0
                .iter()
                .filter_map(|(k, v)| {
                    let d = v - before.get(k);
                    (d != 0).then(|| (k.clone(), d))
                })
                .collect(),
        )
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{}", parts.join(" "))
    }
}

/// Reads the namespace's counters (from a thread inside it: `/proc/thread-self/net/...`).
pub fn counters(ns: &Netns) -> Result<Counters> {
    ns.run(|| -> Result<Counters> {
        let mut text = String::new();
        for f in ["snmp", "netstat"] {
            let path = format!("/proc/thread-self/net/{f}");
            text.push_str(
                &std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?,
            );
        }
        Ok(Counters::parse(&text))
    })?
}

/// TCP states as `/proc/net/tcp` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    Other(u8),
}

impl TcpState {
    fn from_proc(n: u8) -> Self {
        match n {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            n => Self::Other(n),
        }
    }
}

/// One IPv4 TCP socket of a namespace (TIME_WAIT and request sockets included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: TcpState,
    /// Accept queue length for a listener, else bytes not yet read.
    pub rx_queue: u32,
}

fn proc_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints the network-order address as a native u32.
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

/// Parses `/proc/net/tcp`.
pub fn parse_proc_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let queues = f.get(4)?.split_once(':')?;
            Some(TcpSocket {
                local: proc_addr(f.get(1)?)?,
                remote: proc_addr(f.get(2)?)?,
                state: TcpState::from_proc(u8::from_str_radix(f.get(3)?, 16).ok()?),
                rx_queue: u32::from_str_radix(queues.1, 16).ok()?,
            })
        })
        .collect()
}

/// The namespace's IPv4 TCP sockets.
pub fn tcp_sockets(ns: &Netns) -> Result<Vec<TcpSocket>> {
    ns.run(|| -> Result<Vec<TcpSocket>> {
        let text = std::fs::read_to_string("/proc/thread-self/net/tcp")
            .context("cannot read /proc/thread-self/net/tcp")?;
        Ok(parse_proc_tcp(&text))
    })?
}

/// Whether the namespace holds a TIME_WAIT socket `local` <-> `remote`.
pub fn has_time_wait(ns: &Netns, local: SocketAddr, remote: SocketAddr) -> Result<bool> {
    Ok(tcp_sockets(ns)?.iter().any(|s| {
        s.state == TcpState::TimeWait
            && SocketAddr::V4(s.local) == local
            && SocketAddr::V4(s.remote) == remote
    }))
}

/// The namespace's TCP conntrack entries, one `conntrack -L` line each (empty when conntrack
/// is not active there).
pub fn conntrack(ns: &Netns) -> Result<Vec<String>> {
    let out = ns.exec(&["conntrack", "-L", "-p", "tcp"])?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with("tcp"))
        .map(str::to_owned)
        .collect())
}

/// The neighbour state (`REACHABLE`, `INCOMPLETE`, `FAILED`...) of `ip` on `dev`, if any.
pub fn neigh_state(ns: &Netns, dev: &str, ip: Ipv4Addr) -> Result<Option<String>> {
    let out = ns.exec(&["ip", "neigh", "show", "to", &ip.to_string(), "dev", dev])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .next())
}

/// Packets matched by the rules of an iptables chain (`iptables -t TABLE -L CHAIN -v -x`),
/// one `(packets, rule text)` per rule.
pub fn rule_packets(ns: &Netns, table: &str, chain: &str) -> Result<Vec<(u64, String)>> {
    let out = ns.exec(&["iptables", "-t", table, "-L", chain, "-n", "-v", "-x"])?;
    Ok(out
        .lines()
        .skip(2)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let packets = it.next()?.parse().ok()?;
            Some((packets, it.skip(1).collect::<Vec<_>>().join(" ")))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters() {
        let text = "Tcp: RtoAlgorithm MaxConn OutRsts\nTcp: 1 -1 7\n\
                    TcpExt: ListenOverflows ListenDrops\nTcpExt: 3 4\n";
        let c = Counters::parse(text);
        assert_eq!(c.get("Tcp.MaxConn"), -1);
        assert_eq!(c.get("Tcp.OutRsts"), 7);
        assert_eq!(c.get("TcpExt.ListenDrops"), 4);
        assert_eq!(c.get("TcpExt.Nothing"), 0);
        let later = Counters::parse(&text.replace("3 4", "3 6"));
        assert_eq!(
            later.since(&c).0.into_iter().collect::<Vec<_>>(),
            [("TcpExt.ListenDrops".to_owned(), 2)]
        );
    }

    #[test]
    fn parses_proc_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 00000000:0050 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   \
            1: 0500000A:0050 0200000A:9C40 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0\n";
        let s = parse_proc_tcp(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].state, TcpState::Listen);
        assert_eq!(s[0].rx_queue, 2);
        if cfg!(target_endian = "little") {
            assert_eq!(s[1].local, "10.0.0.5:80".parse().unwrap());
            assert_eq!(s[1].remote, "10.0.0.2:40000".parse().unwrap());
        }
        assert_eq!(s[1].state, TcpState::TimeWait);
    }
}
