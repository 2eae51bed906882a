//! The routing table of a namespace: `ip -o route show`, or `/proc/net/route` without `ip`.

use std::net::IpAddr;

use crate::net::{parse_cidr, Cidr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `unicast`, `unreachable`, `blackhole`, ...
    pub kind: String,
    pub dest: Cidr,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
}

/// Parses /proc/net/route (IPv4, when `ip` is missing).
pub fn parse_proc_route(text: &str) -> Vec<Route> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = std::net::Ipv4Addr::from(hex(f.get(1)?)?);
            let gw = std::net::Ipv4Addr::from(hex(f.get(2)?)?);
            let mask = hex(f.get(7)?)?;
            Some(Route {
                kind: "unicast".to_owned(),
                dest: Cidr {
                    addr: IpAddr::V4(dest),
                    prefix: mask.count_ones() as u8,
                },
                via: (!gw.is_unspecified()).then_some(IpAddr::V4(gw)),
                dev: Some((*f.first()?).to_owned()),
            })
        })
        .collect()
}

/// Parses `ip -o route show` (one family); `v6` says what `default` means.
pub fn parse_ip_route(text: &str, v6: bool) -> Vec<Route> {
    const KINDS: [&str; 10] = [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "unreachable",
        "blackhole",
        "prohibit",
        "throw",
        "anycast",
        "nat",
    ];
    text.lines()
        .filter_map(|l| {
            let mut w: Vec<&str> = l.split_whitespace().collect();
            // The value after a keyword (`via`, `dev`).
            let after = |key: &str| {
                w.iter()
                    .position(|x| *x == key)
                    .and_then(|i| w.get(i + 1).copied())
            };
            let via = after("via").and_then(|v| v.parse().ok());
            let dev = after("dev").map(str::to_owned);
            let kind = match w.first() {
                Some(k) if KINDS.contains(k) => {
                    let k = (*k).to_owned();
                    w.remove(0);
                    k
                }
                _ => "unicast".to_owned(),
            };
            let dest = match *w.first()? {
                "default" => Cidr {
                    addr: if v6 {
                        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                    } else {
                        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                    },
                    prefix: 0,
                },
                d => parse_cidr(d).ok()?,
            };
            Some(Route {
                kind,
                dest,
                via,
                dev,
            })
        })
        .collect()
}

/// The main table of the calling thread's namespace, both families; IPv4 from
/// /proc/net/route when `ip` is missing.
pub fn main_table() -> Vec<Route> {
    let ip = |args: &[&str]| super::run_tool("ip", args).and_then(Result::ok);
    match ip(&["-o", "-4", "route", "show"]) {
        Some(t) => {
            let mut r = parse_ip_route(&t, false);
            r.extend(parse_ip_route(
                &ip(&["-o", "-6", "route", "show"]).unwrap_or_default(),
                true,
            ));
            r
        }
        // `/proc/net` is the process's namespace, not this thread's.
        None => parse_proc_route(
            &std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default(),
        ),
    }
}

/// The interface of the default route.
pub fn default_route_iface(route_table: &str) -> Option<String> {
    parse_proc_route(route_table)
        .into_iter()
        .find(|r| r.dest.prefix == 0)
        .and_then(|r| r.dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn parses_proc_net_route() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_proc_route(t);
        assert_eq!(r[0].dest.prefix, 0);
        assert_eq!(r[0].via, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(r[1].dest.to_string(), "172.17.0.0/16");
        assert_eq!(r[1].dev.as_deref(), Some("docker0"));
        assert_eq!(super::default_route_iface(t).as_deref(), Some("eth0"));
    }

    #[test]
    fn default_route() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth1\t0011A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
        assert_eq!(super::default_route_iface(t).as_deref(), Some("eth0"));
        assert_eq!(super::default_route_iface("Iface\tDestination\n"), None);
    }

    #[test]
    fn parses_ip_route() {
        let t = "default via 192.168.1.1 dev eth0 proto dhcp src 192.168.1.10 metric 100 \n\
                 10.0.0.0/8 via 192.168.1.254 dev eth0 \n\
                 172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown \n\
                 unreachable 10.99.0.0/16 \n\
                 blackhole 10.98.0.0/16 proto static \n";
        let r = parse_ip_route(t, false);
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].dest, cidr("0.0.0.0/0"));
        assert_eq!(r[0].via, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(r[0].dev.as_deref(), Some("eth0"));
        assert_eq!(r[2].dev.as_deref(), Some("docker0"));
        assert_eq!(r[2].via, None);
        assert_eq!(
            (r[3].kind.as_str(), r[3].dest),
            ("unreachable", cidr("10.99.0.0/16"))
        );
        assert_eq!(r[3].dev, None);
        assert_eq!(r[4].kind, "blackhole");
        let r6 = parse_ip_route("default via fe80::1 dev eth0 proto ra metric 1024 pref medium\nfd00:1::/64 dev eth0 proto kernel metric 256 pref medium\n", true);
        assert_eq!(r6[0].dest, cidr("::/0"));
        assert_eq!(r6[1].dest, cidr("fd00:1::/64"));
    }
}
