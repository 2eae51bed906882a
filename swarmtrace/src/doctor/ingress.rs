//! Docker and its routing mesh: what says Docker is here, the API, and the mesh's rules
//! (DNAT in DOCKER-INGRESS, the PREROUTING jump, FORWARD, the IPVS marks in ingress_sbox).

use std::net::IpAddr;

use super::iptables::{arg, jumps_to, parse_iptables_save, Backend, IngressDnat};
use super::report::{Finding, Severity};
use super::{DockerFacts, HostView, Iface, Ruleset};
use crate::docker::{DockerApi, DockerInfo, PublishedPort};
use crate::net::Cidr;

#[allow(clippy::too_many_arguments)]
pub(super) fn docker_checks(
    host: &dyn HostView,
    facts: &DockerFacts,
    ifaces: &[Iface],
    rulesets: &[Ruleset],
    docker: &DockerApi,
    info: Option<&DockerInfo>,
    f: &mut Vec<Finding>,
) {
    if !facts.present {
        f.push(
            Finding::new("docker", Severity::Info, "no Docker here")
                .detail("No Docker API socket, no docker0/docker_gwbridge/br-* bridge, no Docker namespace and no DOCKER chain in iptables: the Docker checks are skipped. The sysctl, subnet and conntrack checks still apply to NAT set up otherwise (Kubernetes NodePorts, your own DNAT)."),
        );
        return;
    } else {
        f.push(Finding::new(
            "docker",
            Severity::Info,
            format!(
                "Docker{}: {}",
                if facts.swarm {
                    " with a Swarm routing mesh"
                } else {
                    ""
                },
                facts.evidence.join(", ")
            ),
        ));
    }
    match docker {
        DockerApi::Absent => f.push(
            Finding::new("docker-api", Severity::Info, "no Docker API socket (/var/run/docker.sock): networks and published ports come from interfaces and iptables only")
        ),
        DockerApi::Failed(e) => f.push(
            Finding::new("docker-api", Severity::Info, "the Docker API could not be read")
                .detail(format!("{e}. Networks and published ports come from interfaces and iptables only."))
                .fix("Run as root or as a member of the docker group; check that dockerd runs (systemctl status docker)."),
        ),
        DockerApi::Available(i) => {
            let published = match &i.published {
                Ok(p) => format!("{} published port(s)", p.len()),
                Err(e) => format!("published ports unknown ({e})"),
            };
            f.push(Finding::new(
                "docker-api",
                Severity::Ok,
                format!(
                    "Docker API: {} network(s), swarm {}, {published}",
                    i.networks.len(),
                    i.swarm.as_deref().unwrap_or("unknown")
                ),
            ));
        }
    }
    if !facts.swarm {
        f.push(Finding::new(
            "ingress-dnat",
            Severity::Ok,
            "no Swarm routing mesh here: no ingress rules to check",
        ));
        return;
    }

    // The routing mesh's rules, in every backend that has rules.
    let mut unreadable = Vec::new();
    let backends: Vec<Backend> = rulesets
        .iter()
        .filter_map(|r| match &r.text {
            Ok(t) => Some(Backend {
                name: r.backend.clone(),
                tables: parse_iptables_save(t),
            }),
            Err(e) => {
                unreadable.push(format!("{}: {e}", r.backend));
                None
            }
        })
        .collect();
    if backends.is_empty() {
        f.push(
            Finding::new(
                "iptables",
                Severity::Info,
                "iptables rules could not be read: the routing-mesh rules were not checked",
            )
            .detail(if rulesets.is_empty() {
                "Neither iptables-save nor iptables-legacy-save is installed.".to_owned()
            } else {
                unreadable.join("; ")
            })
            .fix("Run as root, with iptables installed."),
        );
        return;
    }
    let (vxlan, source) = host.data_path_port();
    // Native nftables beside iptables' view (iptables-nft's own tables are left out when that
    // backend was read: they are the same rules).
    let iptables_nft = backends.iter().any(|b| b.name == "nft");
    let nft = host.nft_ruleset().map(|r| {
        r.and_then(|text| {
            super::nft::parse(&text, iptables_nft).map_err(|e| format!("nft -j list ruleset: {e}"))
        })
    });
    if let Some(Err(e)) = &nft {
        f.push(
            Finding::new(
                "swarm-ports",
                Severity::Info,
                "native nftables rules could not be read: only iptables' view was checked",
            )
            .detail(e.clone()),
        );
    }
    super::swarm_ports::swarm_ports(
        &backends,
        nft.as_ref().and_then(|r| r.as_ref().ok()),
        vxlan,
        &source,
        f,
    );
    let with_ingress: Vec<&Backend> = backends
        .iter()
        .filter(|b| {
            b.table("nat")
                .is_some_and(|t| t.chains.contains("DOCKER-INGRESS"))
        })
        .collect();
    if with_ingress.len() > 1 {
        f.push(
            Finding::new("iptables-backends", Severity::Info, format!(
                "DOCKER-INGRESS exists in more than one iptables backend ({})",
                with_ingress.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
            .detail("The kernel runs the rules of both iptables-nft and iptables-legacy; a tool shows only its own, and a stale copy in the other backend can DNAT or DROP too.")
            .fix("Keep one backend: update-alternatives --config iptables, restart Docker, and flush the other backend's tables."),
        );
    }

    // Which ports must be published, and how we know.
    let api_ports: Option<Vec<PublishedPort>> = info
        .and_then(|i| i.published.as_ref().ok())
        .map(|p| p.iter().filter(|p| p.mode == "ingress").cloned().collect());
    let all_dnats: Vec<(String, IngressDnat)> = backends
        .iter()
        .flat_map(|b| b.dnats().into_iter().map(|d| (b.name.clone(), d)))
        .collect();
    let wanted: Vec<(String, u16, String)> = match &api_ports {
        Some(p) => p
            .iter()
            .map(|p| {
                (
                    p.protocol.clone(),
                    p.port,
                    format!(" (service {})", p.service),
                )
            })
            .collect(),
        None => {
            let mut v: Vec<(String, u16, String)> = all_dnats
                .iter()
                .map(|(_, d)| (d.protocol.clone(), d.dport, String::new()))
                .collect();
            v.sort();
            v.dedup();
            v
        }
    };
    if wanted.is_empty() {
        let sev = if with_ingress.is_empty() {
            Severity::Info
        } else {
            Severity::Ok
        };
        f.push(
            Finding::new(
                "ingress-dnat",
                sev,
                if api_ports.is_some() {
                    "no swarm service publishes a port through the routing mesh".to_owned()
                } else {
                    "no DNAT rule in DOCKER-INGRESS: no port is published through the routing mesh here, or its rules were removed".to_owned()
                },
            )
            .detail(if api_ports.is_some() {
                "Nothing to check."
            } else {
                "The Docker API did not list the services (not reachable, or not a manager node), so the expected ports are unknown. If services publish ports and clients time out on this node, its rules were flushed."
            }),
        );
        return;
    }

    // Where DNAT may send: ingress_sbox's addresses, else docker_gwbridge's subnet.
    let sbox: Vec<IpAddr> = ifaces
        .iter()
        .filter(|i| i.netns == "ingress_sbox")
        .map(|i| i.cidr.addr)
        .collect();
    let gw: Vec<Cidr> = ifaces
        .iter()
        .filter(|i| i.netns == "host" && i.name == "docker_gwbridge")
        .map(|i| i.cidr.network())
        .chain(info.into_iter().flat_map(|i| {
            i.networks
                .iter()
                .filter(|n| n.name == "docker_gwbridge")
                .flat_map(|n| n.subnets.iter().map(Cidr::network))
        }))
        .collect();
    let mangle = host.ingress_sbox_mangle();
    let flush_fix = "Docker's rules were removed: by `iptables -F`/`iptables-restore` of a file without them, or a firewall (firewalld, ufw, a script) reloading after Docker. Restart Docker (systemctl restart docker) or re-publish with `docker service update --force SERVICE`, and make the firewall keep Docker's chains (your own rules go in DOCKER-USER).";
    for (proto, port, service) in &wanted {
        let rules: Vec<&(String, IngressDnat)> = all_dnats
            .iter()
            .filter(|(_, d)| d.dport == *port && d.protocol == *proto)
            .collect();
        if rules.is_empty() {
            f.push(
                Finding::new(
                    "ingress-dnat",
                    Severity::Serious,
                    format!("published port {port}/{proto}{service} has no DNAT rule in DOCKER-INGRESS"),
                )
                .detail(format!(
                    "The routing mesh needs `-A DOCKER-INGRESS -p {proto} --dport {port} -j DNAT --to-destination 172.18.0.2:{port}` in the nat table (172.18.0.2: ingress_sbox on docker_gwbridge). Without it the SYN stays on the host: a RST (NO_SOCKET) if nothing listens there."
                ))
                .fix(flush_fix),
            );
            continue;
        }
        for (backend, d) in rules {
            let b = backends.iter().find(|b| b.name == *backend);
            let target = d.to.map_or_else(|| "?".to_owned(), |ip| ip.to_string());
            let good_target = match d.to {
                None => false,
                Some(ip) if !sbox.is_empty() => sbox.contains(&ip),
                Some(ip) if !gw.is_empty() => gw.iter().any(|g| g.contains(ip)),
                Some(_) => true,
            };
            if !good_target {
                f.push(
                    Finding::new(
                        "ingress-dnat",
                        Severity::Serious,
                        format!("port {port}/{proto}{service} is DNATed to {target}:{}, which is not ingress_sbox's address ({backend})", d.to_port),
                    )
                    .detail(format!(
                        "ingress_sbox's addresses: {}; docker_gwbridge: {}. A stale rule (docker_gwbridge re-created with another subnet, or a rule restored from an old dump) sends the SYNs nowhere.",
                        if sbox.is_empty() { "not read".to_owned() } else { sbox.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ") },
                        if gw.is_empty() { "not found".to_owned() } else { gw.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ") },
                    ))
                    .fix(flush_fix),
                );
            } else {
                f.push(Finding::new(
                    "ingress-dnat",
                    Severity::Ok,
                    format!(
                        "port {port}/{proto}{service}: DNAT to {target}:{} ({backend})",
                        d.to_port
                    ),
                ));
            }
            let Some(b) = b else { continue };
            if !b.prerouting_jump() {
                f.push(
                    Finding::new(
                        "ingress-jump",
                        Severity::Serious,
                        format!("nat PREROUTING does not jump to DOCKER-INGRESS ({backend}): port {port}/{proto} is never DNATed"),
                    )
                    .detail("The DNAT rules exist, but without `-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS` no packet from outside reaches them.")
                    .fix(flush_fix),
                );
            }
            if !b.forward_accepts(&d.protocol, d.to_port) {
                f.push(
                    Finding::new(
                        "ingress-forward",
                        Severity::Warning,
                        format!("the filter table may drop forwarded SYNs to port {}/{proto} ({backend})", d.to_port),
                    )
                    .detail("FORWARD's policy is DROP and it does not reach a DOCKER-INGRESS chain accepting the port: after DNAT the SYN is forwarded to docker_gwbridge and dropped (NETFILTER_DROP), unless another rule accepts it.")
                    .fix(flush_fix),
                );
            }
            if let Some(m) = &mangle {
                let tables = parse_iptables_save(m);
                let marked = tables.get("mangle").is_some_and(|t| {
                    t.rules.iter().any(|(c, r)| {
                        c == "PREROUTING"
                            && jumps_to(r) == Some("MARK")
                            && arg(r, "--dport").and_then(|p| p.parse::<u16>().ok())
                                == Some(d.to_port)
                    })
                });
                if !marked {
                    f.push(
                        Finding::new(
                            "ingress-sbox-mark",
                            Severity::Serious,
                            format!("ingress_sbox does not mark port {}/{proto} for IPVS", d.to_port),
                        )
                        .detail("Inside ingress_sbox, `-t mangle -A PREROUTING -p tcp --dport PORT -j MARK --set-mark N` hands the SYN to the IPVS service that balances it to the tasks. Without it the SYN is not balanced: ingress_sbox itself answers with a RST or drops it. A kernel without iptable_mangle (IP_NF_MANGLE) shows this.")
                        .fix("Re-publish the service (docker service update --force SERVICE) or restart Docker; on custom kernels enable CONFIG_IP_NF_MANGLE."),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fake::*;

    #[test]
    fn missing_dnat_is_serious() {
        let mut h = Fake::swarm();
        h.replace_rules("-A DOCKER-INGRESS -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:8080\n", "");
        let r = h.run(&[]);
        assert_eq!(r.serious(), 1, "{:?}", problems(&r));
        let f = r
            .by_id("ingress-dnat")
            .find(|f| f.severity == Severity::Serious)
            .unwrap();
        assert_eq!(
            f.title,
            "published port 8080/tcp (service web_app) has no DNAT rule in DOCKER-INGRESS"
        );
        assert!(f
            .fix
            .as_deref()
            .unwrap()
            .contains("docker service update --force"));
        // Flushed entirely: both ports.
        let mut h = Fake::swarm();
        h.rules[0].text = Ok(String::new());
        let r = h.run(&[]);
        assert_eq!(
            r.by_id("ingress-dnat")
                .filter(|f| f.severity == Severity::Serious)
                .count(),
            2
        );
    }

    #[test]
    fn missing_prerouting_jump_is_serious() {
        let mut h = Fake::swarm();
        h.replace_rules(
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n",
            "",
        );
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ingress-jump"), Severity::Serious);
        assert_eq!(r.by_id("ingress-jump").count(), 2);
        // Reached through another chain is fine.
        let mut h = Fake::swarm();
        h.replace_rules(
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n",
            ":MINE - [0:0]\n-A PREROUTING -j MINE\n-A MINE -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n",
        );
        assert_eq!(h.run(&[]).by_id("ingress-jump").count(), 0);
    }

    #[test]
    fn dnat_to_somewhere_else_is_serious() {
        let mut h = Fake::swarm();
        h.replace_rules(
            "--to-destination 172.18.0.2:443",
            "--to-destination 172.19.0.2:443",
        );
        let r = h.run(&[]);
        let f = r
            .by_id("ingress-dnat")
            .find(|f| f.severity == Severity::Serious)
            .unwrap();
        assert!(
            f.title
                .contains("172.19.0.2:443, which is not ingress_sbox's address"),
            "{}",
            f.title
        );
        // Without ingress_sbox's addresses, docker_gwbridge's subnet decides.
        h.ifaces.retain(|i| i.netns != "ingress_sbox");
        assert_eq!(worst(&h.run(&[]), "ingress-dnat"), Severity::Serious);
        h.replace_rules("172.19.0.2:443", "172.18.0.3:443");
        assert_eq!(worst(&h.run(&[]), "ingress-dnat"), Severity::Ok);
    }

    #[test]
    fn forward_chain_must_let_the_syn_through() {
        let mut h = Fake::swarm();
        h.replace_rules("-A FORWARD -j DOCKER-INGRESS\n", "");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ingress-forward"), Severity::Warning);
        // With an ACCEPT policy nothing is dropped.
        h.replace_rules(":FORWARD DROP", ":FORWARD ACCEPT");
        assert_eq!(h.run(&[]).by_id("ingress-forward").count(), 0);
    }

    #[test]
    fn ingress_sbox_must_mark_the_port() {
        let mut h = Fake::swarm();
        let m = h
            .mangle
            .take()
            .unwrap()
            .replace("--dport 443 -j MARK", "--dport 444 -j MARK");
        h.mangle = Some(m);
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ingress-sbox-mark"), Severity::Serious);
        assert_eq!(
            r.by_id("ingress-sbox-mark").next().unwrap().title,
            "ingress_sbox does not mark port 443/tcp for IPVS"
        );
        // Not read: not checked.
        h.mangle = None;
        assert_eq!(h.run(&[]).by_id("ingress-sbox-mark").count(), 0);
    }

    #[test]
    fn without_the_api_the_rules_say_which_ports() {
        let mut h = Fake::swarm();
        h.docker = DockerApi::Absent;
        let r = h.run(&[]);
        assert!(problems(&r).is_empty(), "{:?}", problems(&r));
        assert_eq!(
            r.by_id("ingress-dnat")
                .filter(|f| f.severity == Severity::Ok)
                .count(),
            2
        );
        assert_eq!(worst(&r, "docker-api"), Severity::Info);
        // No DNAT rule and no API: nothing is known to be missing.
        h.rules[0].text = Ok(String::new());
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ingress-dnat"), Severity::Info);
        assert_eq!(r.serious(), 0);
        // Not a manager: /services fails, the rules decide.
        let mut h = Fake::swarm();
        if let DockerApi::Available(i) = &mut h.docker {
            i.published = Err("HTTP 503: This node is not a swarm manager.".into());
        }
        let r = h.run(&[]);
        assert_eq!(
            r.by_id("ingress-dnat")
                .filter(|f| f.severity == Severity::Ok)
                .count(),
            2
        );
        assert!(r
            .by_id("docker-api")
            .next()
            .unwrap()
            .title
            .contains("not a swarm manager"));
    }

    #[test]
    fn iptables_backends_and_unreadable_rules() {
        let mut h = Fake::swarm();
        let nft = h.rules[0].clone();
        h.rules.push(Ruleset {
            backend: "legacy".into(),
            text: nft.text.clone(),
        });
        let r = h.run(&[]);
        assert_eq!(worst(&r, "iptables-backends"), Severity::Info);
        assert_eq!(r.serious(), 0);
        // The legacy backend alone holds Docker's rules (nft is empty): still found.
        h.rules[0].text = Ok(String::new());
        let r = h.run(&[]);
        assert!(r
            .by_id("ingress-dnat")
            .all(|f| f.severity == Severity::Ok && f.title.ends_with("(legacy)")));
        // Unreadable: say so, do not guess.
        h.rules = vec![Ruleset {
            backend: "nft".into(),
            text: Err("Permission denied (you must be root)".into()),
        }];
        let r = h.run(&[]);
        assert_eq!(worst(&r, "iptables"), Severity::Info);
        assert!(r
            .by_id("iptables")
            .next()
            .unwrap()
            .detail
            .contains("you must be root"));
        assert_eq!(r.by_id("ingress-dnat").count(), 0);
    }

    #[test]
    fn docker_without_swarm_has_no_mesh_to_check() {
        let mut h = Fake::plain();
        h.ifaces
            .push(iface("host", "docker0", "172.17.0.1/16", true));
        h.set("net.ipv4.ip_forward", "1");
        h.set("net.bridge.bridge-nf-call-iptables", "1");
        let r = h.run(&[]);
        assert!(problems(&r).is_empty(), "{:?}", problems(&r));
        assert!(r
            .by_id("ingress-dnat")
            .next()
            .unwrap()
            .title
            .contains("no Swarm routing mesh"));
        assert_eq!(worst(&r, "docker-api"), Severity::Info);
        h.docker = DockerApi::Failed("permission denied".into());
        let r = h.run(&[]);
        assert!(r
            .by_id("docker-api")
            .next()
            .unwrap()
            .fix
            .as_deref()
            .unwrap()
            .contains("docker group"));
    }
}
