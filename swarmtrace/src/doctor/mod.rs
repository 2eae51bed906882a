//! `swarmtrace doctor`: static checks of this host, without eBPF. Sysctls that make published
//! ports drop handshakes (`sysctls`), Docker subnets that overlap the host's routes or the
//! clients' networks (`overlaps`), Docker's routing-mesh rules (`ingress`, `iptables`), the
//! ports the nodes talk on in INPUT (`swarm_ports`, with native nftables rules: `nft`), the
//! overlays' MTU against the underlay's (`overlay_mtu`), the conntrack table (`conntrack`), and
//! what `swarmtrace run` can see on this kernel
//! (`visibility`). Every check reads the host through [`HostView`] (`host`), so the unit
//! tests run the same checks on injected values; [`LiveHost`] reads it through `kernel/` and
//! `docker`.

mod conntrack;
#[cfg(test)]
mod fake;
mod host;
mod ingress;
mod iptables;
mod nft;
mod overlaps;
mod overlay_mtu;
mod report;
mod swarm_ports;
mod sysctls;
mod visibility;

use std::collections::BTreeSet;
use std::io::Write;

use crate::cli::DoctorArgs;
use crate::docker::{DockerApi, DockerInfo};

pub use self::host::{
    ConntrackFill, HostView, Iface, KernelView, LiveHost, OverlayLink, Ruleset, Scope,
};
pub use self::report::{Finding, Report, Severity};

/// Runs every check against `host`.
pub fn check(host: &dyn HostView, args: &DoctorArgs) -> Report {
    let scope = host.scope();
    let ifaces: Vec<Iface> = host
        .interfaces()
        .into_iter()
        .filter(|i| overlaps::usable(&i.cidr))
        .collect();
    let routes = host.routes();
    let rulesets = host.iptables_save();
    let docker = host.docker();
    let info = match &docker {
        DockerApi::Available(i) => Some(i),
        _ => None,
    };
    let docker_rules = rulesets
        .iter()
        .any(|r| r.text.as_ref().is_ok_and(|t| t.contains(":DOCKER")));
    let facts = DockerFacts::new(&scope, &ifaces, &docker, info, docker_rules, &rulesets);

    let mut f = Vec::new();
    f.push(scope_finding(&scope));
    sysctls::sysctls(host, &facts, &mut f);
    overlaps::subnets(&ifaces, &routes, info, &args.client_cidr, &mut f);
    ingress::docker_checks(host, &facts, &ifaces, &rulesets, &docker, info, &mut f);
    overlay_mtu::overlay_mtu(host, &ifaces, info.and_then(|i| i.node_addr), &mut f);
    conntrack::conntrack(&host.conntrack(), &mut f);
    visibility::kernel(&host.kernel(), scope.root, &mut f);
    Report { findings: f }
}

/// What says Docker (and Swarm) is here.
struct DockerFacts {
    present: bool,
    swarm: bool,
    evidence: Vec<String>,
}

impl DockerFacts {
    fn new(
        scope: &Scope,
        ifaces: &[Iface],
        docker: &DockerApi,
        info: Option<&DockerInfo>,
        docker_rules: bool,
        rulesets: &[Ruleset],
    ) -> Self {
        let mut evidence = Vec::new();
        match docker {
            DockerApi::Available(_) => evidence.push("the Docker API answers".to_owned()),
            DockerApi::Failed(_) => evidence.push("a Docker API socket".to_owned()),
            DockerApi::Absent => {}
        }
        let bridges: BTreeSet<&str> = ifaces
            .iter()
            .filter(|i| i.netns == "host" && docker_bridge_name(&i.name))
            .map(|i| i.name.as_str())
            .collect();
        if !bridges.is_empty() {
            evidence.push(format!(
                "bridge(s) {}",
                bridges.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
        if !scope.docker_namespaces.is_empty() {
            evidence.push(format!(
                "{} Docker namespace(s)",
                scope.docker_namespaces.len()
            ));
        }
        if docker_rules {
            evidence.push("DOCKER chains in iptables".to_owned());
        }
        let mut swarm = bridges.contains("docker_gwbridge")
            || scope.docker_namespaces.iter().any(|n| n == "ingress_sbox")
            || rulesets
                .iter()
                .any(|r| r.text.as_ref().is_ok_and(|t| t.contains(":DOCKER-INGRESS")));
        if let Some(i) = info {
            swarm |= i.swarm.as_deref() == Some("active") || i.networks.iter().any(|n| n.ingress);
        }
        Self {
            present: !evidence.is_empty(),
            swarm,
            evidence,
        }
    }
}

fn docker_bridge_name(name: &str) -> bool {
    name == "docker0" || name == "docker_gwbridge" || name.starts_with("br-")
}

fn scope_finding(s: &Scope) -> Finding {
    let who = if s.root {
        "as root"
    } else {
        "not as root: iptables, Docker's namespaces, tracefs and maybe the Docker API were not readable"
    };
    let initial = match s.initial {
        Some(true) => " (the initial namespace)",
        Some(false) => " (not the initial namespace)",
        None => "",
    };
    let mut d = format!(
        "Checked the network namespace `{}`{initial}, {who}.",
        s.here
    );
    if s.docker_namespaces.is_empty() {
        if let Some(n) = &s.note {
            d.push_str(&format!(" Docker's namespaces were not read: {n}."));
        } else {
            d.push_str(" No Docker namespace found.");
        }
    } else {
        d.push_str(&format!(
            " Also read Docker's namespaces: {}.",
            list(&s.docker_namespaces, 8)
        ));
    }
    let sev = if s.root { Severity::Ok } else { Severity::Info };
    let mut f = Finding::new("scope", sev, format!("namespace {}", s.here)).detail(d);
    if !s.root {
        f = f.fix("Run `sudo swarmtrace doctor` for the full check.");
    }
    f
}

pub(crate) fn list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..max].join(", "), items.len() - max)
    }
}

/// The command: prints text or JSON; returns Ok(true) when no finding is Serious.
pub fn doctor(args: DoctorArgs) -> anyhow::Result<bool> {
    let host = LiveHost::new();
    let report = check(&host, &args);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    out.flush()?;
    Ok(report.serious() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fake::*;

    #[test]
    fn a_healthy_machine_without_docker_is_clean() {
        let r = Fake::plain().run(&["10.20.0.0/16"]);
        assert!(problems(&r).is_empty(), "{:?}", problems(&r));
        assert_eq!(worst(&r, "docker"), Severity::Info);
        assert!(r.by_id("docker").any(|f| f.title == "no Docker here"));
        assert_eq!(r.by_id("docker-api").count(), 0);
        assert_eq!(worst(&r, "ip-forward"), Severity::Ok);
        assert_eq!(worst(&r, "client-overlap"), Severity::Ok);
        assert_eq!(r.serious(), 0);
    }

    #[test]
    fn a_healthy_swarm_node_is_clean() {
        let h = Fake::swarm();
        let r = h.run(&["192.168.7.0/24", "203.0.113.0/24"]);
        assert!(
            problems(&r).is_empty(),
            "{:?}\n{}",
            problems(&r),
            r.to_text()
        );
        let dnat: Vec<&str> = r.by_id("ingress-dnat").map(|f| f.title.as_str()).collect();
        assert_eq!(dnat.len(), 2, "{dnat:?}");
        assert!(
            dnat.iter()
                .any(|t| t.contains("8080/tcp (service web_app): DNAT to 172.18.0.2:8080 (nft)")),
            "{dnat:?}"
        );
        assert!(
            dnat.iter().any(|t| t.contains("443/tcp (service proxy)")),
            "{dnat:?}"
        );
        assert!(r
            .by_id("docker")
            .any(|f| f.title.contains("Swarm routing mesh")));
        assert_eq!(worst(&r, "docker-api"), Severity::Ok);
        assert!(
            r.by_id("docker-api")
                .any(|f| f.title == "Docker API: 6 network(s), swarm active, 3 published port(s)"),
            "{}",
            r.to_text()
        );
        // docker_gwbridge seen from the host and ingress_sbox is one network; VIPs are not subnets.
        assert_eq!(r.by_id("docker-overlap").count(), 0);
        assert_eq!(r.by_id("route-overlap").count(), 0);
        let subnets = &r.by_id("docker-subnets").next().unwrap().detail;
        assert!(subnets.contains("172.18.0.0/16 (host:docker_gwbridge, ingress_sbox:eth1, network docker_gwbridge (bridge))"), "{subnets}");
        assert!(!subnets.contains("fe80"), "{subnets}");
        // Host-mode ports are not the mesh's.
        assert!(!r.to_text().contains("9100"));
    }
}
