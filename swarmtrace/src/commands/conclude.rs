//! What the commands that trace share around the engine: its options from the command line,
//! and the verdicts from its result (the engine sits below `verdict`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::TraceArgs;
use crate::kernel::netns::NetnsNames;
use crate::kernel::{namespaces, netstat, KernelFacts};
use crate::trace::hops::HopNames;
use crate::trace::session::{HostSnapshot, RunResult, TraceOptions};
use crate::trace::tracker::Tracker;
use crate::verdict::{self, LocalSubnet, Verdict};

/// The engine's options for `args`, stopping after `duration` if given.
pub fn options(args: &TraceArgs, duration: Option<Duration>) -> TraceOptions {
    TraceOptions {
        iface: args.iface.clone(),
        port: args.port,
        client: args.client,
        syn_timeout: args.syn_timeout,
        table_size: args.table_size,
        tc_mode: args.tc_attach,
        overload_rate: args.overload_rate,
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
    verdict::Context {
        counter_rises,
        subnets,
        kernel_release: facts.release.clone(),
        has_tw_paws_reason: facts.reasons.value("TCP_RFC7323_TW_PAWS").is_some(),
        ingress_ifaces,
    }
}
