//! Subnet overlaps: Docker's networks (and the host's other bridges) against the clients'
//! networks, the host's routes and each other.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::report::{Finding, Severity};
use super::{docker_bridge_name, list, Iface};
use crate::docker::DockerInfo;
use crate::kernel::routes::Route;
use crate::net::Cidr;

/// Addresses that can overlap something meaningful: not loopback, link-local or multicast.
pub(super) fn usable(c: &Cidr) -> bool {
    match c.addr {
        IpAddr::V4(a) => !(a.is_loopback() || a.is_link_local() || a.is_multicast()),
        IpAddr::V6(a) => {
            !(a.is_loopback() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// A subnet Docker (or another bridge) uses, and where.
#[derive(Debug, Clone)]
struct DockerNet {
    cidr: Cidr,
    /// `host:docker_gwbridge`, `ingress_sbox:eth1`, `network ingress`.
    place: String,
    /// A host bridge's device, whose own routes are not "host routes".
    dev: Option<String>,
    /// From an interface (not the API).
    from_iface: bool,
    /// Docker's own (not another bridge of the host, such as virbr0 or a VM bridge).
    docker: bool,
}

/// Docker's subnets: Docker's bridges in the host namespace (docker0, docker_gwbridge, br-*,
/// and those the API names), every subnet of Docker's namespaces and of the API's networks;
/// plus the host's other bridges, except an uplink bridge (one carrying a default route,
/// such as a VM host's br0), whose subnet is the LAN itself.
fn docker_nets(ifaces: &[Iface], routes: &[Route], info: Option<&DockerInfo>) -> Vec<DockerNet> {
    let api_bridges: BTreeSet<&str> = info
        .into_iter()
        .flat_map(|i| i.networks.iter().filter_map(|n| n.bridge.as_deref()))
        .collect();
    let uplink = |dev: &str| {
        routes
            .iter()
            .any(|r| r.dest.prefix == 0 && r.dev.as_deref() == Some(dev))
    };
    let mut nets: Vec<DockerNet> = Vec::new();
    for i in ifaces {
        let host = i.netns == "host";
        let docker = !host || docker_bridge_name(&i.name) || api_bridges.contains(i.name.as_str());
        let other_bridge = i.bridge && !uplink(&i.name);
        if host && !docker && !other_bridge {
            continue;
        }
        // Single addresses (service VIPs in lb_ and ingress_sbox) lie in their network's subnet.
        if i.cidr.is_host() {
            continue;
        }
        let cidr = i.cidr.network();
        let place = format!("{}:{}", i.netns, i.name);
        if nets.iter().any(|n| n.cidr == cidr && n.place == place) {
            continue;
        }
        nets.push(DockerNet {
            cidr,
            place,
            dev: host.then(|| i.name.clone()),
            from_iface: true,
            docker,
        });
    }
    if let Some(info) = info {
        for n in &info.networks {
            for s in n.subnets.iter().filter(|s| usable(s)) {
                nets.push(DockerNet {
                    cidr: s.network(),
                    place: format!("network {} ({})", n.name, n.driver),
                    dev: None,
                    from_iface: false,
                    docker: true,
                });
            }
        }
    }
    nets
}

/// The nets by subnet, in first-seen order: (subnet, its places, whether one is Docker's).
fn by_subnet<'a>(nets: impl IntoIterator<Item = &'a DockerNet>) -> Vec<(Cidr, Vec<String>, bool)> {
    let mut out: Vec<(Cidr, Vec<String>, bool)> = Vec::new();
    for n in nets {
        let place = if n.docker {
            n.place.clone()
        } else {
            format!("{}, not Docker's", n.place)
        };
        match out.iter_mut().find(|(c, _, _)| *c == n.cidr) {
            Some((_, places, docker)) => {
                if !places.contains(&place) {
                    places.push(place);
                }
                *docker |= n.docker;
            }
            None => out.push((n.cidr, vec![place], n.docker)),
        }
    }
    out
}

pub(super) fn subnets(
    ifaces: &[Iface],
    routes: &[Route],
    info: Option<&DockerInfo>,
    clients: &[Cidr],
    f: &mut Vec<Finding>,
) {
    let nets = docker_nets(ifaces, routes, info);
    if nets.is_empty() {
        f.push(Finding::new(
            "docker-subnets",
            Severity::Ok,
            "no Docker or bridge subnet here",
        ));
    } else {
        let by = by_subnet(&nets);
        let text: Vec<String> = by
            .iter()
            .map(|(c, places, _)| format!("{c} ({})", list(places, 3)))
            .collect();
        f.push(
            Finding::new(
                "docker-subnets",
                Severity::Info,
                format!("{} Docker or bridge subnet(s)", by.len()),
            )
            .detail(text.join("; ")),
        );
    }
    let bridge_devs: BTreeSet<&str> = nets.iter().filter_map(|n| n.dev.as_deref()).collect();

    // Client networks: an overlap is the `reply-misrouted` cause.
    for c in clients {
        let c = c.network();
        let hit = by_subnet(nets.iter().filter(|n| c.overlaps(&n.cidr)));
        let via = best_route(routes, c.addr)
            .map(|r| {
                format!(
                    " Replies to it follow the route {}{}{}.",
                    if r.dest.prefix == 0 {
                        "default".to_owned()
                    } else {
                        r.dest.to_string()
                    },
                    r.via.map(|v| format!(" via {v}")).unwrap_or_default(),
                    r.dev
                        .as_ref()
                        .map(|d| format!(" dev {d}"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        if hit.is_empty() {
            f.push(
                Finding::new(
                    "client-overlap",
                    Severity::Ok,
                    format!("client network {c} overlaps no Docker subnet"),
                )
                .detail(via.trim().to_owned()),
            );
            continue;
        }
        for (subnet, places, docker) in hit {
            let places = list(&places, 4);
            if !docker {
                f.push(
                    Finding::new(
                        "client-overlap",
                        Severity::Warning,
                        format!("client network {c} overlaps {subnet} ({places})"),
                    )
                    .detail(format!("Clients in {c} have addresses inside the subnet of a bridge of this host that is not Docker's: the host routes replies to them onto that bridge, not back towards the clients.{via}"))
                    .fix("Renumber that bridge's network (or the clients), or confirm that the clients really live behind that bridge."),
                );
                continue;
            }
            f.push(
                Finding::new(
                    "client-overlap",
                    Severity::Serious,
                    format!("client network {c} overlaps {subnet} ({places})"),
                )
                .detail(format!(
                    "Clients in {c} have addresses inside a subnet Docker uses on this host. Their SYNs arrive and are answered, but the SYN-ACK is routed to that Docker network instead of back to the client: ARP for the client fails there (drop reason NEIGH_FAILED in ingress_sbox or the task) or the reply is lost without a drop. This is the `reply-misrouted` cause of `swarmtrace run`.{via}"
                ))
                .fix("Move Docker's networks out of the clients' ranges: default-address-pools and bip in /etc/docker/daemon.json; docker_gwbridge re-created with another --subnet (before `docker swarm init`/`join`, or after leaving); the ingress network re-created with `docker network create --driver overlay --ingress --subnet ...`; overlays with `--subnet`. Or renumber the clients."),
            );
        }
    }

    // Docker subnets against the host's routes (not the bridges' own routes, not the default).
    let mut seen = BTreeSet::new();
    for r in routes {
        if r.dest.prefix == 0
            || !usable(&r.dest)
            || matches!(r.kind.as_str(), "local" | "broadcast" | "multicast")
        {
            continue;
        }
        if r.dev.as_deref().is_some_and(|d| bridge_devs.contains(d)) {
            continue;
        }
        let rd = r.dest.network();
        for (subnet, places, _) in by_subnet(nets.iter().filter(|n| rd.overlaps(&n.cidr))) {
            if !seen.insert((rd.to_string(), subnet.to_string())) {
                continue;
            }
            let how = if rd.prefix > subnet.prefix {
                format!("{subnet} covers the host's route to {rd}")
            } else if rd.prefix < subnet.prefix {
                format!("the host's route to {rd} covers {subnet}")
            } else {
                format!("the host also routes {rd}")
            };
            let r_text = format!(
                "{rd}{}{}",
                r.via.map(|v| format!(" via {v}")).unwrap_or_default(),
                r.dev
                    .as_ref()
                    .map(|d| format!(" dev {d}"))
                    .unwrap_or_default()
            );
            f.push(
                Finding::new(
                    "route-overlap",
                    Severity::Warning,
                    format!(
                        "{subnet} ({}) overlaps the host route {r_text}",
                        list(&places, 4)
                    ),
                )
                .detail(format!(
                    "{how}. Hosts in the shared range are reachable one way only: the more specific route wins, so either they cannot reach published ports (replies go to the Docker network) or the containers cannot reach them. A client there gets no SYN-ACK."
                ))
                .fix("Give Docker address pools that no route of the host uses (default-address-pools in /etc/docker/daemon.json, --subnet for docker_gwbridge, ingress and overlays)."),
            );
        }
    }

    // Docker subnets against each other.
    let mut pairs = BTreeSet::new();
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            if !a.cidr.overlaps(&b.cidr) || a.cidr.is_host() || b.cidr.is_host() {
                continue;
            }
            // The same subnet seen from two namespaces is one network (docker_gwbridge in
            // the host and eth1 in ingress_sbox), except on two bridges of the host, or as
            // two networks of the API.
            let conflict = if a.cidr != b.cidr {
                a.from_iface == b.from_iface
            } else if a.from_iface && b.from_iface {
                a.dev.is_some() && b.dev.is_some()
            } else {
                !a.from_iface && !b.from_iface && a.place != b.place
            };
            if !conflict {
                continue;
            }
            let key = if a.place <= b.place {
                (a.place.clone(), b.place.clone())
            } else {
                (b.place.clone(), a.place.clone())
            };
            if !pairs.insert(key) {
                continue;
            }
            f.push(
                Finding::new(
                    "docker-overlap",
                    Severity::Warning,
                    format!("{} {} overlaps {} {}", a.place, a.cidr, b.place, b.cidr),
                )
                .detail("Two Docker networks share addresses: a container attached to both, or the host routing to both, sends part of the traffic to the wrong one, and replies to clients in the shared range can leave by the wrong bridge.")
                .fix("Re-create one of the networks with a --subnet of its own (default-address-pools in /etc/docker/daemon.json keeps new ones apart)."),
            );
        }
    }
}

/// The longest-prefix route for `ip`.
fn best_route(routes: &[Route], ip: IpAddr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| {
            !matches!(r.kind.as_str(), "local" | "broadcast" | "multicast") && r.dest.contains(ip)
        })
        .max_by_key(|r| r.dest.prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{DockerApi, DockerNetwork};
    use crate::doctor::fake::*;

    #[test]
    fn client_cidrs_overlapping_docker_are_serious() {
        let h = Fake::swarm();
        let r = h.run(&["172.18.5.0/24"]);
        let hits: Vec<&Finding> = r.by_id("client-overlap").collect();
        assert!(hits.iter().all(|f| f.severity == Severity::Serious));
        let titles: Vec<&str> = hits.iter().map(|f| f.title.as_str()).collect();
        assert_eq!(titles, ["client network 172.18.5.0/24 overlaps 172.18.0.0/16 (host:docker_gwbridge, ingress_sbox:eth1, network docker_gwbridge (bridge))"]);
        assert!(hits[0].detail.contains("reply-misrouted"));
        assert!(
            hits[0]
                .detail
                .contains("route 172.18.0.0/16 dev docker_gwbridge"),
            "{}",
            hits[0].detail
        );
        // A client network covering Docker's, the ingress subnet (from namespaces and API),
        // host bits in the argument, and other families.
        assert_eq!(
            worst(&h.run(&["172.16.0.0/12"]), "client-overlap"),
            Severity::Serious
        );
        assert_eq!(
            worst(&h.run(&["10.0.0.77/24"]), "client-overlap"),
            Severity::Serious
        );
        assert_eq!(
            worst(&h.run(&["10.0.1.128/25"]), "client-overlap"),
            Severity::Serious
        );
        assert_eq!(
            worst(&h.run(&["10.0.2.0/24"]), "client-overlap"),
            Severity::Ok
        );
        assert_eq!(
            worst(&h.run(&["fd00::/64"]), "client-overlap"),
            Severity::Ok
        );
        let ok = h.run(&["192.168.1.0/24"]);
        let f = ok.by_id("client-overlap").next().unwrap();
        assert_eq!(f.severity, Severity::Ok);
        assert!(f.detail.contains("192.168.1.0/24 dev eth0"), "{}", f.detail);
        assert_eq!(ok.serious(), 0);
        // Without the API (and namespaces), the bridges still give it away.
        let mut h = Fake::plain();
        h.ifaces
            .push(iface("host", "docker_gwbridge", "172.18.0.1/16", true));
        h.set("net.ipv4.ip_forward", "1");
        let r = h.run(&["172.18.5.0/24", "10.9.0.0/16"]);
        assert_eq!(r.serious(), 1, "{:?}", problems(&r));
        assert_eq!(r.by_id("client-overlap").count(), 2);
    }

    #[test]
    fn other_bridges_of_the_host() {
        // A VM host: the LAN NIC is enslaved to br0, which carries the default route; clients
        // on that LAN are not misrouted.
        let mut h = Fake::plain();
        h.ifaces = vec![
            iface("host", "br0", "192.168.1.10/24", true),
            iface("host", "virbr0", "192.168.122.1/24", true),
        ];
        h.routes = vec![
            route("default", Some("192.168.1.1"), "br0"),
            route("192.168.1.0/24", None, "br0"),
            route("192.168.122.0/24", None, "virbr0"),
        ];
        let r = h.run(&["192.168.1.0/24"]);
        assert_eq!(worst(&r, "client-overlap"), Severity::Ok, "{}", r.to_text());
        // Another bridge: a warning, not the Docker cause.
        let r = h.run(&["192.168.122.0/24"]);
        assert_eq!(worst(&r, "client-overlap"), Severity::Warning);
        assert!(r
            .by_id("client-overlap")
            .next()
            .unwrap()
            .title
            .contains("(host:virbr0, not Docker's)"));
        assert!(r.by_id("docker").any(|f| f.title == "no Docker here"));
        // A bridge the Docker API names is Docker's, whatever it is called.
        let mut h = Fake::swarm();
        h.ifaces
            .push(iface("host", "mybridge", "172.30.0.1/16", true));
        if let DockerApi::Available(i) = &mut h.docker {
            i.networks.push(DockerNetwork {
                name: "custom".into(),
                driver: "bridge".into(),
                scope: "local".into(),
                ingress: false,
                subnets: vec![cidr("172.30.0.0/16")],
                bridge: Some("mybridge".into()),
            });
        }
        let r = h.run(&["172.30.9.0/24"]);
        assert_eq!(worst(&r, "client-overlap"), Severity::Serious);
        assert!(r
            .by_id("client-overlap")
            .next()
            .unwrap()
            .title
            .contains("(host:mybridge, network custom (bridge))"));
    }

    #[test]
    fn docker_subnets_against_host_routes() {
        let mut h = Fake::swarm();
        // A VPN route covering the ingress network, and a LAN route inside docker0's.
        h.routes
            .push(route("10.0.0.0/8", Some("192.168.1.254"), "eth0"));
        h.routes
            .push(route("172.17.3.0/24", Some("192.168.1.253"), "eth0"));
        let r = h.run(&[]);
        let titles: Vec<String> = r
            .by_id("route-overlap")
            .map(|f| format!("{:?} {}", f.severity, f.title))
            .collect();
        assert!(r
            .by_id("route-overlap")
            .all(|f| f.severity == Severity::Warning));
        assert_eq!(titles.len(), 3, "{titles:?}");
        assert!(titles.iter().any(|t| t.ends_with("10.0.0.0/24 (ingress_sbox:eth0, 1-qz3f5l0x2m:br0, lb_qz3f5l0x2:eth0, network ingress (overlay)) overlaps the host route 10.0.0.0/8 via 192.168.1.254 dev eth0")), "{titles:?}");
        assert!(titles.iter().any(|t| t.ends_with("10.0.1.0/24 (network web_default (overlay)) overlaps the host route 10.0.0.0/8 via 192.168.1.254 dev eth0")), "{titles:?}");
        assert!(titles.iter().any(|t| t.ends_with("172.17.0.0/16 (host:docker0, network bridge (bridge)) overlaps the host route 172.17.3.0/24 via 192.168.1.253 dev eth0")), "{titles:?}");
        assert!(r.by_id("route-overlap").any(|f| f
            .detail
            .starts_with("the host's route to 10.0.0.0/8 covers 10.0.0.0/24")));
        assert!(r.by_id("route-overlap").any(|f| f
            .detail
            .starts_with("172.17.0.0/16 covers the host's route to 172.17.3.0/24")));
        assert_eq!(r.serious(), 0);
        // The bridges' own routes, the default route and link-local routes are not conflicts.
        assert_eq!(Fake::swarm().run(&[]).by_id("route-overlap").count(), 0);
    }

    #[test]
    fn docker_subnets_against_each_other() {
        let mut h = Fake::swarm();
        h.ifaces
            .push(iface("host", "br-5f1c0a7b2d3e", "172.17.0.1/16", true));
        let r = h.run(&[]);
        assert_eq!(worst(&r, "docker-overlap"), Severity::Warning);
        assert!(r
            .by_id("docker-overlap")
            .any(|f| f.title.contains("host:br-5f1c0a7b2d3e 172.17.0.0/16")
                && f.title.contains("host:docker0 172.17.0.0/16")));
        // Two API networks sharing a range, and an overlay inside another namespace's subnet.
        let mut h = Fake::swarm();
        if let DockerApi::Available(i) = &mut h.docker {
            i.networks.push(DockerNetwork {
                name: "legacy".into(),
                driver: "bridge".into(),
                scope: "local".into(),
                ingress: false,
                subnets: vec![cidr("10.0.0.0/16")],
                bridge: Some("br-legacy".into()),
            });
        }
        h.ifaces
            .push(iface("task1234abcd", "eth2", "10.0.0.9/16", false));
        let r = h.run(&[]);
        let titles: Vec<&str> = r
            .by_id("docker-overlap")
            .map(|f| f.title.as_str())
            .collect();
        assert!(
            titles
                .iter()
                .any(|t| t.contains("network legacy (bridge) 10.0.0.0/16")
                    && t.contains("network ingress (overlay) 10.0.0.0/24")),
            "{titles:?}"
        );
        assert!(
            titles
                .iter()
                .any(|t| t.contains("task1234abcd:eth2 10.0.0.0/16")),
            "{titles:?}"
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(cidr("172.18.0.1/16").network(), cidr("172.18.0.0/16"));
        assert_eq!(cidr("fd00::1:2/64").network(), cidr("fd00::/64"));
        assert_eq!(cidr("10.1.2.3/0").network(), cidr("0.0.0.0/0"));
        assert!(cidr("172.18.5.0/24").overlaps(&cidr("172.18.0.0/16")));
        assert!(cidr("172.16.0.0/12").overlaps(&cidr("172.18.0.0/16")));
        assert!(!cidr("172.19.0.0/16").overlaps(&cidr("172.18.0.0/16")));
        assert!(!cidr("::/0").overlaps(&cidr("172.18.0.0/16")));
        assert!(
            !usable(&cidr("fe80::1/64"))
                && !usable(&cidr("169.254.1.1/16"))
                && usable(&cidr("10.0.0.1/8"))
        );
    }
}
