//! The tracing engine that `run`, `capture` and `demo` share: attach, read the kernel's
//! events, follow each handshake, name its drops, and at the end gather what the verdicts
//! need.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use swarmtrace_common::Hop;

use crate::cli::RunArgs;
use crate::clock::WallClock;
use crate::kernel::netns::NetnsNames;
use crate::kernel::netstat::{self, Counters};
use crate::kernel::{self, namespaces, KernelFacts};
use crate::present::output::{Health, Observer, Output};
use crate::trace::attach::{default_watch, kernel_filter, live_facts};
use crate::trace::drops::{Namer, Summary};
use crate::trace::event::Event;
use crate::trace::hops::HopNames;
use crate::trace::tracer::{Tracer, TracerOptions};
use crate::trace::tracker::{HandshakeId, Tracker};
use crate::verdict::{self, LocalSubnet, Verdict};

/// Hands back to the system the heap that start-up used and freed (the kernel's BTF and
/// kallsyms read whole, parsed, dropped): glibc keeps freed pages inside its heap resident
/// otherwise, about 10 MiB of a run's resident memory for nothing.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the verdicts need besides the handshakes, gathered at the end of a run.
pub struct HostSnapshot {
    pub namespaces: Vec<(String, PathBuf)>,
    pub counters: BTreeMap<String, Counters>,
}

impl HostSnapshot {
    pub fn take() -> Self {
        let namespaces = namespaces::known();
        let counters = namespaces::counters(&namespaces);
        Self {
            namespaces,
            counters,
        }
    }
}

pub fn verdict_context(
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

/// Totals of the handshakes by outcome, and latency percentiles of the answered ones.
pub fn handshake_totals(tracker: &Tracker) -> Value {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    let mut lat: Vec<u64> = Vec::new();
    for h in tracker.handshakes() {
        *by.entry(h.outcome().as_str()).or_default() += 1;
        if let Some(l) = h.latency_ns() {
            lat.push(l / 1000);
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| -> Option<u64> {
        (!lat.is_empty()).then(|| lat[((lat.len() - 1) as f64 * p).round() as usize])
    };
    json!({
        "total": tracker.len() as u64 + tracker.evicted,
        "answered": by.get("answered").copied().unwrap_or(0),
        "dropped": by.get("dropped").copied().unwrap_or(0),
        "reset": by.get("reset").copied().unwrap_or(0),
        "unanswered": by.get("unanswered").copied().unwrap_or(0),
        "forgotten": tracker.evicted,
        "latency_us": { "p50": pct(0.5), "p99": pct(0.99), "max": lat.last() },
    })
}

/// Everything a run produced, for the caller (the demo reads the verdicts, capture writes
/// all of it into the bundle).
pub struct RunResult {
    pub verdicts: Vec<Verdict>,
    pub summary: Value,
    pub tracker: Tracker,
    pub context: verdict::Context,
    pub hops: HopNames,
    pub before: HostSnapshot,
    pub after: HostSnapshot,
    pub facts: KernelFacts,
    pub clock: WallClock,
}

/// Lets a caller (the demo) know when the programs are attached, and stop the run.
#[derive(Default)]
pub struct Control {
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
    pub stop: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Print a progress line on stderr every second (capture).
    pub progress: bool,
    /// Get every drop, handshake and health report (live view, metrics).
    pub observers: Vec<Box<dyn Observer>>,
    /// No per-event lines on the writer (the live view owns the terminal).
    pub quiet: bool,
}

/// How long a run waits at start for the names of the namespaces that exist already: a
/// little more than one Docker request's deadline.
const NAMES_AT_START: Duration = Duration::from_millis(2_500);

/// Runs the tracer until Ctrl-C, SIGTERM, `--duration` or `control.stop` fires, writing to
/// `out`.
pub async fn trace(
    args: RunArgs,
    out: &mut (dyn Write + Send),
    mut control: Control,
) -> Result<RunResult> {
    let stop = control.stop.take();
    // Registered once, first: a signal that arrives while no future waits for it is kept,
    // never lost (a `ctrl_c()` made per loop turn misses one sent between two turns).
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    crate::privileges::require_tracing()?;
    let (facts, kallsyms) = live_facts()?;
    let watch = if args.trace.iface.is_empty() {
        let w = default_watch();
        if w.is_empty() {
            log::warn!("no docker_gwbridge and no default route here: only drops are traced; name interfaces with --iface");
        }
        w
    } else {
        args.trace.iface.clone()
    };
    let lacking = kernel::lacking(&facts, &kallsyms, crate::trace::tracer::has_tcx());
    if !lacking.is_empty() {
        eprintln!(
            "swarmtrace: degraded mode on Linux {}: this kernel lacks {}",
            facts.release,
            lacking.join("; ")
        );
    }
    let opts = TracerOptions {
        tcp_drop: kallsyms.has("tcp_drop"),
        filter: kernel_filter(args.trace.port, args.trace.client),
        watch,
        table_size: args.trace.table_size,
        tc_mode: args.trace.tc_attach,
    };
    if let Some(addr) = args.metrics {
        let (obs, _task) = crate::present::metrics::serve(addr).await?;
        control.observers.push(obs);
        eprintln!("swarmtrace: serving Prometheus metrics at http://{addr}/metrics");
    }
    // Namespaces are named on a thread of their own (Docker may hang): started now, it scans
    // while the programs attach; the run waits a bounded time for the names of the
    // namespaces that exist already, and never for later ones.
    let mut netns = NetnsNames::resolving();
    let before = HostSnapshot::take();
    let mut tracer = Tracer::attach(&facts, &opts)?;
    let mut hops = HopNames::new(&tracer.watched);
    if !netns.wait_ready(NAMES_AT_START) {
        log::warn!(
            "namespace names are not ready after {NAMES_AT_START:?} (Docker slow?): drops show inodes until they are"
        );
    }
    let mut namer = Namer {
        reasons: facts.reasons.clone(),
        kallsyms,
        netns,
        clock: WallClock::sample(),
    };
    let clock = namer.clock;
    let mut summary = Summary::default();
    let mut tracker = Tracker::new(args.trace.syn_timeout.as_nanos() as u64);
    release_startup_memory();
    let started = Instant::now();
    let watched: Vec<String> = tracer.watched.iter().map(|w| w.spec.to_string()).collect();
    eprintln!(
        "swarmtrace: tracing TCP handshakes on Linux {} (watching {}){}{}; Ctrl-C to stop",
        facts.release,
        if watched.is_empty() {
            "drops only".to_owned()
        } else {
            crate::escape::terminal(&watched.join(", ")).into_owned()
        },
        args.trace
            .port
            .map(|p| format!(", port {p}"))
            .unwrap_or_default(),
        args.trace
            .client
            .map(|c| format!(", client {c}"))
            .unwrap_or_default(),
    );

    if let Some(ready) = control.ready.take() {
        let _ = ready.send(());
    }
    let client_filter = args.trace.client;
    let mut output = Output::new(out, args.json, std::mem::take(&mut control.observers));
    output.lines = !control.quiet;
    let out = &mut output;
    let mut handle = |bytes: &[u8],
                      summary: &mut Summary,
                      tracker: &mut Tracker,
                      hops: &HopNames,
                      out: &mut Output|
     -> Result<()> {
        match Event::try_from(bytes) {
            Ok(Event::Drop(raw)) => {
                let d = namer.name(raw);
                let who = d.joined.map(|j| j.client.ip()).unwrap_or(d.packet.src.ip());
                if client_filter.is_some_and(|c| {
                    !c.contains(who)
                        && !c.contains(d.packet.dst.ip())
                        && !c.contains(d.packet.src.ip())
                }) {
                    return Ok(());
                }
                summary.add(&d);
                tracker.on_drop(&d);
                out.dropped(&d)?;
            }
            Ok(Event::Handshake(s)) => {
                if let Some(id) = tracker.on_sighting(&s) {
                    report(tracker, &id, hops, None, clock.to_unix_ns(s.ts_ns), out)?;
                }
            }
            Err(e) => {
                summary.decode_errors += 1;
                log::warn!("undecodable event: {e}");
            }
        }
        Ok(())
    };

    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let stop = async {
        match stop {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline, stop);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_progress = Instant::now();
    let mut last_check = Instant::now();
    let mut result: Result<()> = Ok(());
    loop {
        tokio::select! {
            r = tracer.next_batch(|b| {
                if result.is_ok() {
                    result = handle(b, &mut summary, &mut tracker, &hops, out);
                }
            }) => {
                r?;
                result.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
                // One write per batch, not per line (stdout is buffered when piped).
                out.flush()?;
            }
            _ = tick.tick() => {
                sweep(&mut tracker, &tracer, &hops, clock, out, WallClock::monotonic_now_ns())?;
                out.flush()?;
                if last_check.elapsed() >= Duration::from_secs(1) {
                    last_check = Instant::now();
                    if !tracer.watched.is_empty() {
                        for news in tracer.check_watched() {
                            if out.lines {
                                eprintln!("swarmtrace: {}", crate::escape::terminal(&news));
                            }
                            log::info!("{news}");
                        }
                        hops.learn(&tracer.watched);
                    }
                    if out.has_observers() {
                        let t = tracer.totals()?;
                        out.health(&Health {
                            elapsed_s: started.elapsed().as_secs_f64(),
                            drops: t.drops,
                            lost_events: t.lost_events,
                            syns: t.syns,
                            answered: t.answered,
                            resets: t.resets,
                            watched: tracer.watched.iter().map(|w| (w.spec.to_string(), w.attached)).collect(),
                            tracked: tracker.len(),
                        });
                    }
                }
                if control.progress && last_progress.elapsed() >= Duration::from_secs(1) {
                    last_progress = Instant::now();
                    let left = args.duration.map(|d| d.saturating_sub(started.elapsed()));
                    eprint!(
                        "\rcapture: {} left, {} handshakes, {} drops   ",
                        left.map(|l| format!("{}s", l.as_secs())).unwrap_or_else(|| "until Ctrl-C,".to_owned()),
                        tracker.len(),
                        summary.events
                    );
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
            _ = &mut stop => break,
        }
    }
    if control.progress {
        eprintln!();
    }
    // What arrived between the last wakeup and the stop, then every handshake still open.
    tracer.drain(|b| {
        if result.is_ok() {
            result = handle(b, &mut summary, &mut tracker, &hops, out);
        }
    });
    result?;
    sweep(
        &mut tracker,
        &tracer,
        &hops,
        clock,
        out,
        WallClock::monotonic_now_ns(),
    )?;
    let open = tracker.flush();
    for id in &open {
        report(
            &tracker,
            id,
            &hops,
            last_hop(&tracker, &tracer, id),
            clock.to_unix_ns(WallClock::monotonic_now_ns()),
            out,
        )?;
    }
    let totals = tracer.totals()?;
    let after = HostSnapshot::take();
    let ctx = verdict_context(&before, &after, &tracker, &hops, &facts, &mut namer.netns);
    drop(tracer);
    let verdicts = verdict::verdicts(tracker.handshakes(), &ctx);
    let secs = started.elapsed().as_secs_f64();
    let mut sum = summary.to_json(&totals, &facts.reasons, secs);
    sum["handshakes"] = handshake_totals(&tracker);
    sum["verdicts"] = Value::Array(verdicts.iter().map(Verdict::to_json).collect());
    sum["watched"] = json!(watched);
    sum["kernel_lacks"] = json!(lacking);
    out.summary(&sum, || {
        crate::present::summary::summary_text(&sum, &verdicts)
    })?;
    Ok(RunResult {
        verdicts,
        summary: sum,
        tracker,
        context: ctx,
        hops,
        before,
        after,
        facts,
        clock,
    })
}

fn last_hop(tracker: &Tracker, tracer: &Tracer, id: &HandshakeId) -> Option<Hop> {
    let h = tracker.get(id)?;
    h.keys
        .iter()
        .rev()
        .find_map(|k| tracer.handshake(k))
        .map(|k| k.last_hop)
}

fn report(
    tracker: &Tracker,
    id: &HandshakeId,
    hops: &HopNames,
    last: Option<Hop>,
    unix_ns: i128,
    out: &mut Output,
) -> Result<()> {
    let Some(h) = tracker.get(id) else {
        return Ok(());
    };
    out.handshake(h, hops, last, unix_ns)
}

fn sweep(
    tracker: &mut Tracker,
    tracer: &Tracer,
    hops: &HopNames,
    clock: WallClock,
    out: &mut Output,
    now: u64,
) -> Result<()> {
    for id in tracker.due(now) {
        let last = last_hop(tracker, tracer, &id);
        report(tracker, &id, hops, last, clock.to_unix_ns(now), out)?;
    }
    Ok(())
}
