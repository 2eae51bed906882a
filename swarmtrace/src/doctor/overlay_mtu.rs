//! The overlays' MTU against the underlay's: VXLAN adds 50 bytes (outer IPv4 20, UDP 8, VXLAN
//! 8, inner Ethernet 14) to every frame an overlay carries, so an overlay device of MTU M needs
//! M + 50 on the interface its datagrams leave by. Docker's overlays default to 1450 (a 1500
//! underlay); on a smaller one (1460 on some clouds, 1400 through a VPN) the larger packets
//! are fragmented or dropped between the nodes: handshakes pass, large requests and responses
//! stall, the "published port times out" that no drop counter of a handshake explains.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::host::{HostView, Iface, OverlayLink};
use super::report::{first_of, Finding, Severity};

/// Bytes VXLAN over IPv4 adds to an overlay's frame, beyond the overlay's MTU.
const VXLAN_OVERHEAD: u32 = 50;
/// Namespaces named per finding at most.
const NAMED: usize = 3;

/// Compares every overlay VXLAN device read with the underlay: the interface that holds the
/// address the node advertises to the swarm (Docker's `Swarm.NodeAddr`), else the interface
/// of the IPv4 default route.
pub(super) fn overlay_mtu(
    host: &dyn HostView,
    ifaces: &[Iface],
    node_addr: Option<IpAddr>,
    f: &mut Vec<Finding>,
) {
    let links: Vec<OverlayLink> = host.overlay_links();
    // MTU -> the namespaces of the devices that have it.
    let mut by_mtu: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for l in &links {
        if let Some(m) = l.link.mtu {
            by_mtu
                .entry(m)
                .or_default()
                .push(format!("{} in {}", l.link.name, l.netns));
        }
    }
    let Some((&largest, _)) = by_mtu.iter().next_back() else {
        return;
    };
    let advertised = node_addr.and_then(|a| {
        ifaces
            .iter()
            .find(|i| i.netns == "host" && i.cidr.addr == a)
            .map(|i| {
                (
                    i.name.clone(),
                    format!("the interface of the swarm's address {a}"),
                )
            })
    });
    let underlay = advertised.or_else(|| {
        host.routes()
            .into_iter()
            .find(|r| r.kind == "unicast" && r.dest.prefix == 0 && r.dest.addr.is_ipv4())
            .and_then(|r| Some((r.dev?, "the default route's interface".to_owned())))
    });
    let Some((dev, mtu, why)) =
        underlay.and_then(|(d, why)| Some((d.clone(), host.link_mtu(&d)?, why)))
    else {
        f.push(Finding::new(
            "overlay-mtu",
            Severity::Info,
            format!("the overlays' MTU ({largest}) was not compared: neither the swarm's address nor an IPv4 default route on an interface with a readable MTU here"),
        ));
        return;
    };
    let too_big: Vec<(u32, &Vec<String>)> = by_mtu
        .iter()
        .filter(|(m, _)| **m + VXLAN_OVERHEAD > mtu)
        .map(|(m, n)| (*m, n))
        .collect();
    if too_big.is_empty() {
        f.push(Finding::new(
            "overlay-mtu",
            Severity::Ok,
            format!(
                "the overlays' VXLAN devices (MTU {largest} at most) fit {dev} (MTU {mtu}: {largest} + {VXLAN_OVERHEAD} bytes of VXLAN; {why})"
            ),
        ));
        return;
    }
    let fits = mtu.saturating_sub(VXLAN_OVERHEAD);
    let named: Vec<String> = too_big
        .iter()
        .flat_map(|(m, names)| names.iter().map(move |n| format!("{n} (MTU {m})")))
        .collect();
    f.push(
        Finding::new(
            "overlay-mtu",
            Severity::Warning,
            format!(
                "the overlays' frames do not fit {dev}: VXLAN devices of MTU {largest} need {} bytes, {dev} has {mtu}",
                largest + VXLAN_OVERHEAD
            ),
        )
        .detail(format!(
            "{} ({dev}: {why}). VXLAN adds {VXLAN_OVERHEAD} bytes to each frame; the larger packets between the nodes are fragmented or dropped on the way: handshakes pass, requests and responses larger than about {} bytes stall (a published port that times out on large answers only).",
            first_of(&named, NAMED, ", "),
            fits.saturating_sub(40)
        ))
        .fix(format!(
            "Give the overlays an MTU of {fits} or less: `docker network create -d overlay --opt com.docker.network.driver.mtu={fits} ...`; for the routing mesh, re-create the ingress network with it (remove the services that publish ports, `docker network rm ingress`, then `docker network create -d overlay --ingress --opt com.docker.network.driver.mtu={fits} ingress`). Or raise {dev}'s MTU on every node and the network between them."
        )),
    );
}

#[cfg(test)]
mod tests {
    use crate::doctor::fake::*;
    use crate::doctor::{Finding, Severity};

    fn mtu_findings(h: &Fake) -> Vec<Finding> {
        h.run(&[])
            .findings
            .into_iter()
            .filter(|f| f.id == "overlay-mtu")
            .collect()
    }

    #[test]
    fn dockers_1450_fits_a_1500_underlay() {
        let f = mtu_findings(&Fake::swarm());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Ok);
        assert!(f[0].title.contains("fit eth0 (MTU 1500"), "{}", f[0].title);
        assert!(
            f[0].title.ends_with("the default route's interface)"),
            "{}",
            f[0].title
        );
    }

    /// The interface of the address the node advertises to the swarm, not the default
    /// route's, when Docker names it.
    #[test]
    fn the_swarms_own_address_picks_the_underlay() {
        let mut h = Fake::swarm();
        h.ifaces
            .push(iface("host", "eth1", "192.168.56.10/24", false));
        h.mtus.insert("eth1".into(), 1400);
        if let crate::docker::DockerApi::Available(i) = &mut h.docker {
            i.node_addr = Some("192.168.56.10".parse().unwrap());
        }
        let f = mtu_findings(&h);
        assert_eq!(f[0].severity, Severity::Warning, "{f:?}");
        assert!(f[0].title.contains("do not fit eth1"), "{}", f[0].title);
        assert!(
            f[0].detail
                .contains("(eth1: the interface of the swarm's address 192.168.56.10)"),
            "{}",
            f[0].detail
        );
    }

    /// A cloud underlay of 1460 under Docker's default 1450: named, with the MTU that fits.
    #[test]
    fn a_smaller_underlay_is_a_warning_with_the_mtu_that_fits() {
        let mut h = Fake::swarm();
        h.mtus.insert("eth0".into(), 1460);
        let f = mtu_findings(&h);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(
            f[0].title,
            "the overlays' frames do not fit eth0: VXLAN devices of MTU 1450 need 1500 bytes, eth0 has 1460"
        );
        assert!(
            f[0].detail
                .contains("vx-001001-qz3f5 in 1-qz3f5l0x2m (MTU 1450)"),
            "{}",
            f[0].detail
        );
        assert!(f[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("com.docker.network.driver.mtu=1410"));
    }

    #[test]
    fn without_overlays_or_an_underlay_mtu_nothing_is_claimed() {
        let mut h = Fake::swarm();
        h.overlay_links.clear();
        assert!(mtu_findings(&h).is_empty());
        let mut h = Fake::swarm();
        h.mtus.clear();
        let f = mtu_findings(&h);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Info);
    }
}
