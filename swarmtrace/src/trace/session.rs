//! The tracing engine that `run`, `capture` and `demo` share: attach, read the kernel's
//! events, follow each handshake, name its drops, tell the observers (`observe`), and at the
//! end gather what the verdicts need. What happens to a batch of ring-buffer records
//! ([`Pipeline`]) needs no kernel: it is tested with records made as the kernel makes them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use swarmtrace_common::{HandshakeKey, Hop};

use crate::clock::WallClock;
use crate::kernel::netns::NetnsNames;
use crate::kernel::netstat::Counters;
use crate::kernel::{self, namespaces, KernelFacts};
use crate::net::Cidr;
use crate::trace::attach::{default_watch, kernel_filter, live_facts};
use crate::trace::drops::{Namer, Summary};
use crate::trace::event::Event;
use crate::trace::hops::HopNames;
use crate::trace::observe::{HandshakeRecord, Health, Observers};
use crate::trace::summary::{HandshakeTotals, Latency, RunSummary, Sampled};
use crate::trace::tracer::{IfaceSpec, Sampling, TcMode, Tracer, TracerOptions};
use crate::trace::tracker::{HandshakeId, Tracker};

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
    /// IPVS services and firewall rules of the host's namespace and of those with IPVS
    /// services.
    pub netfilter: BTreeMap<String, crate::kernel::ipvs::Reading>,
}

impl HostSnapshot {
    pub fn take() -> Self {
        let namespaces = namespaces::known();
        let counters = namespaces::counters(&namespaces);
        let netfilter = crate::kernel::ipvs::read_all(&namespaces);
        Self {
            namespaces,
            counters,
            netfilter,
        }
    }
}

/// Totals of the handshakes by outcome, and latency percentiles of the answered ones.
pub fn handshake_totals(tracker: &Tracker) -> HandshakeTotals {
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
    let of = |o: &str| by.get(o).copied().unwrap_or(0);
    HandshakeTotals {
        total: tracker.len() as u64 + tracker.evicted,
        answered: of("answered"),
        dropped: of("dropped"),
        reset: of("reset"),
        unanswered: of("unanswered"),
        forgotten: tracker.evicted,
        latency_us: Latency {
            p50: pct(0.5),
            p99: pct(0.99),
            max: lat.last().copied(),
        },
    }
}

/// What the run says of overload as it comes and goes: when the kernel started sampling
/// first, and whether it samples now.
#[derive(Debug, Default)]
struct OverloadNotes {
    /// The first time any CPU sampled (monotonic ns).
    first_ns: Option<u64>,
    sampling_now: bool,
    one_in: u32,
    windows: u64,
}

impl OverloadNotes {
    /// Takes the programs' state in; returns what to tell the user when it changed.
    fn update(&mut self, s: Option<Sampling>, clock: &WallClock) -> Option<String> {
        let s = s?;
        self.one_in = s.one_in;
        self.windows = s.windows;
        let now = s.since_ns.is_some();
        if self.first_ns.is_none() {
            // Sampled between two looks and over since: the first window is unknown, so
            // "since" says when it was noticed.
            self.first_ns = s.since_ns.or(Some(WallClock::monotonic_now_ns()));
        }
        let was = std::mem::replace(&mut self.sampling_now, now);
        match (was, s.since_ns) {
            (false, Some(since)) => Some(format!(
                "overload: detail events (handshakes, drops) sampled 1 in {} since {}; the kernel's counts stay exact",
                s.one_in,
                crate::clock::rfc3339_micros(clock.to_unix_ns(since))
            )),
            (true, None) => Some(format!(
                "overload over: every detail event sent again ({} windows of 100 ms sampled so far)",
                s.windows
            )),
            _ => None,
        }
    }
}

/// What to trace, and for how long.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Interfaces to watch; none: the default ones (`attach::default_watch`).
    pub iface: Vec<IfaceSpec>,
    pub port: Option<u16>,
    pub client: Option<Cidr>,
    /// How long a SYN waits for its answer before its handshake is reported unanswered.
    pub syn_timeout: Duration,
    pub table_size: u32,
    pub tc_mode: TcMode,
    /// Detail events per second per CPU above which the kernel samples them (0: never).
    pub overload_rate: u32,
    /// The overlays' VXLAN port; None: Docker's data-path port where Docker says, else the
    /// port of this node's overlay VXLAN device, else 4789.
    pub vxlan_port: Option<u16>,
    /// Stop after this long (Ctrl-C or SIGTERM otherwise).
    pub duration: Option<Duration>,
}

/// Everything a run produced, for the command: the verdicts are computed from it (the
/// engine sits below `verdict`), capture writes all of it into the bundle.
pub struct RunResult {
    /// Without its verdicts, which the command adds.
    pub summary: RunSummary,
    pub tracker: Tracker,
    pub hops: HopNames,
    pub before: HostSnapshot,
    pub after: HostSnapshot,
    pub facts: KernelFacts,
    pub clock: WallClock,
    /// The namespaces' names, to name the counters' namespaces as the drops name them.
    pub netns: NetnsNames,
    /// The UDP port of the VXLAN datagrams the programs looked inside.
    pub vxlan_port: u16,
}

/// Lets a caller (the demo, the live view) know when the programs are attached, and stop
/// the run.
#[derive(Default)]
pub struct Control {
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
    pub stop: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Print a progress line on stderr every second (capture).
    pub progress: bool,
}

/// How long a run waits at start for the names of the namespaces that exist already: a
/// little more than one Docker request's deadline.
const NAMES_AT_START: Duration = Duration::from_millis(2_500);

/// Where a handshake was last seen, from the kernel's table (by one of its SYNs' keys).
pub type LastHop<'a> = &'a dyn Fn(&HandshakeKey) -> Option<Hop>;

/// What happens to the ring's records, kernel-free: decoded, drops named and counted,
/// handshakes followed, and every drop and reported handshake told to the observers.
pub struct Pipeline {
    pub namer: Namer,
    pub summary: Summary,
    pub tracker: Tracker,
    pub hops: HopNames,
    /// Drops neither from nor to these clients are left out (the kernel filters SYNs).
    pub client_filter: Option<Cidr>,
}

impl Pipeline {
    pub fn new(namer: Namer, hops: HopNames, syn_timeout: Duration, client: Option<Cidr>) -> Self {
        Self {
            namer,
            summary: Summary::default(),
            tracker: Tracker::new(syn_timeout.as_nanos() as u64),
            hops,
            client_filter: client,
        }
    }

    /// One ring-buffer record.
    pub fn record(&mut self, bytes: &[u8], out: &mut Observers) -> Result<()> {
        match Event::try_from(bytes) {
            Ok(Event::Drop(raw)) => {
                let d = self.namer.name(raw);
                let who = d.joined.map(|j| j.client.ip()).unwrap_or(d.packet.src.ip());
                if self.client_filter.is_some_and(|c| {
                    !c.contains(who)
                        && !c.contains(d.packet.dst.ip())
                        && !c.contains(d.packet.src.ip())
                }) {
                    return Ok(());
                }
                self.summary.add(&d);
                self.tracker.on_drop(&d);
                out.drop(&d)?;
            }
            Ok(Event::Handshake(s)) => {
                if let Some(id) = self.tracker.on_sighting(&s) {
                    let unix_ns = self.namer.clock.to_unix_ns(s.ts_ns);
                    self.report(&id, None, unix_ns, out)?;
                }
            }
            Err(e) => {
                self.summary.decode_errors += 1;
                log::warn!("undecodable event: {e}");
            }
        }
        Ok(())
    }

    /// Reports the handshakes whose answer is overdue at `now` (kernel time) as unanswered.
    pub fn sweep(&mut self, now: u64, last_hop: LastHop, out: &mut Observers) -> Result<()> {
        for id in self.tracker.due(now) {
            let last = self.last_hop(&id, last_hop);
            self.report(&id, last, self.namer.clock.to_unix_ns(now), out)?;
        }
        Ok(())
    }

    /// At the end of a run (`now`): every handshake still open is reported.
    pub fn flush(&mut self, now: u64, last_hop: LastHop, out: &mut Observers) -> Result<()> {
        for id in self.tracker.flush() {
            let last = self.last_hop(&id, last_hop);
            self.report(&id, last, self.namer.clock.to_unix_ns(now), out)?;
        }
        Ok(())
    }

    fn last_hop(&self, id: &HandshakeId, last_hop: LastHop) -> Option<Hop> {
        let h = self.tracker.get(id)?;
        h.keys.iter().rev().find_map(last_hop)
    }

    fn report(
        &self,
        id: &HandshakeId,
        last: Option<Hop>,
        unix_ns: i128,
        out: &mut Observers,
    ) -> Result<()> {
        let Some(h) = self.tracker.get(id) else {
            return Ok(());
        };
        out.handshake(&HandshakeRecord::new(h, &self.hops, last, unix_ns))
    }
}

/// Where the overlays' VXLAN port came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VxlanSource {
    /// `--vxlan-port`.
    Flag,
    /// The swarm's data-path port, as Docker says on a manager.
    Docker,
    /// The port of this node's overlay VXLAN device (Docker did not say).
    OverlayDevice,
    /// The default: outside a swarm, or the swarm uses it.
    Default,
    /// The default because nothing said otherwise: Docker did not tell (a worker, or no
    /// answer) and no overlay device was found.
    NotTold,
}

/// As the start line says it.
impl std::fmt::Display for VxlanSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VxlanSource::Flag => "--vxlan-port",
            VxlanSource::Docker => "Docker's data-path port",
            VxlanSource::OverlayDevice => "the port of this node's overlay VXLAN device",
            VxlanSource::Default => "the default",
            VxlanSource::NotTold => {
                "the default; Docker did not say, pass --vxlan-port if the swarm uses another"
            }
        })
    }
}

/// The overlays' VXLAN port and where it came from: `given` (`--vxlan-port`), else the
/// swarm's data-path port as Docker says, else (Docker does not tell a worker, or does not
/// answer) the port of this node's overlay VXLAN device, else the default. Doctor's
/// swarm-ports check asks it too.
pub fn vxlan_port(given: Option<u16>) -> (u16, VxlanSource) {
    if let Some(p) = given {
        return (p, VxlanSource::Flag);
    }
    match crate::docker::data_path_port(&crate::docker::socket_path()) {
        Ok(Some(p)) => (p, VxlanSource::Docker),
        Ok(None) => (swarmtrace_common::VXLAN_PORT, VxlanSource::Default),
        Err(e) => {
            log::info!(
                "the swarm's data-path port: {}",
                crate::escape::terminal(&e)
            );
            // A worker (or a Docker that does not answer): the node's own overlays say.
            match kernel::namespaces::overlay_vxlan_port() {
                Some((p, ns)) => {
                    log::info!(
                        "the VXLAN device in Docker's namespace {} uses UDP {p}",
                        crate::escape::terminal(&ns)
                    );
                    (p, VxlanSource::OverlayDevice)
                }
                None => (swarmtrace_common::VXLAN_PORT, VxlanSource::NotTold),
            }
        }
    }
}

/// Runs the tracer until Ctrl-C, SIGTERM, `opts.duration` or `control.stop` fires, telling
/// `observers` what it sees; they are told [`Observer::on_end`](crate::trace::observe::Observer::on_end)
/// when it stops, before the result is returned.
pub async fn trace(
    opts: TraceOptions,
    mut control: Control,
    mut observers: Observers<'_>,
) -> Result<RunResult> {
    let stop = control.stop.take();
    // Registered once, first: a signal that arrives while no future waits for it is kept,
    // never lost (a `ctrl_c()` made per loop turn misses one sent between two turns).
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    crate::privileges::require_tracing()?;
    let (facts, kallsyms) = live_facts()?;
    for n in kernel::hostns::HostNs::locate().notices() {
        eprintln!("swarmtrace: {n}");
    }
    let watch = if opts.iface.is_empty() {
        let w = default_watch();
        if w.is_empty() {
            log::warn!("no docker_gwbridge and no default route here: only drops are traced; name interfaces with --iface");
        }
        w
    } else {
        opts.iface.clone()
    };
    let lacking = kernel::lacking(&facts, &kallsyms, crate::trace::tracer::has_tcx());
    if !lacking.is_empty() {
        eprintln!(
            "swarmtrace: degraded mode on Linux {}: this kernel lacks {}",
            facts.release,
            lacking.join("; ")
        );
    }
    let (vxlan_port, vxlan_source) = vxlan_port(opts.vxlan_port);
    let tracer_opts = TracerOptions {
        tcp_drop: kallsyms.has("tcp_drop"),
        filter: kernel_filter(opts.port, opts.client, vxlan_port),
        watch,
        table_size: opts.table_size,
        tc_mode: opts.tc_mode,
        overload_rate: opts.overload_rate,
    };
    // Namespaces are named on a thread of their own (Docker may hang): started now, it scans
    // while the programs attach; the run waits a bounded time for the names of the
    // namespaces that exist already, and never for later ones.
    let mut netns = NetnsNames::resolving();
    let before = HostSnapshot::take();
    let mut tracer = Tracer::attach(&facts, &tracer_opts)?;
    let hops = HopNames::new(&tracer.watched);
    if !netns.wait_ready(NAMES_AT_START) {
        log::warn!(
            "namespace names are not ready after {NAMES_AT_START:?} (Docker slow?): drops show inodes until they are"
        );
    }
    let namer = Namer {
        reasons: facts.reasons.clone(),
        kallsyms,
        netns,
        clock: WallClock::sample(),
    };
    let clock = namer.clock;
    let mut pipe = Pipeline::new(namer, hops, opts.syn_timeout, opts.client);
    release_startup_memory();
    let started = Instant::now();
    let watched: Vec<String> = tracer.watched.iter().map(|w| w.spec.to_string()).collect();
    eprintln!(
        "swarmtrace: tracing TCP handshakes on Linux {} (watching {}; drops by the {} on kfree_skb; {}; VXLAN on UDP {vxlan_port}, {vxlan_source}){}{}; Ctrl-C to stop",
        facts.release,
        if watched.is_empty() {
            "drops only".to_owned()
        } else {
            crate::escape::terminal(&watched.join(", ")).into_owned()
        },
        tracer.drop_hook.as_str(),
        if opts.overload_rate == 0 {
            "never sampled".to_owned()
        } else {
            format!(
                "detail sampled 1 in {} above {}/s per CPU",
                swarmtrace_common::OVERLOAD_ONE_IN,
                opts.overload_rate
            )
        },
        opts.port.map(|p| format!(", port {p}")).unwrap_or_default(),
        opts.client
            .map(|c| format!(", client {c}"))
            .unwrap_or_default(),
    );

    if let Some(ready) = control.ready.take() {
        let _ = ready.send(());
    }
    let out = &mut observers;
    let deadline = async {
        match opts.duration {
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
    let mut overload = OverloadNotes::default();
    let mut result: Result<()> = Ok(());
    loop {
        tokio::select! {
            r = tracer.next_batch(|b| {
                if result.is_ok() {
                    result = pipe.record(b, out);
                }
            }) => {
                r?;
                result.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
                // One write per batch, not per line (stdout is buffered when piped).
                out.batch()?;
            }
            _ = tick.tick() => {
                let last_hop = |k: &HandshakeKey| tracer.handshake(k).map(|x| x.last_hop());
                pipe.sweep(WallClock::monotonic_now_ns(), &last_hop, out)?;
                out.batch()?;
                if last_check.elapsed() >= Duration::from_secs(1) {
                    last_check = Instant::now();
                    if !tracer.watched.is_empty() {
                        for news in tracer.check_watched() {
                            if !out.terminal_owned() {
                                eprintln!("swarmtrace: {}", crate::escape::terminal(&news));
                            }
                            log::info!("{news}");
                        }
                        pipe.hops.learn(&tracer.watched);
                    }
                    let sampling = tracer.sampling()?;
                    if let Some(note) = overload.update(sampling, &clock) {
                        if !out.terminal_owned() {
                            eprintln!("swarmtrace: {note}");
                        }
                        log::info!("{note}");
                    }
                    if out.wants_health() {
                        let t = tracer.totals()?;
                        out.health(&Health {
                            sampled_one_in: sampling.and_then(|s| s.since_ns.map(|_| s.one_in)).unwrap_or(0),
                            events_sampled_out: t.sighting_events_sampled_out + t.drop_events_sampled_out,
                            elapsed_s: started.elapsed().as_secs_f64(),
                            drops: t.drops,
                            lost_events: t.lost_events,
                            syns: t.syns,
                            answered: t.answered,
                            resets: t.resets,
                            watched: tracer.watched.iter().map(|w| (w.spec.to_string(), w.attached)).collect(),
                            tracked: pipe.tracker.len(),
                        });
                    }
                }
                if control.progress && last_progress.elapsed() >= Duration::from_secs(1) {
                    last_progress = Instant::now();
                    let left = opts.duration.map(|d| d.saturating_sub(started.elapsed()));
                    eprint!(
                        "\rcapture: {} left, {} handshakes, {} drops   ",
                        left.map(|l| format!("{}s", l.as_secs())).unwrap_or_else(|| "until Ctrl-C,".to_owned()),
                        pipe.tracker.len(),
                        pipe.summary.events
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
            result = pipe.record(b, out);
        }
    });
    result?;
    let last_hop = |k: &HandshakeKey| tracer.handshake(k).map(|x| x.last_hop());
    pipe.sweep(WallClock::monotonic_now_ns(), &last_hop, out)?;
    pipe.flush(WallClock::monotonic_now_ns(), &last_hop, out)?;
    out.batch()?;
    let totals = tracer.totals()?;
    overload.update(tracer.sampling()?, &clock);
    let drop_hook = tracer.drop_hook;
    let after = HostSnapshot::take();
    drop(tracer);
    out.end();
    let secs = started.elapsed().as_secs_f64();
    let mut summary = pipe.summary.finish(&totals, &facts.reasons, secs);
    summary.handshakes = handshake_totals(&pipe.tracker);
    summary.watched = watched;
    summary.kernel_lacks = lacking;
    summary.kfree_skb_hook = drop_hook.as_str().to_owned();
    summary.sampled = overload.first_ns.map(|since| Sampled {
        one_in: overload.one_in,
        since: crate::clock::rfc3339_micros(clock.to_unix_ns(since)),
        windows: overload.windows,
        sighting_events_not_sent: totals.sighting_events_sampled_out,
        drop_events_not_sent: totals.drop_events_sampled_out,
    });
    if let Some(s) = &summary.sampled {
        eprintln!(
            "swarmtrace: overloaded: detail events were sampled 1 in {} since {} ({} handshake and {} drop events not sent); the counts (drops, drops by reason) are exact, the lists and handshakes are of the sample",
            s.one_in, s.since, s.sighting_events_not_sent, s.drop_events_not_sent
        );
    }
    Ok(RunResult {
        summary,
        tracker: pipe.tracker,
        hops: pipe.hops,
        before,
        after,
        facts,
        clock,
        netns: pipe.namer.netns,
        vxlan_port,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use swarmtrace_common::{class, kind, seen, DropEvent, HandshakeEvent, PacketInfo};

    use super::*;
    use crate::kernel::kallsyms::Kallsyms;
    use crate::kernel::DropReasons;
    use crate::trace::drops::Drop;
    use crate::trace::observe::Observer;
    use crate::trace::tracker::Outcome;

    const SERVICE: &str = "10.0.0.1:8080";
    const HOP: Hop = Hop {
        netns: 1,
        ifindex: 2,
        dir: 1,
        _pad: [0; 3],
    };

    /// The bytes of a ring-buffer record, as the kernel writes them.
    fn bytes_of<T>(ev: &T) -> Vec<u8> {
        // SAFETY: the wire types are repr(C) plain-old-data with explicit padding.
        unsafe {
            std::slice::from_raw_parts((ev as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn v4(a: SocketAddr) -> ([u8; 16], u16) {
        let SocketAddr::V4(a) = a else {
            panic!("IPv4 only here")
        };
        let mut b = [0; 16];
        b[..4].copy_from_slice(&a.ip().octets());
        (b, a.port())
    }

    /// A packet from `src` to `dst`.
    fn packet(class: u8, src: &str, dst: &str, seq: u32, ack: u32) -> PacketInfo {
        let ((saddr, sport), (daddr, dport)) = (v4(src.parse().unwrap()), v4(dst.parse().unwrap()));
        PacketInfo {
            saddr,
            daddr,
            sport,
            dport,
            seq,
            ack_seq: ack,
            has_ts: 1,
            tsval: 5,
            family: 4,
            class,
            ..PacketInfo::default()
        }
    }

    /// A classifier's sighting of `client`'s handshake (ISN `isn`, TSval 5).
    fn sighting(what: u8, ts_ns: u64, client: &str, isn: u32, latency_ns: u32) -> Vec<u8> {
        let mut ev = HandshakeEvent::default();
        ev.header.kind = kind::HANDSHAKE;
        ev.header.ts_ns = ts_ns;
        ev.key = HandshakeKey { isn, tsval: 5 };
        ev.hop = HOP;
        ev.what = what;
        ev.latency_ns = latency_ns;
        ev.packet = if what == seen::SYN {
            packet(class::SYN, client, SERVICE, isn, 0)
        } else {
            packet(class::SYN_ACK, SERVICE, client, 9, isn + 1)
        };
        bytes_of(&ev)
    }

    /// The kernel dropping `client`'s SYN-ACK (reason 3), joined to its handshake.
    fn dropped_syn_ack(ts_ns: u64, client: &str, isn: u32) -> Vec<u8> {
        let mut ev = DropEvent::default();
        ev.header.kind = kind::DROP;
        ev.header.ts_ns = ts_ns;
        ev.location = 0xffffffff820339c0 + 0x10;
        ev.netns = 4026532300;
        ev.reason = 3;
        ev.packet = packet(class::SYN_ACK, SERVICE, client, 9, isn + 1);
        ev.key = HandshakeKey { isn, tsval: 5 };
        let (c, cport) = v4(client.parse().unwrap());
        let (s, sport) = v4(SERVICE.parse().unwrap());
        (ev.client, ev.client_port, ev.service, ev.service_port) = (c, cport, s, sport);
        ev.joined = 1;
        bytes_of(&ev)
    }

    /// A handshake as told: verdict, client, latency, reason, first hop, last hop.
    type ToldHandshake = (Outcome, String, Option<u64>, Option<String>, String, String);

    /// What the observers were told, owned.
    #[derive(Debug, Default)]
    struct Told {
        drops: Vec<(String, Option<SocketAddr>)>,
        handshakes: Vec<ToldHandshake>,
    }

    impl Observer for Told {
        fn on_drop(&mut self, d: &Drop) -> Result<()> {
            self.drops
                .push((d.reason.to_string(), d.joined.map(|j| j.client)));
            Ok(())
        }

        fn on_handshake(&mut self, h: &HandshakeRecord<'_>) -> Result<()> {
            let hop = |x: Option<crate::trace::observe::HopName>| {
                x.map_or_else(|| "-".to_owned(), |x| x.to_string())
            };
            self.handshakes.push((
                h.verdict,
                h.client.to_string(),
                h.latency_us(),
                h.reason.map(str::to_owned),
                hop(h.first_hop),
                hop(h.last_hop),
            ));
            Ok(())
        }
    }

    fn pipeline() -> Pipeline {
        let namer = Namer {
            reasons: DropReasons::from_names([(3, "NO_SOCKET".to_owned())].into()),
            kallsyms: Kallsyms::parse("ffffffff820339c0 T tcp_v4_rcv\n"),
            netns: NetnsNames::with_roots(std::path::Path::new("/nonexistent"), vec![]),
            clock: WallClock::sample(),
        };
        let hops = HopNames::from_entries(&[
            (1, 2, "host".into(), "eth0".into()),
            (1, 3, "host".into(), "eth1".into()),
        ]);
        Pipeline::new(namer, hops, Duration::from_millis(1), None)
    }

    #[test]
    fn records_become_the_handshakes_and_drops_the_observers_get() {
        let mut pipe = pipeline();
        let mut told = Told::default();
        let ms = 1_000_000;
        {
            let mut out = Observers(vec![&mut told]);
            for record in [
                sighting(seen::SYN, ms, "10.0.0.2:40001", 100, 0),
                sighting(seen::SYN, ms, "10.0.0.3:40002", 200, 0),
                sighting(seen::SYN, ms, "10.0.0.4:40003", 300, 0),
                sighting(seen::SYN_ACK, 2 * ms, "10.0.0.2:40001", 100, 250_000),
                dropped_syn_ack(2 * ms + 10, "10.0.0.3:40002", 200),
                vec![0xff; 8],
            ] {
                pipe.record(&record, &mut out).unwrap();
            }
            // Before the timeout nothing more is reported.
            pipe.sweep(ms + ms / 2, &|_| None, &mut out).unwrap();
        }
        assert_eq!(
            told.handshakes,
            [(
                Outcome::Answered,
                "10.0.0.2:40001".to_owned(),
                Some(250),
                None,
                "eth0/in".to_owned(),
                "-".to_owned()
            )]
        );
        let client: SocketAddr = "10.0.0.3:40002".parse().unwrap();
        assert_eq!(told.drops, [("NO_SOCKET".to_owned(), Some(client))]);
        assert_eq!(pipe.summary.decode_errors, 1);

        // The timeout passes: the dropped one and the unanswered one, last seen where the
        // kernel's table says.
        let last_hop = |k: &HandshakeKey| (k.isn == 300).then_some(Hop { ifindex: 3, ..HOP });
        pipe.sweep(10 * ms, &last_hop, &mut Observers(vec![&mut told]))
            .unwrap();
        pipe.flush(20 * ms, &last_hop, &mut Observers(vec![&mut told]))
            .unwrap();
        assert_eq!(told.handshakes.len(), 3, "{told:?}");
        assert_eq!(
            told.handshakes[1],
            (
                Outcome::Dropped,
                "10.0.0.3:40002".to_owned(),
                None,
                Some("NO_SOCKET".to_owned()),
                "eth0/in".to_owned(),
                "-".to_owned()
            )
        );
        assert_eq!(
            told.handshakes[2],
            (
                Outcome::Unanswered,
                "10.0.0.4:40003".to_owned(),
                None,
                None,
                "eth0/in".to_owned(),
                "eth1/in".to_owned()
            )
        );
        let totals = handshake_totals(&pipe.tracker);
        assert_eq!(
            (
                totals.total,
                totals.answered,
                totals.dropped,
                totals.unanswered
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(pipe.summary.events, 1);
    }

    #[test]
    fn overload_is_told_when_it_starts_and_ends_and_remembered() {
        let clock = WallClock::sample();
        let mut notes = OverloadNotes::default();
        assert_eq!(notes.update(None, &clock), None);
        let sampling = |since_ns, windows| {
            Some(Sampling {
                one_in: 16,
                since_ns,
                windows,
            })
        };
        let start = notes.update(sampling(Some(5_000), 1), &clock).unwrap();
        assert!(start.contains("sampled 1 in 16 since"), "{start}");
        assert_eq!(notes.update(sampling(Some(5_000), 3), &clock), None);
        let over = notes.update(sampling(None, 4), &clock).unwrap();
        assert!(over.starts_with("overload over"), "{over}");
        // The first start is what the summary says, however often it came back.
        notes.update(sampling(Some(9_000), 5), &clock).unwrap();
        assert_eq!((notes.first_ns, notes.windows), (Some(5_000), 5));
    }

    #[test]
    fn drops_outside_the_client_filter_are_left_out() {
        let mut pipe = pipeline();
        pipe.client_filter = Some(crate::net::parse_cidr("192.168.0.0/16").unwrap());
        let mut told = Told::default();
        let mut out = Observers(vec![&mut told]);
        pipe.record(&dropped_syn_ack(5, "10.0.0.3:40002", 200), &mut out)
            .unwrap();
        drop(out);
        assert!(told.drops.is_empty());
        assert_eq!(pipe.summary.events, 0);
    }
}
