//! What the commands that trace share around the engine: its options from the command line,
//! and the verdicts from its result (the engine sits below `verdict`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::TraceArgs;
use crate::docker;
use crate::kernel::netns::NetnsNames;
use crate::kernel::{ipvs, namespaces, netstat, KernelFacts};
use crate::trace::hops::HopNames;
use crate::trace::session::{HostSnapshot, RunResult, TraceOptions};
use crate::trace::summary::RunSummary;
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
        overload_rate: args.overload_rate,
        vxlan_port: args.vxlan_port,
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
    // The kept handshakes by name, the forgotten ones by kind.
    let kept = run.tracker.handshakes().map(|h| (h, 1, true));
    let forgotten = run.tracker.forgotten.shapes().map(|(h, n)| (h, n, false));
    let mut context = context;
    context.unseen_drops = unseen_drops(&run.summary);
    context.vxlan_port = run.vxlan_port;
    let verdicts = verdict::verdicts_of(kept.chain(forgotten), &context);
    run.summary.verdicts = verdicts.iter().map(Verdict::to_json).collect();
    bound_summary(&mut run.summary);
    Concluded {
        run,
        context,
        verdicts,
    }
}

/// The summary is one NDJSON line: this long at most, whatever the flood. Its tables are
/// bounded (top lists, listed clients); what is left is the text of names from outside
/// (namespaces), of which a host with many containers may have many.
pub const SUMMARY_MAX_BYTES: usize = 64 * 1024;

/// Shortens the verdicts' lists and evidence, marking them `truncated`, until the summary
/// line fits in [`SUMMARY_MAX_BYTES`].
fn bound_summary(summary: &mut RunSummary) {
    fn trim(v: &mut serde_json::Value, keep: usize, depth: usize) {
        match v {
            serde_json::Value::Array(a) => a.truncate(keep),
            serde_json::Value::Object(o) if depth > 1 => {
                let extra: Vec<String> = o.keys().skip(keep).cloned().collect();
                for k in extra {
                    o.remove(&k);
                }
            }
            serde_json::Value::Object(o) => {
                for x in o.values_mut() {
                    trim(x, keep, depth + 1);
                }
            }
            _ => {}
        }
    }
    let size = |s: &RunSummary| serde_json::to_vec(s).map_or(usize::MAX, |v| v.len());
    for keep in [10, 5, 2, 0] {
        if size(summary) <= SUMMARY_MAX_BYTES {
            return;
        }
        for v in &mut summary.verdicts {
            trim(v, keep, 0);
            v["truncated"] = true.into();
        }
    }
    if size(summary) > SUMMARY_MAX_BYTES {
        summary.watched.truncate(10);
        summary.kernel_lacks.truncate(10);
        for v in &mut summary.verdicts {
            for k in ["explanation", "confirm", "fix"] {
                v[k] = "(left out: the summary line is bounded)".into();
            }
        }
    }
}

/// Per reason, drops the kernel counted that no event showed. Only when events were lost or
/// the kernel sampled (overload: 1 handshake in N sends its events): otherwise the difference
/// is the few drops of the instant between the last read of the ring and the read of the
/// counters, and every verdict count stays exact.
fn unseen_drops(summary: &RunSummary) -> BTreeMap<String, u64> {
    if summary.lost_events == 0 && summary.sampled.is_none() {
        return BTreeMap::new();
    }
    summary
        .drops_by_reason
        .iter()
        .filter_map(|(reason, exact)| {
            let seen = summary.events_by_reason.get(reason).copied().unwrap_or(0);
            Some((reason.clone(), exact.checked_sub(seen).filter(|n| *n > 0)?))
        })
        .collect()
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
    let mut shown = |ns: &String| {
        files
            .get(ns)
            .and_then(|f| crate::kernel::netns::inode_of_file(f))
            .and_then(|ino| names.name(ino))
            .unwrap_or_else(|| ns.clone())
    };
    let mut counter_rises = BTreeMap::new();
    let mut conntrack_fill = BTreeMap::new();
    for (ns, a) in &after.counters {
        let Some(b) = before.counters.get(ns) else {
            continue;
        };
        let r = netstat::rises(b, a);
        let fill = a
            .get(netstat::CONNTRACK_COUNT)
            .zip(a.get(netstat::CONNTRACK_MAX));
        if r.is_empty() && fill.is_none() {
            continue;
        }
        let name = shown(ns);
        if let Some((count, max)) = fill {
            conntrack_fill.insert(name.clone(), (*count, *max));
        }
        if !r.is_empty() {
            counter_rises.insert(name, r);
        }
    }
    let mut netfilter = BTreeMap::new();
    for (ns, a) in &after.netfilter {
        let b = before.netfilter.get(ns);
        let view = netfilter_view(b, a);
        if view.ipvs.is_empty() && view.rules_rose.as_ref().is_none_or(Vec::is_empty) {
            continue;
        }
        netfilter.insert(shown(ns), view.bounded());
    }
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
        overlay_paths: overlay_paths(tracker, hops),
        counter_rises,
        subnets,
        kernel_release: facts.release.clone(),
        has_tw_paws_reason: facts.reasons.value("TCP_RFC7323_TW_PAWS").is_some(),
        ingress_ifaces,
        unseen_drops: BTreeMap::new(),
        published: docker_view(tracker, !host_answered.is_empty()),
        host_answered,
        conntrack_fill,
        netfilter,
        // Set by `conclude`, with `unseen_drops`.
        vxlan_port: 0,
    }
}

/// What a namespace's IPVS services and rules showed between two readings: a mark without a
/// backend at either, the rules whose counters rose (unknown unless both readings have the
/// rules).
fn netfilter_view(before: Option<&ipvs::Reading>, after: &ipvs::Reading) -> verdict::NetfilterView {
    let services = after.services.clone().unwrap_or_default();
    let services_before = before.and_then(|b| b.services.as_ref());
    let mut no_backend = ipvs::without_backend(&services);
    if let Some(s) = services_before {
        no_backend.extend(ipvs::without_backend(s));
    }
    let mut port_marks = after
        .rules
        .as_ref()
        .map(|r| r.port_marks.clone())
        .unwrap_or_default();
    if let Some(r) = before.and_then(|b| b.rules.as_ref()) {
        for (port, mark) in &r.port_marks {
            port_marks.entry(*port).or_insert(*mark);
        }
    }
    let rules_rose = match (before.and_then(|b| b.rules.as_ref()), &after.rules) {
        (Some(b), Some(a)) => Some(ipvs::rules_rose(b, a)),
        _ => None,
    };
    verdict::NetfilterView {
        draining_at_end: ipvs::draining(&services),
        draining_at_start: services_before.map(ipvs::draining).unwrap_or_default(),
        conn_reuse_mode: after
            .conn_reuse_mode
            .or(before.and_then(|b| b.conn_reuse_mode)),
        expire_nodest_conn: after
            .expire_nodest_conn
            .or(before.and_then(|b| b.expire_nodest_conn)),
        ipvs: services,
        ipvs_no_backend: no_backend,
        port_marks,
        rules_rose,
    }
}

/// Where SYNs left inside VXLAN datagrams, by interface and pair of nodes: at most
/// [`verdict::LISTED`] (the tracker's handshakes are bounded; their pairs are few).
fn overlay_paths(tracker: &Tracker, hops: &HopNames) -> Vec<verdict::OverlayPath> {
    let mut out = BTreeSet::new();
    for o in tracker.handshakes().filter_map(|h| h.overlay) {
        if out.len() >= verdict::LISTED {
            break;
        }
        let (netns, ifname) = hops.place(&o.hop);
        out.insert(verdict::OverlayPath {
            local: o.local,
            remote: o.remote,
            netns,
            ifname,
        });
    }
    out.into_iter().collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_is_bounded_whatever_the_names() {
        let long = "x".repeat(4_000);
        let mut sum = RunSummary {
            drops_by_reason: [("NETFILTER_DROP".to_owned(), 1_000_000)].into(),
            events_by_reason: [("NETFILTER_DROP".to_owned(), 900_000)].into(),
            lost_events: 100_000,
            ..RunSummary::default()
        };
        let verdict = serde_json::json!({
            "cause": "netfilter-drop",
            "clients": vec!["10.0.0.1"; 20],
            "evidence": {
                "drops": (0..20).map(|i| (format!("{long}{i}"), 1)).collect::<BTreeMap<_, _>>(),
                "notes": vec![long.clone(); 20],
            },
            "explanation": "why",
        });
        sum.verdicts = vec![verdict; 8];
        assert!(serde_json::to_vec(&sum).unwrap().len() > SUMMARY_MAX_BYTES);
        bound_summary(&mut sum);
        assert!(serde_json::to_vec(&sum).unwrap().len() <= SUMMARY_MAX_BYTES);
        assert_eq!(sum.verdicts[0]["truncated"], true);
        assert_eq!(sum.verdicts[0]["cause"], "netfilter-drop");
        assert_eq!(unseen_drops(&sum)["NETFILTER_DROP"], 100_000);
        sum.lost_events = 0;
        assert!(unseen_drops(&sum).is_empty());
        // Sampled in the kernel: the drops of the handshakes that sent no event are counted.
        sum.sampled = Some(crate::trace::summary::Sampled {
            one_in: 16,
            since: "2026-12-04T07:00:00.000000Z".into(),
            windows: 10,
            sighting_events_not_sent: 0,
            drop_events_not_sent: 100_000,
        });
        assert_eq!(unseen_drops(&sum)["NETFILTER_DROP"], 100_000);
    }
}
