//! Privileged tests of the routing-mesh lab itself, without the tracer: each scenario produces
//! the facts it promises (outcomes, counters in the right namespace, the kernel's drop reasons
//! read through tracefs), and a dropped lab leaves no namespace behind. Run as root
//! (`sudo cargo xtask test`); skipped otherwise. Tests run in parallel: each uses its own prefix.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use swarmtrace::lab::dropwatch::{self, DropWatch, KernelDrop};
use swarmtrace::lab::mesh::{self, client_ip, MeshLab, Scenario};
use swarmtrace::lab::observe::{self, TcpState};
use swarmtrace::lab::traffic::Outcome;
use swarmtrace_tests::{ns_name, require_privileged};

fn build(tag: &str) -> MeshLab {
    MeshLab::build(&ns_name(tag)).expect("cannot build the mesh lab")
}

/// Drops the lab and checks that none of its namespaces is left.
fn finish(lab: MeshLab) {
    let prefix = lab.prefix().to_owned();
    let names: Vec<String> = lab
        .namespaces()
        .iter()
        .map(|n| n.name().to_owned())
        .collect();
    drop(lab);
    let left = mesh::existing(&prefix).unwrap();
    assert!(
        left.is_empty(),
        "namespaces left after drop: {left:?} (had {names:?})"
    );
}

/// Waits (bounded) for a kernel drop with `reason` at `function`, recorded after `since`.
fn kernel_drop(
    watch: &DropWatch,
    since: f64,
    reason: &str,
    function: &str,
    timeout: Duration,
) -> KernelDrop {
    watch
        .wait_for(timeout, |d| {
            d.time >= since && d.reason == reason && d.function() == function
        })
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "no {reason} drop at {function}; recorded: {:?}",
                watch.drops().unwrap()
            )
        })
}

fn attempts_summary(d: &mesh::Drive) -> String {
    d.attempts
        .iter()
        .map(|a| format!("{} {:?} {:?}: {}", a.client, a.outcome, a.elapsed, a.note))
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn healthy_mesh_answers_every_client_through_both_nats() {
    require_privileged("healthy_mesh_answers_every_client_through_both_nats");
    let mut lab = build("mh");
    assert_eq!(lab.published(), "10.10.0.1:8080".parse().unwrap());
    assert_eq!(
        lab.watch(),
        [
            format!("{}-host:eth0", lab.prefix()),
            format!("{}-host:docker_gwbridge", lab.prefix())
        ]
    );
    let d = lab.drive(Scenario::Healthy).unwrap();
    eprintln!("healthy:\n  {}", attempts_summary(&d));
    assert_eq!(d.attempts.len(), 9);
    for a in &d.attempts {
        assert_eq!(a.outcome, Outcome::Connected, "{a:?}");
        assert_eq!(a.answer.as_deref(), Some("ok\n"), "{a:?}");
        assert_ne!(a.client.port(), 0);
    }
    for i in 0..3 {
        let ip = SocketAddr::from((client_ip(i), 0)).ip();
        assert_eq!(d.attempts.iter().filter(|a| a.client.ip() == ip).count(), 3);
    }
    // The task sees every client as ingress_sbox's SNAT address; it closed first, so the
    // TIME_WAITs are on its side.
    let tws: Vec<_> = observe::tcp_sockets(lab.task())
        .unwrap()
        .into_iter()
        .filter(|s| s.state == TcpState::TimeWait)
        .collect();
    assert!(tws.len() >= 9, "{tws:?}");
    assert!(
        tws.iter()
            .all(|s| *s.remote.ip() == mesh::SBOX_INGRESS_IP && s.local.port() == 80),
        "{tws:?}"
    );
    let host_ct = observe::conntrack(lab.host()).unwrap();
    assert!(
        host_ct.iter().any(|l| l.contains("dst=10.10.0.1")
            && l.contains("dport=8080")
            && l.contains("src=172.18.0.2")),
        "no DNAT entry in the host: {host_ct:?}"
    );
    let sbox_ct = observe::conntrack(lab.sbox()).unwrap();
    assert!(
        sbox_ct
            .iter()
            .any(|l| l.contains("src=10.0.0.5") && l.contains("dst=10.0.0.2")),
        "no DNAT+SNAT entry in ingress_sbox: {sbox_ct:?}"
    );
    assert!(
        d.delta(lab.task(), "Tcp.PassiveOpens") >= 9,
        "{:?}",
        d.deltas
    );
    assert_eq!(
        d.delta(lab.task(), "TcpExt.ListenDrops"),
        0,
        "{:?}",
        d.deltas
    );
    finish(lab);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn drop_rule_times_out_with_netfilter_drop_in_host() {
    require_privileged("drop_rule_times_out_with_netfilter_drop_in_host");
    let mut lab = build("md");
    lab.apply(Scenario::DropRule).unwrap();
    let watch = DropWatch::start(lab.prefix()).unwrap();
    let t0 = dropwatch::now();
    let d = lab.drive(Scenario::DropRule).unwrap();
    eprintln!("drop-rule:\n  {}\n  {:?}", attempts_summary(&d), d.notes);
    assert_eq!(d.attempts.len(), 1);
    let a = &d.attempts[0];
    assert_eq!(a.outcome, Outcome::TimedOut, "{a:?}");
    assert_eq!(a.client.ip(), Ipv4Addr::new(10, 10, 0, 11));
    let hits: u64 = observe::rule_packets(lab.host(), "filter", "DOCKER-USER")
        .unwrap()
        .iter()
        .filter(|(_, r)| r.starts_with("DROP"))
        .map(|(p, _)| p)
        .sum();
    assert!(hits >= 1, "the DROP rule matched nothing");
    // Nothing reached the task.
    assert_eq!(d.delta(lab.task(), "Tcp.InSegs"), 0, "{:?}", d.deltas);
    let k = kernel_drop(
        &watch,
        t0,
        "NETFILTER_DROP",
        "nft_do_chain",
        Duration::from_secs(2),
    );
    eprintln!("drop-rule: kernel drop {k:?}");
    drop(watch);
    finish(lab);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn no_listener_is_refused_with_no_socket_in_task() {
    require_privileged("no_listener_is_refused_with_no_socket_in_task");
    let mut lab = build("mn");
    lab.apply(Scenario::NoListener).unwrap();
    assert!(
        !observe::tcp_sockets(lab.task())
            .unwrap()
            .iter()
            .any(|s| s.state == TcpState::Listen),
        "the task still listens"
    );
    let watch = DropWatch::start(lab.prefix()).unwrap();
    let t0 = dropwatch::now();
    let d = lab.drive(Scenario::NoListener).unwrap();
    eprintln!("no-listener:\n  {}", attempts_summary(&d));
    assert_eq!(d.attempts[0].outcome, Outcome::Refused, "{:?}", d.attempts);
    assert!(d.delta(lab.task(), "Tcp.OutRsts") >= 1, "{:?}", d.deltas);
    let k = kernel_drop(
        &watch,
        t0,
        "NO_SOCKET",
        "tcp_v4_rcv",
        Duration::from_secs(2),
    );
    eprintln!("no-listener: kernel drop {k:?}");
    drop(watch);
    finish(lab);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn listen_queue_full_drops_later_syns_silently() {
    require_privileged("listen_queue_full_drops_later_syns_silently");
    let mut lab = build("mq");
    lab.apply(Scenario::ListenQueueFull).unwrap();
    let cookies = lab
        .task()
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/tcp_syncookies"))
        .unwrap()
        .unwrap();
    assert_eq!(cookies.trim(), "0");
    let d = lab.drive(Scenario::ListenQueueFull).unwrap();
    eprintln!(
        "listen-queue-full:\n  {}\n  {:?}\n  task: {}",
        attempts_summary(&d),
        d.notes,
        d.deltas[lab.task().name()]
    );
    assert_eq!(d.attempts.len(), 6);
    let queued = (mesh::FULL_BACKLOG + 1) as usize;
    for (i, a) in d.attempts.iter().enumerate() {
        let want = if i < queued {
            Outcome::Connected
        } else {
            Outcome::TimedOut
        };
        assert_eq!(a.outcome, want, "attempt {i}: {a:?}");
    }
    assert!(
        d.delta(lab.task(), "TcpExt.ListenOverflows") >= 1,
        "{:?}",
        d.deltas
    );
    assert!(
        d.delta(lab.task(), "TcpExt.ListenDrops") >= 1,
        "{:?}",
        d.deltas
    );
    let listener = observe::tcp_sockets(lab.task())
        .unwrap()
        .into_iter()
        .find(|s| s.state == TcpState::Listen)
        .unwrap();
    assert_eq!(listener.rx_queue as usize, queued, "{listener:?}");
    finish(lab);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn paws_step_by_step() {
    require_privileged("paws_step_by_step");
    let lab = {
        let mut lab = build("mp");
        lab.apply(Scenario::Paws).unwrap();
        lab
    };
    let mut notes = Vec::new();
    let first = lab.paws_prepare(&mut notes).unwrap();
    assert_eq!(first.client, "10.10.0.11:40000".parse().unwrap());
    assert_eq!(first.answer.as_deref(), Some("ok\n"));
    // The TIME_WAIT is in the task, on the SNAT'ed tuple, and ingress_sbox forgot the flow.
    assert!(observe::has_time_wait(
        lab.task(),
        "10.0.0.5:80".parse().unwrap(),
        "10.0.0.2:40000".parse().unwrap()
    )
    .unwrap());
    let sbox_ct = observe::conntrack(lab.sbox()).unwrap();
    assert!(
        !sbox_ct.iter().any(|l| l.contains("port=40000 ")),
        "{sbox_ct:?}"
    );
    // The task has no conntrack at all: nothing there can protect the TIME_WAIT.
    assert!(observe::conntrack(lab.task()).unwrap().is_empty());
    let before = observe::counters(lab.task()).unwrap();
    let watch = DropWatch::start(lab.prefix()).unwrap();
    let t0 = dropwatch::now();
    let tsval = first.tsval.unwrap().wrapping_sub(mesh::PAWS_TSVAL_BACK);
    let second = lab.paws_syn(tsval, &mut notes).unwrap();
    eprintln!("paws: {first:?}\n  {second:?}\n  {notes:?}");
    assert_eq!(second.client, "10.10.0.12:40000".parse().unwrap());
    assert_eq!(second.tsval, Some(tsval));
    assert!(second.isn.is_some());
    // No SYN-ACK: the TIME_WAIT answers with a bare ACK.
    assert_eq!(second.outcome, Outcome::TimedOut, "{second:?}");
    let delta = observe::counters(lab.task()).unwrap().since(&before);
    assert!(delta.get("TcpExt.PAWSTimewait") >= 1, "{delta}");
    let k = kernel_drop(
        &watch,
        t0,
        "TCP_RFC7323_TW_PAWS",
        "tcp_v4_rcv",
        Duration::from_secs(2),
    );
    eprintln!("paws: kernel drop {k:?}; task counters changed: {delta}");
    drop(watch);
    finish(lab);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn paws_drive_reports_both_handshakes() {
    require_privileged("paws_drive_reports_both_handshakes");
    let mut lab = build("mr");
    assert!(lab.drive(Scenario::Paws).is_err(), "paws needs apply first");
    lab.apply(Scenario::Paws).unwrap();
    let d = lab.drive(Scenario::Paws).unwrap();
    eprintln!("paws:\n  {}\n  {:?}", attempts_summary(&d), d.notes);
    assert_eq!(d.attempts.len(), 2);
    let (c1, c2) = (&d.attempts[0], &d.attempts[1]);
    assert_eq!(c1.outcome, Outcome::Connected);
    assert_eq!(c1.client.port(), mesh::PAWS_PORT);
    assert_eq!(c2.client, "10.10.0.12:40000".parse().unwrap());
    assert_eq!(
        c2.tsval,
        Some(c1.tsval.unwrap().wrapping_sub(mesh::PAWS_TSVAL_BACK))
    );
    assert_ne!(c2.outcome, Outcome::Connected);
    assert!(
        d.delta(lab.task(), "TcpExt.PAWSTimewait") >= 1,
        "{:?}",
        d.deltas
    );
    finish(lab);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn rp_filter_drops_the_asymmetric_client_in_host() {
    require_privileged("rp_filter_drops_the_asymmetric_client_in_host");
    let mut lab = build("mf");
    lab.apply(Scenario::RpFilter).unwrap();
    assert!(lab.rp_client().is_some());
    let watch = DropWatch::start(lab.prefix()).unwrap();
    let t0 = dropwatch::now();
    let d = lab.drive(Scenario::RpFilter).unwrap();
    eprintln!("rp-filter:\n  {}", attempts_summary(&d));
    let a = &d.attempts[0];
    assert_eq!(a.outcome, Outcome::TimedOut, "{a:?}");
    assert_eq!(a.client.ip(), mesh::RP_CLIENT_IP);
    assert!(
        d.delta(lab.host(), "TcpExt.IPReversePathFilter") >= 1,
        "{:?}",
        d.deltas
    );
    assert_eq!(d.delta(lab.task(), "Tcp.InSegs"), 0, "{:?}", d.deltas);
    let k = kernel_drop(
        &watch,
        t0,
        "IP_RPFILTER",
        "ip_rcv_finish_core",
        Duration::from_secs(2),
    );
    eprintln!("rp-filter: kernel drop {k:?}");
    drop(watch);
    finish(lab);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn subnet_overlap_loses_the_syn_ack_in_ingress_sbox() {
    require_privileged("subnet_overlap_loses_the_syn_ack_in_ingress_sbox");
    let mut lab = build("mo");
    lab.apply(Scenario::SubnetOverlap).unwrap();
    let watch = DropWatch::start(lab.prefix()).unwrap();
    let t0 = dropwatch::now();
    let d = lab.drive(Scenario::SubnetOverlap).unwrap();
    eprintln!(
        "subnet-overlap:\n  {}\n  {:?}\n  {:?}",
        attempts_summary(&d),
        d.notes,
        d.deltas
    );
    let a = &d.attempts[0];
    assert_eq!(a.outcome, Outcome::TimedOut, "{a:?}");
    assert_eq!(a.client.ip(), mesh::OVERLAP_CLIENT_IP);
    // The SYN reached the task, which answered it.
    assert!(d.delta(lab.task(), "Tcp.InSegs") >= 1, "{:?}", d.deltas);
    assert!(d.delta(lab.task(), "Tcp.OutSegs") >= 1, "{:?}", d.deltas);
    // ingress_sbox could not resolve the client on docker_gwbridge's side.
    assert!(
        d.delta(lab.sbox(), "Icmp.OutDestUnreachs") >= 1,
        "{:?}",
        d.deltas
    );
    let k = kernel_drop(
        &watch,
        t0,
        "NEIGH_FAILED",
        "neigh_invalidate",
        Duration::from_secs(2),
    );
    eprintln!(
        "subnet-overlap: kernel drop {k:?}, {:.2} s after the drive began",
        k.time - t0
    );
    drop(watch);
    finish(lab);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn a_lab_takes_one_fault_and_cleans_up_everything() {
    require_privileged("a_lab_takes_one_fault_and_cleans_up_everything");
    let prefix = ns_name("mc");
    // A namespace left by a killed run with this prefix is removed by the next build.
    let stale = format!("{prefix}-stale");
    swarmtrace::lab::ip(&["netns", "add", &stale]).unwrap();
    let mut lab = MeshLab::build(&prefix).unwrap();
    let names = mesh::existing(&prefix).unwrap();
    assert!(!names.contains(&stale), "{names:?}");
    assert_eq!(names.len(), 6, "{names:?}");
    lab.apply(Scenario::SubnetOverlap).unwrap();
    assert!(lab.apply(Scenario::RpFilter).is_err());
    lab.apply(Scenario::SubnetOverlap).unwrap();
    assert!(lab.drive(Scenario::Healthy).is_err());
    assert_eq!(mesh::existing(&prefix).unwrap().len(), 7);
    finish(lab);

    // A panic while the lab is alive removes it too.
    let p2 = ns_name("mx");
    let r = std::panic::catch_unwind(|| {
        let mut lab = MeshLab::build(&p2).unwrap();
        lab.apply(Scenario::RpFilter).unwrap();
        panic!("on purpose");
    });
    assert!(r.is_err());
    assert!(mesh::existing(&p2).unwrap().is_empty());
}
