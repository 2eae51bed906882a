//! Sysctls that make published ports drop handshakes: tcp_tw_recycle, timestamps, SYN
//! cookies, backlogs, forwarding, br_netfilter and rp_filter.

use super::report::{Finding, Severity};
use super::{list, DockerFacts, HostView};

fn num(host: &dyn HostView, name: &str) -> Option<i64> {
    host.sysctl(name)?.trim().parse().ok()
}

pub(super) fn sysctls(host: &dyn HostView, docker: &DockerFacts, f: &mut Vec<Finding>) {
    // tcp_tw_recycle: the classic.
    f.push(match host.sysctl("net.ipv4.tcp_tw_recycle").map(|v| v.trim().to_owned()) {
        None => Finding::new(
            "tcp-tw-recycle",
            Severity::Ok,
            "net.ipv4.tcp_tw_recycle does not exist (removed in Linux 4.12)",
        )
        .detail("The classic cause of SYNs from clients behind NAT vanishing (per-address timestamp checks, TcpExt PAWSPassive) cannot happen on this kernel."),
        Some(v) if v == "0" => Finding::new(
            "tcp-tw-recycle",
            Severity::Ok,
            "net.ipv4.tcp_tw_recycle = 0",
        )
        .detail("Off, as it must be behind NAT."),
        Some(v) => Finding::new(
            "tcp-tw-recycle",
            Severity::Serious,
            format!("net.ipv4.tcp_tw_recycle = {v}: SYNs from clients behind NAT are dropped"),
        )
        .detail("With tcp_tw_recycle the kernel remembers the last TCP timestamp (TSval) of each peer address and silently drops a SYN that carries an older one (TcpExt PAWSPassive rises; no drop reason, no RST). Clients behind one NAT share an address but each has its own timestamp clock, so some of their SYNs get no SYN-ACK, at random. The routing mesh's SNAT makes every client one address for the task, so inside a task namespace it hits everyone.")
        .fix("sysctl -w net.ipv4.tcp_tw_recycle=0, and remove it from /etc/sysctl.conf and /etc/sysctl.d/*; set it in the task namespaces too if they inherited it. (Linux 4.12 removed the option because it breaks NAT.)"),
    });

    // tcp_timestamps: what PAWS compares.
    let ts = host
        .sysctl("net.ipv4.tcp_timestamps")
        .map(|v| v.trim().to_owned());
    f.push(match ts.as_deref() {
        Some("0") => Finding::new("tcp-timestamps", Severity::Info, "net.ipv4.tcp_timestamps = 0")
            .detail("Timestamps are off for connections accepted in this namespace: PAWS cannot drop SYNs here (a task namespace has its own value), but the kernel also loses protection against wrapped sequence numbers and its RTT samples."),
        Some(v) => Finding::new(
            "tcp-timestamps",
            Severity::Info,
            format!("net.ipv4.tcp_timestamps = {v} (on{})", if v == "2" { ", without random offsets" } else { "" }),
        )
        .detail("TCP timestamps are what PAWS compares. A SYN that reuses the address and port of a connection still in TIME_WAIT, with a TSval older than that connection's, is dropped without an answer (TCP_RFC7323_TW_PAWS on Linux 6.16+, TcpExt PAWSTimewait). Behind the routing mesh's SNAT many clients share few source addresses and ports, so such reuse happens; `swarmtrace run` shows it when it does. Leave timestamps on unless that is the diagnosis."),
        None => Finding::new("tcp-timestamps", Severity::Info, "net.ipv4.tcp_timestamps is not readable"),
    });

    // tcp_tw_reuse: outgoing connections only.
    if let Some(v) = host.sysctl("net.ipv4.tcp_tw_reuse") {
        let v = v.trim();
        let meaning = match v {
            "0" => "off",
            "1" => "on for all outgoing connections",
            "2" => "on for loopback only, the default",
            _ => "unknown value",
        };
        f.push(
            Finding::new("tcp-tw-reuse", Severity::Info, format!("net.ipv4.tcp_tw_reuse = {v} ({meaning})"))
                .detail("tcp_tw_reuse lets outgoing connections reuse ports held by TIME_WAIT sockets; it does nothing for connections to published ports (incoming), and it is not a fix for PAWS drops of incoming SYNs."),
        );
    }

    // tcp_syncookies.
    let cookies = num(host, "net.ipv4.tcp_syncookies");
    f.push(match cookies {
        Some(0) | None => Finding::new(
            "tcp-syncookies",
            Severity::Warning,
            if cookies.is_none() {
                "net.ipv4.tcp_syncookies does not exist: no SYN cookies (CONFIG_SYN_COOKIES off)".to_owned()
            } else {
                "net.ipv4.tcp_syncookies = 0: a full SYN queue drops SYNs silently".to_owned()
            },
        )
        .detail("Without SYN cookies, when a listener's SYN queue is full (a burst of clients, a SYN flood, a slow application) new SYNs are dropped without an answer and without a drop reason; only TcpExt ListenDrops and TCPReqQFullDrop rise. Clients of the published port see handshakes time out.")
        .fix("sysctl -w net.ipv4.tcp_syncookies=1 (the default) and persist it in /etc/sysctl.d/; a task namespace has its own value (docker service update --sysctl-add net.ipv4.tcp_syncookies=1 SERVICE)."),
        Some(2) => Finding::new("tcp-syncookies", Severity::Info, "net.ipv4.tcp_syncookies = 2 (cookies for every SYN)")
            .detail("Every SYN is answered with a cookie, even when the queue is not full: no SYN is dropped for lack of queue space."),
        Some(v) => Finding::new("tcp-syncookies", Severity::Ok, format!("net.ipv4.tcp_syncookies = {v}"))
            .detail("SYN cookies answer SYNs when a listener's SYN queue is full, instead of dropping them."),
    });

    // Backlogs.
    match num(host, "net.core.somaxconn") {
        Some(v) if v < 1024 => f.push(
            Finding::new("somaxconn", Severity::Warning, format!("net.core.somaxconn = {v} (< 1024)"))
                .detail(format!("Every listen() backlog in this namespace is capped at {v}: when the application accepts more slowly than connections arrive, the accept queue overflows and the kernel drops handshakes silently (TcpExt ListenOverflows, ListenDrops). Each task namespace has its own value (the default was 128 before Linux 5.4)."))
                .fix("sysctl -w net.core.somaxconn=4096 (here), and for a service: docker service update --sysctl-add net.core.somaxconn=4096 SERVICE; the application's own listen backlog must be raised too."),
        ),
        Some(v) => f.push(Finding::new("somaxconn", Severity::Ok, format!("net.core.somaxconn = {v}"))),
        None => f.push(Finding::new("somaxconn", Severity::Info, "net.core.somaxconn is not readable")),
    }
    match num(host, "net.ipv4.tcp_max_syn_backlog") {
        Some(v) if v < 1024 => {
            let sev = if matches!(cookies, Some(0) | None) {
                Severity::Warning
            } else {
                Severity::Info
            };
            f.push(
                Finding::new(
                    "tcp-max-syn-backlog",
                    sev,
                    format!("net.ipv4.tcp_max_syn_backlog = {v} (< 1024)"),
                )
                .detail(if sev == Severity::Warning {
                    format!("With SYN cookies off, the kernel drops SYNs from clients it has not talked to before once a listener's SYN queue is over 3/4 of {v}: a burst of new clients gets no SYN-ACK.")
                } else {
                    format!("Small, but SYN cookies are on: when a listener's SYN queue passes 3/4 of {v} the kernel answers with cookies instead of dropping.")
                })
                .fix("sysctl -w net.ipv4.tcp_max_syn_backlog=4096"),
            )
        }
        Some(v) => f.push(Finding::new(
            "tcp-max-syn-backlog",
            Severity::Ok,
            format!("net.ipv4.tcp_max_syn_backlog = {v}"),
        )),
        None => f.push(Finding::new(
            "tcp-max-syn-backlog",
            Severity::Info,
            "net.ipv4.tcp_max_syn_backlog is not readable",
        )),
    }

    // ip_forward.
    let fwd = num(host, "net.ipv4.ip_forward");
    f.push(match (fwd, docker.present) {
        (Some(0), true) => Finding::new(
            "ip-forward",
            Severity::Serious,
            "net.ipv4.ip_forward = 0 while Docker networks exist: published ports cannot work",
        )
        .detail("The routing mesh forwards each SYN from the interface it arrives on to docker_gwbridge (and a `-p` port to docker0 or a br-* bridge). With forwarding off the kernel drops it (no SYN-ACK). Docker turns forwarding on when it starts, so something reset it: a sysctl.d file applied later, a network manager, a firewall script.")
        .fix("sysctl -w net.ipv4.ip_forward=1, and find what sets it to 0: grep -r ip_forward /etc/sysctl.conf /etc/sysctl.d /usr/lib/sysctl.d"),
        (Some(0), false) => Finding::new("ip-forward", Severity::Ok, "net.ipv4.ip_forward = 0 (no Docker here; Docker turns it on)"),
        (Some(v), _) => Finding::new("ip-forward", Severity::Ok, format!("net.ipv4.ip_forward = {v}")),
        (None, _) => Finding::new("ip-forward", Severity::Info, "net.ipv4.ip_forward is not readable"),
    });

    // bridge-nf-call-iptables.
    let brnf = num(host, "net.bridge.bridge-nf-call-iptables");
    let brnf_detail = "Without it, packets switched between two ports of one bridge (container to container on docker0, a br-* network or docker_gwbridge, or a container reaching a published port of its own host through hairpin NAT) bypass iptables: the DNAT and MASQUERADE of published ports do not apply to them, and replies come back un-NATed, so the client drops or resets them.";
    let brnf_fix = "modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1; persist with /etc/modules-load.d/br_netfilter.conf and /etc/sysctl.d/ (Docker loads the module when it starts; something unloaded it or reset the sysctl).";
    f.push(match (brnf, docker.present) {
        (Some(1), _) => Finding::new("bridge-nf-call-iptables", Severity::Ok, "net.bridge.bridge-nf-call-iptables = 1"),
        (None, true) => Finding::new(
            "bridge-nf-call-iptables",
            Severity::Warning,
            "net.bridge.bridge-nf-call-iptables does not exist (br_netfilter not loaded) while Docker bridges exist",
        )
        .detail(brnf_detail)
        .fix(brnf_fix),
        (Some(v), true) => Finding::new(
            "bridge-nf-call-iptables",
            Severity::Warning,
            format!("net.bridge.bridge-nf-call-iptables = {v} while Docker bridges exist"),
        )
        .detail(brnf_detail)
        .fix(brnf_fix),
        (v, false) => Finding::new(
            "bridge-nf-call-iptables",
            Severity::Ok,
            match v {
                Some(v) => format!("net.bridge.bridge-nf-call-iptables = {v} (no Docker bridges here)"),
                None => "br_netfilter is not loaded (no Docker bridges here)".to_owned(),
            },
        ),
    });

    rp_filter(host, f);
}

/// `rp_filter` in force for each interface: max(conf.all, conf.IFACE).
fn rp_filter(host: &dyn HostView, f: &mut Vec<Finding>) {
    let all = num(host, "net.ipv4.conf.all.rp_filter");
    let default = num(host, "net.ipv4.conf.default.rp_filter");
    let mut strict = Vec::new();
    let mut loose = Vec::new();
    for iface in host.sysctl_dir("net.ipv4.conf") {
        if matches!(iface.as_str(), "all" | "default" | "lo") {
            continue;
        }
        let key = format!("net.ipv4.conf.{}.rp_filter", iface.replace('.', "/"));
        let Some(v) = num(host, &key) else { continue };
        match v.max(all.unwrap_or(0)) {
            1 => strict.push(iface),
            2 => loose.push(iface),
            _ => {}
        }
    }
    let explain = "Strict reverse-path filtering (rp_filter=1) drops a packet when the route back to its source leaves by another interface than the one it came in on (drop reason IP_RPFILTER, TcpExt IPReversePathFilter rises). Hosts with two uplinks, policy routing, clients reached through a VPN or a second NIC have such asymmetric routes; SYNs from those clients then get no SYN-ACK. The value in force on an interface is max(conf.all.rp_filter, conf.IFACE.rp_filter).";
    let fix = "Make the route back to the clients leave by the interface they come in on, or use loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.IFACE.rp_filter=2 (for the interfaces clients come in on), persisted in /etc/sysctl.d/.";
    let values = format!(
        "all = {}, default = {}",
        all.map_or("?".to_owned(), |v| v.to_string()),
        default.map_or("?".to_owned(), |v| v.to_string())
    );
    if !strict.is_empty() {
        f.push(
            Finding::new(
                "rp-filter",
                Severity::Warning,
                format!(
                    "strict rp_filter in force on {} ({values})",
                    list(&strict, 6)
                ),
            )
            .detail(explain)
            .fix(fix),
        );
    } else if default == Some(1) {
        f.push(
            Finding::new(
                "rp-filter",
                Severity::Info,
                format!("rp_filter: no interface is strict now, but new ones will be ({values})"),
            )
            .detail(format!("net.ipv4.conf.default.rp_filter = 1: interfaces created from now on (a re-created docker_gwbridge or bridge network) start strict. {explain}"))
            .fix(fix),
        );
    } else {
        let mode = if loose.is_empty() {
            "off"
        } else {
            "off or loose"
        };
        f.push(Finding::new(
            "rp-filter",
            Severity::Ok,
            format!("rp_filter {mode} on every interface ({values})"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fake::*;

    #[test]
    fn tcp_tw_recycle() {
        let mut h = Fake::plain();
        let r = h.run(&[]);
        assert_eq!(worst(&r, "tcp-tw-recycle"), Severity::Ok);
        assert!(r
            .by_id("tcp-tw-recycle")
            .next()
            .unwrap()
            .title
            .contains("removed in Linux 4.12"));
        h.set("net.ipv4.tcp_tw_recycle", "0");
        assert_eq!(worst(&h.run(&[]), "tcp-tw-recycle"), Severity::Ok);
        h.set("net.ipv4.tcp_tw_recycle", "1");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "tcp-tw-recycle"), Severity::Serious);
        let f = r.by_id("tcp-tw-recycle").next().unwrap();
        assert!(f.detail.contains("PAWSPassive") && f.fix.is_some());
    }

    #[test]
    fn tcp_timestamps_and_tw_reuse_are_information() {
        let mut h = Fake::plain();
        for v in ["0", "1", "2"] {
            h.set("net.ipv4.tcp_timestamps", v);
            let r = h.run(&[]);
            assert_eq!(worst(&r, "tcp-timestamps"), Severity::Info);
            assert!(r
                .by_id("tcp-timestamps")
                .next()
                .unwrap()
                .title
                .contains(&format!("= {v}")));
        }
        h.set("net.ipv4.tcp_timestamps", "1");
        assert!(h
            .run(&[])
            .by_id("tcp-timestamps")
            .next()
            .unwrap()
            .detail
            .contains("PAWS"));
        assert_eq!(worst(&h.run(&[]), "tcp-tw-reuse"), Severity::Info);
    }

    #[test]
    fn syncookies() {
        let mut h = Fake::plain();
        assert_eq!(worst(&h.run(&[]), "tcp-syncookies"), Severity::Ok);
        h.set("net.ipv4.tcp_syncookies", "2");
        assert_eq!(worst(&h.run(&[]), "tcp-syncookies"), Severity::Info);
        h.set("net.ipv4.tcp_syncookies", "0");
        assert_eq!(worst(&h.run(&[]), "tcp-syncookies"), Severity::Warning);
        h.unset("net.ipv4.tcp_syncookies");
        assert_eq!(worst(&h.run(&[]), "tcp-syncookies"), Severity::Warning);
    }

    #[test]
    fn backlogs() {
        let mut h = Fake::plain();
        h.set("net.core.somaxconn", "1023");
        assert_eq!(worst(&h.run(&[]), "somaxconn"), Severity::Warning);
        h.set("net.core.somaxconn", "1024");
        assert_eq!(worst(&h.run(&[]), "somaxconn"), Severity::Ok);
        // A small SYN backlog matters when SYN cookies are off.
        h.set("net.ipv4.tcp_max_syn_backlog", "512");
        assert_eq!(worst(&h.run(&[]), "tcp-max-syn-backlog"), Severity::Info);
        h.set("net.ipv4.tcp_syncookies", "0");
        assert_eq!(worst(&h.run(&[]), "tcp-max-syn-backlog"), Severity::Warning);
        h.set("net.ipv4.tcp_max_syn_backlog", "1024");
        assert_eq!(worst(&h.run(&[]), "tcp-max-syn-backlog"), Severity::Ok);
    }

    #[test]
    fn ip_forward_matters_with_docker_only() {
        let mut h = Fake::swarm();
        h.set("net.ipv4.ip_forward", "0");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ip-forward"), Severity::Serious);
        assert_eq!(r.serious(), 1, "{:?}", problems(&r));
        let mut h = Fake::plain();
        h.set("net.ipv4.ip_forward", "0");
        assert_eq!(worst(&h.run(&[]), "ip-forward"), Severity::Ok);
        // A bare docker_gwbridge is enough to call it Docker.
        h.ifaces
            .push(iface("host", "docker_gwbridge", "172.18.0.1/16", true));
        assert_eq!(worst(&h.run(&[]), "ip-forward"), Severity::Serious);
    }

    #[test]
    fn bridge_nf_call_iptables() {
        let mut h = Fake::swarm();
        assert_eq!(worst(&h.run(&[]), "bridge-nf-call-iptables"), Severity::Ok);
        h.set("net.bridge.bridge-nf-call-iptables", "0");
        assert_eq!(
            worst(&h.run(&[]), "bridge-nf-call-iptables"),
            Severity::Warning
        );
        h.unset("net.bridge.bridge-nf-call-iptables");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "bridge-nf-call-iptables"), Severity::Warning);
        assert!(r
            .by_id("bridge-nf-call-iptables")
            .next()
            .unwrap()
            .title
            .contains("br_netfilter not loaded"));
        assert_eq!(
            worst(&Fake::plain().run(&[]), "bridge-nf-call-iptables"),
            Severity::Ok
        );
    }

    #[test]
    fn rp_filter_in_force_is_max_of_all_and_interface() {
        let rp = |all: &str, eth0: &str| {
            let mut h = Fake::plain();
            h.set("net.ipv4.conf.all.rp_filter", all);
            h.set("net.ipv4.conf.eth0.rp_filter", eth0);
            h.run(&[])
        };
        assert_eq!(worst(&rp("0", "0"), "rp-filter"), Severity::Ok);
        assert_eq!(worst(&rp("1", "0"), "rp-filter"), Severity::Warning);
        assert_eq!(worst(&rp("0", "1"), "rp-filter"), Severity::Warning);
        assert_eq!(worst(&rp("1", "2"), "rp-filter"), Severity::Ok);
        assert_eq!(worst(&rp("2", "1"), "rp-filter"), Severity::Ok);
        assert_eq!(worst(&rp("2", "0"), "rp-filter"), Severity::Ok);
        let r = rp("1", "0");
        let f = r.by_id("rp-filter").next().unwrap();
        assert!(
            f.title.contains("eth0") && !f.title.contains("lo,"),
            "{}",
            f.title
        );
        assert!(f
            .detail
            .contains("max(conf.all.rp_filter, conf.IFACE.rp_filter)"));
        // Loopback does not count; strict default only warns about the future.
        let mut h = Fake::plain();
        h.set("net.ipv4.conf.lo.rp_filter", "1");
        assert_eq!(worst(&h.run(&[]), "rp-filter"), Severity::Ok);
        h.set("net.ipv4.conf.default.rp_filter", "1");
        assert_eq!(worst(&h.run(&[]), "rp-filter"), Severity::Info);
        // A VLAN interface: its sysctl name writes the dot as a slash.
        let mut h = Fake::plain();
        h.set("net.ipv4.conf.eth0/100.rp_filter", "1");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "rp-filter"), Severity::Warning);
        assert!(r
            .by_id("rp-filter")
            .next()
            .unwrap()
            .title
            .contains("eth0.100"));
    }
}
