//! The network namespaces of this host and what is configured in them: their names and
//! files, their addresses (for subnet overlaps) and their counters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::netns::{ns_file, within, NAMED_DIRS};
use super::netstat::{self, Counters};
use super::sysctl;
use crate::net::{parse_cidr, Cidr};

/// `host`, then every named namespace (ip netns, Docker), by name.
pub fn known() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Some(f) = ns_file("host") {
        out.push(("host".to_owned(), f));
    }
    for dir in NAMED_DIRS {
        for (name, path) in files_in(dir, usize::MAX) {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, path));
            }
        }
    }
    out
}

/// The files of `dir` (the first `max` it lists) with UTF-8 names, as (name, path) in name
/// order; none when it cannot be read.
fn files_in(dir: &str, max: usize) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<(String, PathBuf)> = entries
        .flatten()
        .take(max)
        .filter_map(|e| Some((e.file_name().to_str()?.to_owned(), e.path())))
        .collect();
    names.sort();
    names
}

/// Counters of every namespace that can be read.
pub fn counters(namespaces: &[(String, PathBuf)]) -> BTreeMap<String, Counters> {
    namespaces
        .iter()
        .filter_map(|(name, file)| Some((name.clone(), netstat::read_in(file).ok()?)))
        .collect()
}

/// Parses `ip -o addr show` output into (interface, subnet).
pub fn parse_ip_addr(text: &str) -> Vec<(String, Cidr)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ifname = f.get(1)?.split('@').next()?.to_owned();
            if !matches!(*f.get(2)?, "inet" | "inet6") {
                return None;
            }
            Some((ifname, parse_cidr(f.get(3)?).ok()?))
        })
        .collect()
}

/// Names of the bridges in `ip -o link show type bridge` output.
pub fn parse_ip_link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next()?.trim().to_owned())
        })
        .collect()
}

/// `ip ARGS` in the calling thread's namespace; None when it fails or is not installed.
fn ip(args: &[&str]) -> Option<String> {
    super::run_tool("ip", args).and_then(Result::ok)
}

/// The subnets on the interfaces of the calling thread's namespace (loopback excluded).
pub fn subnets_here() -> Vec<(String, Cidr)> {
    ip(&["-o", "addr", "show"])
        .map(|t| parse_ip_addr(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|(i, c)| i != "lo" && !c.addr.is_loopback())
        .collect()
}

/// The bridges of the calling thread's namespace.
pub fn bridges_here() -> Vec<String> {
    ip(&["-o", "link", "show", "type", "bridge"])
        .map(|t| parse_ip_link_names(&t))
        .unwrap_or_default()
}

/// The subnets on the interfaces of a namespace (loopback excluded).
pub fn subnets_in(file: &std::path::Path) -> Vec<(String, Cidr)> {
    within(file, subnets_here).unwrap_or_default()
}

/// Overlay namespaces asked at most for their VXLAN device (each costs a thread).
pub const MAX_OVERLAYS_ASKED: usize = 8;

/// Docker's overlay namespaces asked for their VXLAN devices: `<epoch>-<network id>` under
/// Docker's directory, in name order, at most [`MAX_OVERLAYS_ASKED`], as (name, file).
fn overlays() -> impl Iterator<Item = (String, PathBuf)> {
    files_in(super::netns::DOCKER_DIR, super::netns::MAX_NAMES)
        .into_iter()
        .filter(|(n, _)| super::netns::overlay_file_name(n))
        .take(MAX_OVERLAYS_ASKED)
}

/// The UDP port of the VXLAN device in Docker's overlay namespaces ([`overlays`]), and the
/// name of the namespace it was read in: the swarm's data-path port as the node's own overlays
/// use it, where Docker does not tell it (on a worker). Asked by netlink (the image's `ip` is
/// busybox's, without link details). None when no overlay has one.
pub fn overlay_vxlan_port() -> Option<(u16, String)> {
    overlays().find_map(|(name, file)| {
        let ports = within(&file, super::rtnl::vxlan_ports).ok()?.ok()?;
        Some((*ports.first()?, name))
    })
}

/// The VXLAN devices of Docker's overlay namespaces ([`overlays`]), each with the name of its
/// namespace; a namespace that cannot be read has none.
pub fn overlay_vxlan_links() -> Vec<(String, super::rtnl::VxlanLink)> {
    overlays()
        .flat_map(|(name, file)| {
            let links = within(&file, super::rtnl::vxlan_links)
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            links.into_iter().map(move |l| (name.clone(), l))
        })
        .collect()
}

/// Addresses and routes of a namespace, as `ip -o` prints them.
pub fn describe(file: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let run = |args: &[&str]| -> Vec<String> {
        within(file, || ip(args))
            .ok()
            .flatten()
            .map(|out| {
                out.lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect()
            })
            .unwrap_or_default()
    };
    let addrs = run(&["-o", "addr", "show"]);
    let mut routes = run(&["-o", "route", "show", "table", "all"]);
    routes.extend(run(&["-o", "-6", "route", "show"]));
    (addrs, routes)
}

/// The sysctls that matter for published ports behind NAT, in the host's namespace (read
/// from a thread in it: `/proc/sys/net` follows the thread), and `rp_filter` for every
/// interface. Missing ones (e.g. `tcp_tw_recycle` since 4.12) are left out; none when the
/// host's namespace cannot be entered.
pub fn sysctls() -> BTreeMap<String, String> {
    super::hostns::in_host(sysctls_here).unwrap_or_else(|e| {
        log::warn!("cannot enter the host's network namespace to read its sysctls: {e}");
        BTreeMap::new()
    })
}

/// [`sysctls`] of the calling thread's namespace.
fn sysctls_here() -> BTreeMap<String, String> {
    const KEYS: [&str; 13] = [
        "net.ipv4.tcp_tw_recycle",
        "net.ipv4.tcp_timestamps",
        "net.ipv4.tcp_tw_reuse",
        "net.ipv4.ip_forward",
        "net.ipv4.tcp_syncookies",
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
        "net.netfilter.nf_conntrack_count",
        "net.netfilter.nf_conntrack_max",
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ];
    let mut out: BTreeMap<String, String> = KEYS
        .iter()
        .filter_map(|k| Some((k.to_string(), sysctl::read(k)?)))
        .collect();
    for iface in sysctl::entries("net.ipv4.conf") {
        if iface == "all" || iface == "default" {
            continue;
        }
        let name = format!("net.ipv4.conf.{}.rp_filter", iface.replace('.', "/"));
        if let Some(v) = sysctl::read(&name) {
            out.insert(format!("net.ipv4.conf.{iface}.rp_filter"), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_o_addr() {
        let t = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                 4: eth0@if5    inet 10.10.0.1/24 brd 10.10.0.255 scope global eth0\\       valid_lft forever\n\
                 6: docker_gwbridge    inet 172.18.0.1/16 brd 172.18.255.255 scope global docker_gwbridge\n\
                 4: eth0@if5    inet6 fd20::1/64 scope global nodad\n\
                 7: eth1    link/ether 00:11:22:33:44:55\n";
        let v = parse_ip_addr(t);
        assert_eq!(v.len(), 4);
        assert_eq!(v[1].0, "eth0");
        assert_eq!(v[1].1.to_string(), "10.10.0.1/24");
        assert!(v[2].1.contains("172.18.5.5".parse().unwrap()));
        assert_eq!(v[3].1.prefix, 64);
    }

    #[test]
    fn parses_bridge_names() {
        let t = "3: docker0: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN mode DEFAULT group default \\    link/ether 02:42:5d:0a:1b:2c brd ff:ff:ff:ff:ff:ff\n\
                 7: docker_gwbridge: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP \\    link/ether 02:42:aa:bb:cc:dd brd ff:ff:ff:ff:ff:ff\n";
        assert_eq!(parse_ip_link_names(t), ["docker0", "docker_gwbridge"]);
    }
}
