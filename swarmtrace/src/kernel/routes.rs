//! The routing table of a namespace (`/proc/net/route`).

use std::net::IpAddr;

use crate::net::Cidr;

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
}
