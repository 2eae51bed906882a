//! What the commands that trace share around the engine: its options from the command line,
//! and the verdicts from its result (the engine sits below `verdict`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::TraceArgs;
use crate::docker;
use crate::kernel::netns::NetnsNames;
use crate::kernel::{namespaces, netstat, KernelFacts};
use crate::trace::hops::HopNames;
use crate::trace::session::{HostSnapshot, RunResult, TraceOptions};
use crate::trace::tracker::{Answer, Tracker};
use crate::verdict::{self, LocalSubnet, PublishedService, Verdict};

/// The engine's options for `args`, stopping after `duration` if given.
pub fn options(args: &TraceArgs, duration: Option<Duration>) -> TraceOptions {
    TraceOptions {
        iface: args.iface.clone(),
        port: args.port,
        client: args.client,
        syn_timeout: args.syn_timeout,
        table_size: args.table_size,
        tc_mode: args.tc_attach,
        duration,
    }
}

/// A run with its verdicts: the summary has them too.
pub struct Concluded {
    pub run: RunResult,
    pub context: verdict::Context,
    pub verdicts: Vec<Verdict>,
}

/// The verdicts of a run, from its handshakes and what the host's namespaces say.
pub fn conclude(mut run: RunResult) -> Concluded {
    let context = verdict_context(
        &run.before,
        &run.after,
        &run.tracker,
        &run.hops,
        &run.summary.watched,
        &run.facts,
        &mut run.netns,
    );
    let verdicts = verdict::verdicts(run.tracker.handshakes(), &context);
    run.summary.verdicts = verdicts.iter().map(Verdict::to_json).collect();
    Concluded {
        run,
        context,
        verdicts,
    }
}

fn verdict_context(
    before: &HostSnapshot,
    after: &HostSnapshot,
    tracker: &Tracker,
    hops: &HopNames,
    watched: &[String],
    facts: &KernelFacts,
    names: &mut NetnsNames,
) -> verdict::Context {
    // Counters are keyed by the names drops carry (Docker's container names included), so
    // the verdicts can put them side by side.
    let files: BTreeMap<&String, &PathBuf> = after.namespaces.iter().map(|(n, f)| (n, f)).collect();
    let counter_rises = after
        .counters
        .iter()
        .filter_map(|(ns, a)| {
            let b = before.counters.get(ns)?;
            let r = netstat::rises(b, a);
            let shown = files
                .get(ns)
                .and_then(|f| crate::kernel::netns::inode_of_file(f))
                .and_then(|ino| names.name(ino))
                .unwrap_or_else(|| ns.clone());
            (!r.is_empty()).then_some((shown, r))
        })
        .collect();
    let ingress_ifaces: BTreeSet<(String, String)> = tracker
        .handshakes()
        .filter_map(|h| h.first_hop.map(|x| hops.place(&x)))
        .collect();
    // Replies are routed by the namespace the SYNs came in through and by Docker's load
    // balancing namespaces; a client inside one of their other subnets gets no answer.
    // Containers' own subnets elsewhere on the host do not route replies.
    let reply_path: BTreeSet<&str> = ingress_ifaces.iter().map(|(ns, _)| ns.as_str()).collect();
    let subnets = after
        .namespaces
        .iter()
        .filter(|(ns, _)| {
            reply_path.contains(ns.as_str())
                || ns.ends_with("ingress_sbox")
                || ns.starts_with("lb_")
        })
        .flat_map(|(ns, file)| {
            namespaces::subnets_in(file)
                .into_iter()
                .map(move |(ifname, net)| LocalSubnet {
                    netns: ns.clone(),
                    ifname,
                    net,
                })
        })
        .collect();
    let host_answered = host_answered(tracker, hops, watched);
    verdict::Context {
        counter_rises,
        subnets,
        kernel_release: facts.release.clone(),
        has_tw_paws_reason: facts.reasons.value("TCP_RFC7323_TW_PAWS").is_some(),
        ingress_ifaces,
        published: docker_view(tracker, !host_answered.is_empty()),
        host_answered,
    }
}

/// Answered handshakes whose SYN-ACK was first seen leaving by the interface their SYN came
/// in on, in the host namespace, while docker_gwbridge was watched: the mesh's answers come in
/// over docker_gwbridge first, so these the host answered itself.
fn host_answered(
    tracker: &Tracker,
    hops: &HopNames,
    watched: &[String],
) -> BTreeSet<(std::net::SocketAddr, u32)> {
    if !watched
        .iter()
        .any(|w| w == "docker_gwbridge" || w.ends_with(":docker_gwbridge"))
    {
        return BTreeSet::new();
    }
    let host = |ns: &str| ns.is_empty() || ns == "host";
    tracker
        .handshakes()
        .filter(|h| h.outcome() == crate::trace::tracker::Outcome::Answered)
        .filter(|h| {
            let (Some(first), Some(Answer::SynAck { hop, .. })) = (h.first_hop, h.answer) else {
                return false;
            };
            let (a_ns, a_if) = hops.place(&hop);
            let (f_ns, f_if) = hops.place(&first);
            host(&a_ns) && a_ns == f_ns && a_if == f_if
        })
        .map(|h| (h.client, h.isn))
        .collect()
}

/// What Docker says of the ports swarm services publish, asked only when a handshake failed
/// or the host answered one itself (a healthy run costs no request); empty without Docker or
/// on a worker.
fn docker_view(tracker: &Tracker, host_answered: bool) -> Vec<PublishedService> {
    if !host_answered
        && tracker
            .handshakes()
            .all(|h| h.outcome() == crate::trace::tracker::Outcome::Answered)
    {
        return Vec::new();
    }
    match docker::published_ports(&docker::socket_path()) {
        Ok(ports) => ports
            .into_iter()
            .filter(|p| p.protocol == "tcp")
            .map(|p| PublishedService {
                service: p.service,
                port: p.port,
                mode: p.mode,
                running: p.running,
                desired: p.desired,
            })
            .collect(),
        Err(e) => {
            log::debug!("no Docker view of the published ports: {e}");
            Vec::new()
        }
    }
}
