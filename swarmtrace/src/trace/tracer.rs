//! Loads the kernel programs with the running kernel's facts, attaches them, and hands out
//! their events and exact counters. Dropping a `Tracer` detaches everything.

use std::os::fd::AsRawFd;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::links::LinkOrder;
use aya::programs::tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use swarmtrace_common::{
    slot_index, stat, Filter, Handshake, HandshakeKey, Overload, Slot, TableConfig, MAX_REASONS,
    OVERLOAD_ONE_IN, OVERLOAD_WINDOW_NS,
};
use tokio::io::unix::AsyncFd;

use crate::kernel::netns::{inode_of_file, ns_file, within};
use crate::kernel::KernelFacts;
use crate::trace::clsact::{self, Owner, OwnerToken};
use crate::trace::programs::{attach_kfree_skb, attach_tcp_drop, explain_load_error, DropHook};

/// An interface to watch with the TC classifiers: `IFACE` in the host namespace, or
/// `NETNS:IFACE` (a name under /run/netns or /var/run/docker/netns, e.g. `ingress_sbox:eth1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceSpec {
    pub netns: String,
    pub ifname: String,
}

impl std::str::FromStr for IfaceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (netns, ifname) = match s.rsplit_once(':') {
            Some((ns, i)) => (ns.to_owned(), i.to_owned()),
            None => ("host".to_owned(), s.to_owned()),
        };
        if ifname.is_empty() || ifname.len() > 15 || netns.is_empty() {
            return Err(format!(
                "`{s}`: expected IFACE or NETNS:IFACE (interface names are 1-15 characters)"
            ));
        }
        Ok(Self { netns, ifname })
    }
}

impl std::fmt::Display for IfaceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.netns == "host" {
            write!(f, "{}", self.ifname)
        } else {
            write!(f, "{}:{}", self.netns, self.ifname)
        }
    }
}

/// An interface the classifiers are attached to.
#[derive(Debug)]
pub struct Watched {
    pub spec: IfaceSpec,
    pub ns_file: PathBuf,
    pub netns: u32,
    pub ifindex: u32,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
    /// Netlink mode: the clsact qdisc is ours to remove at the end if it is empty then (we
    /// added it, or it held only swarmtrace filters when we came).
    own_qdisc: bool,
    /// Netlink mode: the handle of our filters here, held while we live.
    token: Option<OwnerToken>,
    pub attached: bool,
}

/// How the classifiers hang off an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TcMode {
    /// TCX links where the kernel has them (6.6+), else netlink filters on clsact.
    #[default]
    Auto,
    Tcx,
    Netlink,
}

impl TcMode {
    fn resolve(self) -> Self {
        match self {
            TcMode::Auto if has_tcx() => TcMode::Tcx,
            TcMode::Auto => TcMode::Netlink,
            m => m,
        }
    }
}

/// The classifiers' names, also the names of their netlink filters.
pub const PROG_IN: &str = "swarmtrace_in";
pub const PROG_OUT: &str = "swarmtrace_out";

/// How often the event ring is read when the kernel programs did not wake the reader.
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// How to load the programs.
#[derive(Debug, Clone)]
pub struct TracerOptions {
    pub filter: Filter,
    pub watch: Vec<IfaceSpec>,
    pub table_size: u32,
    pub tc_mode: TcMode,
    /// Attach the kprobe on `tcp_drop` (the kernel has the symbol).
    pub tcp_drop: bool,
    /// Detail events per second per CPU above which the programs sample (0: never).
    pub overload_rate: u32,
}

/// The kernel programs sampled their detail events (overload): 1 handshake in `one_in`
/// kept its events since `since_ns` (monotonic) on at least one CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    pub one_in: u32,
    /// The earliest a CPU sampling now started; None when no CPU samples now.
    pub since_ns: Option<u64>,
    /// 100 ms windows sampled, summed over CPUs, over the run.
    pub windows: u64,
}

/// The kernel object built by `cargo xtask build-ebpf` (through build.rs), embedded.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SWARMTRACE_EBPF_OBJ"));

/// Exact totals read from the per-CPU counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub drops: u64,
    pub lost_events: u64,
    pub unreadable: u64,
    /// SYNs first seen on watched interfaces, and their answers.
    pub syns: u64,
    pub answered: u64,
    pub resets: u64,
    pub joined_drops: u64,
    /// Events not sent while the programs sampled (overload): SYN/SYN-ACK/RST sightings and
    /// drops. The counts above stay exact.
    pub sighting_events_sampled_out: u64,
    pub drop_events_sampled_out: u64,
    /// (reason value, count), non-zero only.
    pub drops_by_reason: Vec<(u32, u64)>,
}

pub struct Tracer {
    // Field order is drop order: the maps' readers go before the object that owns the links.
    events: AsyncFd<RingBuf<MapData>>,
    logger: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
    stats: PerCpuArray<MapData, u64>,
    reasons: PerCpuArray<MapData, u64>,
    handshakes: Array<MapData, Slot>,
    overload: PerCpuArray<MapData, Overload>,
    table: TableConfig,
    pub drop_hook: DropHook,
    pub watched: Vec<Watched>,
    tc_mode: TcMode,
    ebpf: Ebpf,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let mut watched = std::mem::take(&mut self.watched);
        for w in &mut watched {
            if w.attached {
                self.detach_tc(w);
            }
        }
    }
}

impl Tracer {
    /// Loads and attaches. Must be called inside a tokio runtime.
    pub fn attach(facts: &KernelFacts, opts: &TracerOptions) -> Result<Self> {
        raise_memlock_limit();
        let mut offsets = facts.offsets;
        // For the tests (and a suspicious operator): the programs' general paths, taken on a
        // kernel whose layouts they were not compiled for, instead of their fast paths.
        if std::env::var_os("SWARMTRACE_GENERAL_PATHS").is_some() {
            offsets.tp_layout = u32::MAX;
            offsets.skb_hdr_window = u32::MAX;
            offsets.dev_window = u32::MAX;
        }
        let table = table_config(opts.table_size, opts.overload_rate);
        let slots = table.mask + 1;
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("FILTER", &opts.filter, true)
            .override_global("TABLE", &table, true)
            .map_max_entries("HANDSHAKES", slots)
            .load(EBPF_OBJECT)
            .map_err(|e| explain_load_error(e.into()))?;
        // The logger must exist before any program loads (it owns the log map's fd) and stay
        // alive as long as the programs do.
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(poll_fd(l).context("cannot poll the kernel log buffer")?),
            Err(e) => {
                log::debug!("kernel-side logging unavailable: {e}");
                None
            }
        };
        let drop_hook = attach_kfree_skb(&mut ebpf, offsets.tp_layout != u32::MAX)?;

        if opts.tcp_drop {
            if let Err(e) = attach_tcp_drop(&mut ebpf) {
                log::warn!("this kernel has tcp_drop but its kprobe cannot attach ({e:#}): TCP drops that skip kfree_skb are not seen");
            }
        }
        let events = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| anyhow!("no EVENTS map"))?,
        )?;
        let stats = PerCpuArray::try_from(
            ebpf.take_map("STATS")
                .ok_or_else(|| anyhow!("no STATS map"))?,
        )?;
        let reasons = PerCpuArray::try_from(
            ebpf.take_map("DROP_REASONS")
                .ok_or_else(|| anyhow!("no DROP_REASONS map"))?,
        )?;
        let handshakes = Array::try_from(
            ebpf.take_map("HANDSHAKES")
                .ok_or_else(|| anyhow!("no HANDSHAKES map"))?,
        )?;
        let overload = PerCpuArray::try_from(
            ebpf.take_map("OVERLOAD")
                .ok_or_else(|| anyhow!("no OVERLOAD map"))?,
        )?;
        for name in [PROG_IN, PROG_OUT] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("kernel object has no {name} program"))?
                .try_into()?;
            prog.load()
                .map_err(|e| explain_load_error(e.into()))
                .with_context(|| format!("the kernel rejected the {name} classifier"))?;
        }
        let mut tracer = Self {
            events: poll_fd(events).context("cannot poll the event ring buffer")?,
            logger,
            stats,
            reasons,
            handshakes,
            overload,
            table,
            drop_hook,
            watched: Vec::new(),
            tc_mode: opts.tc_mode.resolve(),
            ebpf,
        };
        for spec in &opts.watch {
            tracer.watch(spec)?;
        }
        Ok(tracer)
    }

    fn attach_tc(&mut self, w: &mut Watched) -> Result<()> {
        let ifname = w.spec.ifname.clone();
        let spec = w.spec.clone();
        let mode = self.tc_mode;
        let ebpf = &mut self.ebpf;
        let (ifindex, links, own_qdisc, token) = within(&w.ns_file, move || -> Result<_> {
            let ifindex = ifindex_of(&ifname)
                .with_context(|| format!("--iface {spec}: no interface `{ifname}` there"))?;
            let mut own_qdisc = false;
            let mut token = None;
            if mode == TcMode::Netlink {
                // Our filters carry a handle of our own, held by a token while we live: the
                // kernel picks their priority (before any other filter's).
                let t = OwnerToken::claim(ifindex).with_context(|| {
                    format!("cannot make an owner token for the filters on {spec}")
                })?;
                let only_swarmtrace = remove_stale_filters(ifindex, &spec, t.handle);
                token = Some(t);
                // Before TCX, classifiers hang off a clsact qdisc; add it only if missing. It
                // is ours to remove at the end (when empty) if we added it, or if only
                // swarmtrace filters were on it: a swarmtrace made it, maybe one now gone.
                own_qdisc = tc::qdisc_add_clsact(&ifname).is_ok() || only_swarmtrace;
            }
            let mut links = Vec::new();
            for (name, dir) in [
                (PROG_IN, TcAttachType::Ingress),
                (PROG_OUT, TcAttachType::Egress),
            ] {
                let prog: &mut SchedClassifier = ebpf
                    .program_mut(name)
                    .ok_or_else(|| anyhow!("no {name} program"))?
                    .try_into()?;
                let options = match &token {
                    Some(t) => TcAttachOptions::Netlink(NlOptions {
                        handle: TcHandle::from(t.handle),
                        ..NlOptions::default()
                    }),
                    None => TcAttachOptions::TcxOrder(LinkOrder::default()),
                };
                let id = prog
                    .attach_with_options(&ifname, dir, options)
                    .with_context(|| format!("cannot attach {name} to {spec}"))?;
                links.push((name, id));
            }
            Ok((ifindex, links, own_qdisc, token))
        })
        .with_context(|| format!("cannot enter namespace {}", w.ns_file.display()))??;
        w.ifindex = ifindex;
        w.links = links;
        w.own_qdisc = own_qdisc;
        w.token = token;
        w.attached = true;
        Ok(())
    }

    /// Detaches both classifiers from one interface, inside its namespace (netlink filters
    /// are addressed by interface index, which is only meaningful there). Removes the clsact
    /// qdisc when it is ours and no filter, ours or anyone's, is left on it.
    fn detach_tc(&mut self, w: &mut Watched) {
        let links = std::mem::take(&mut w.links);
        let ifindex = w.ifindex;
        let own_qdisc = std::mem::replace(&mut w.own_qdisc, false);
        let ebpf = &mut self.ebpf;
        let r = within(&w.ns_file, move || {
            for (name, id) in links {
                if let Some(Ok(prog)) = ebpf.program_mut(name).map(<&mut SchedClassifier>::try_from)
                {
                    // Removes exactly our filter (its priority and handle), or our TCX link.
                    // Fails when the interface is gone, and with it the filter: nothing to do.
                    let _ = prog.detach(id);
                }
            }
            if own_qdisc {
                match clsact::clsact_is_empty(ifindex) {
                    Ok(true) => {
                        if let Err(e) = clsact::delete_clsact(ifindex) {
                            log::debug!("cannot remove the clsact qdisc: {e}");
                        }
                    }
                    Ok(false) => log::info!(
                        "leaving the clsact qdisc: other filters are on it (another swarmtrace, or another tool)"
                    ),
                    Err(e) => log::debug!("cannot list the filters left on clsact ({e}): leaving it"),
                }
            }
        });
        if let Err(e) = r {
            log::debug!("cannot enter {} to detach: {e}", w.ns_file.display());
        }
        // Released last: until our filters are gone, nobody takes them for stale ones.
        w.token = None;
        w.attached = false;
    }

    /// Forgets the links of an interface that is gone: its filters went with it. (A netlink
    /// link is not detached later by index in whatever namespace we are then: that index may
    /// name another interface there.)
    fn forget_links(&mut self, w: &mut Watched) {
        for (name, id) in std::mem::take(&mut w.links) {
            if let Some(Ok(prog)) = self
                .ebpf
                .program_mut(name)
                .map(<&mut SchedClassifier>::try_from)
            {
                if let Ok(link) = prog.take_link(id) {
                    if self.tc_mode == TcMode::Netlink {
                        // Holds no resource; dropping it would send a delete request.
                        std::mem::forget(link);
                    }
                }
            }
        }
        w.own_qdisc = false;
        w.token = None;
        w.attached = false;
    }

    /// Notices interfaces and namespaces that went away or came back (docker_gwbridge
    /// re-created, a task restarted) and re-attaches; returns what happened, for the user.
    pub fn check_watched(&mut self) -> Vec<String> {
        let mut news = Vec::new();
        let mut watched = std::mem::take(&mut self.watched);
        for w in &mut watched {
            let file = ns_file(&w.spec.netns);
            let handle = w.token.as_ref().map(|t| t.handle);
            let now = file.as_ref().and_then(|f| {
                let ifname = w.spec.ifname.clone();
                within(f, move || {
                    let ifindex = ifindex_of(&ifname).ok()?;
                    // Whether our filters are still there (a `tc qdisc del`, another tool,
                    // or an older swarmtrace may have removed them).
                    let ours = handle.map(|h| our_filters_present(ifindex, h));
                    Some((ifindex, ours))
                })
                .ok()
                .flatten()
                .map(|(i, ours)| (f.clone(), i, ours))
            });
            if let Some(t) = &w.token {
                t.drain();
            }
            let netns_now = file.as_deref().and_then(inode_of_file);
            match now {
                Some((f, ifindex, ours))
                    if !w.attached
                        || ifindex != w.ifindex
                        || netns_now != Some(w.netns)
                        || ours == Some(false) =>
                {
                    let removed = w.attached && ours == Some(false);
                    if w.attached {
                        self.detach_tc(w);
                    }
                    w.ns_file = f;
                    w.netns = netns_now.unwrap_or(0);
                    let what = if removed {
                        "lost its classifiers (removed from outside: another tool, `tc`, or an older swarmtrace)"
                    } else {
                        "is back"
                    };
                    match self.attach_tc(w) {
                        Ok(()) => news.push(format!("{} {what}: classifiers re-attached", w.spec)),
                        Err(e) => {
                            news.push(format!("{} {what} but re-attaching failed: {e:#}", w.spec))
                        }
                    }
                }
                Some(_) => {}
                None if w.attached => {
                    self.forget_links(w);
                    news.push(format!(
                        "{} disappeared ({}); watching for it to come back",
                        w.spec,
                        if file.is_none() {
                            "its namespace is gone"
                        } else {
                            "the interface is gone"
                        }
                    ));
                }
                None => {}
            }
        }
        self.watched = watched;
        news
    }

    /// Attaches both classifiers to one interface, inside its namespace.
    pub fn watch(&mut self, spec: &IfaceSpec) -> Result<()> {
        let file = ns_file(&spec.netns).with_context(|| {
            format!(
                "--iface {spec}: no network namespace `{}` (looked in /run/netns and /var/run/docker/netns)",
                spec.netns
            )
        })?;
        let mut w = Watched {
            spec: spec.clone(),
            netns: inode_of_file(&file).unwrap_or(0),
            ns_file: file,
            ifindex: 0,
            links: Vec::new(),
            own_qdisc: false,
            token: None,
            attached: false,
        };
        self.attach_tc(&mut w)?;
        self.watched.push(w);
        Ok(())
    }

    /// The kernel's record of a SYN, if its slot still holds it (checked whole, as the
    /// programs check it: a slot being overwritten at this instant is a miss).
    pub fn handshake(&self, key: &HandshakeKey) -> Option<Handshake> {
        let slot = self
            .handshakes
            .get(&slot_index(key.isn, self.table.seed, self.table.mask), 0)
            .ok()?;
        slot.holds(key).then_some(slot.hs)
    }

    /// Whether the programs sample now or did during the run, from every CPU's state.
    pub fn sampling(&self) -> Result<Option<Sampling>> {
        let cpus = self.overload.get(&0, 0)?;
        let now = crate::clock::WallClock::monotonic_now_ns();
        let mut since: Option<u64> = None;
        let mut windows = 0;
        for o in cpus.iter() {
            windows += o.windows_sampled;
            // A CPU that has seen no event for a window no longer samples, whatever its
            // state says (it updates it only when an event comes).
            let current = now.saturating_sub(o.window_start) < 2 * OVERLOAD_WINDOW_NS;
            if o.sampling_since != 0 && current {
                since = Some(since.map_or(o.sampling_since, |s| s.min(o.sampling_since)));
            }
        }
        Ok((windows > 0 || since.is_some()).then_some(Sampling {
            one_in: self.table.one_in,
            since_ns: since,
            windows,
        }))
    }

    /// Waits until events are ready (or the kernel logged something), at most `POLL`, then
    /// hands every pending record to `f`. The kernel programs wake the reader only once a
    /// good part of the ring is waiting (a wakeup per event costs the sending CPU), so the
    /// ring is also read every `POLL`.
    pub async fn next_batch(&mut self, mut f: impl FnMut(&[u8])) -> Result<()> {
        let logger = self.logger.as_mut();
        let ready = async {
            match logger {
                Some(l) => {
                    let mut g = l.readable_mut().await?;
                    g.get_inner_mut().flush();
                    g.clear_ready();
                    std::future::pending::<std::io::Result<()>>().await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.events.readable_mut() => {
                let mut guard = r?;
                read_all(guard.get_inner_mut(), &mut f);
                guard.clear_ready();
            }
            r = ready => { r?; }
            _ = tokio::time::sleep(POLL) => read_all(self.events.get_mut(), &mut f),
        }
        Ok(())
    }

    /// Hands every record already in the ring buffer to `f`, without waiting.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        read_all(self.events.get_mut(), &mut f);
        if let Some(l) = self.logger.as_mut() {
            l.get_mut().flush();
        }
    }

    #[allow(clippy::needless_range_loop)]
    pub fn totals(&self) -> Result<Totals> {
        let sum = |map: &PerCpuArray<MapData, u64>, i: u32| -> Result<u64> {
            Ok(map.get(&i, 0)?.iter().sum())
        };
        let mut drops_by_reason = Vec::new();
        for r in 0..MAX_REASONS {
            let n = sum(&self.reasons, r)?;
            if n > 0 {
                drops_by_reason.push((r, n));
            }
        }
        Ok(Totals {
            drops: sum(&self.stats, stat::DROPS)?,
            lost_events: sum(&self.stats, stat::LOST_EVENTS)?,
            unreadable: sum(&self.stats, stat::UNREADABLE)?
                + sum(&self.stats, stat::TC_UNREADABLE)?,
            syns: sum(&self.stats, stat::SYNS)?,
            answered: sum(&self.stats, stat::ANSWERED)?,
            resets: sum(&self.stats, stat::RESETS)?,
            joined_drops: sum(&self.stats, stat::JOINED_DROPS)?,
            sighting_events_sampled_out: sum(&self.stats, stat::TC_SAMPLED_OUT)?,
            drop_events_sampled_out: sum(&self.stats, stat::DROPS_SAMPLED_OUT)?,
            drops_by_reason,
        })
    }
}

/// Removes the swarmtrace filters on `ifindex` whose instance is gone (a killed run, or a
/// version that did not mark its filters) and says which live instances share it. Runs in
/// the interface's namespace. A filter whose owner cannot be told is left alone. Returns
/// whether there were filters and all were swarmtrace's (live or stale).
fn remove_stale_filters(ifindex: u32, spec: &IfaceSpec, ours: u32) -> bool {
    let mut others: Vec<Option<u32>> = Vec::new();
    let (mut swarmtrace, mut foreign) = (0usize, 0usize);
    for (name, dir) in [
        (PROG_IN, TcAttachType::Ingress),
        (PROG_OUT, TcAttachType::Egress),
    ] {
        let filters = match clsact::filters(ifindex, dir) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("cannot list the filters on {spec} ({e}): stale swarmtrace filters, if any, stay");
                foreign += 1;
                continue;
            }
        };
        for f in filters {
            if f.handle == 0 {
                continue;
            }
            if f.kind != "bpf" || f.name.as_deref() != Some(name) {
                foreign += 1;
                continue;
            }
            swarmtrace += 1;
            if f.handle == ours {
                continue;
            }
            match clsact::owner(ifindex, f.handle) {
                Owner::Gone => {
                    let whose = if f.handle < clsact::MIN_OWNED_HANDLE {
                        "with no owner mark (a swarmtrace older than owner marks, killed or still running: restart that one)"
                    } else {
                        "whose instance is gone (a killed run)"
                    };
                    match clsact::delete_filter(ifindex, dir, &f) {
                        Ok(()) => log::warn!(
                            "removed a stale {name} filter on {spec} (pref {} handle {:#x}) {whose}",
                            f.prio,
                            f.handle
                        ),
                        Err(e) => log::warn!(
                            "cannot remove a stale {name} filter on {spec} (pref {} handle {:#x}): {e}",
                            f.prio,
                            f.handle
                        ),
                    }
                }
                Owner::Alive(pid) => {
                    if !others.contains(&pid) {
                        others.push(pid);
                    }
                }
                Owner::Unknown(e) => log::warn!(
                    "cannot tell whose {name} filter on {spec} is (pref {} handle {:#x}): {e}; leaving it",
                    f.prio,
                    f.handle
                ),
            }
        }
    }
    for pid in others {
        let who = match pid {
            Some(p) => format!("pid {p}"),
            None => "in another PID namespace, e.g. a container".to_owned(),
        };
        log::warn!("another swarmtrace instance ({who}) is attached to {spec}; both keep working");
    }
    swarmtrace > 0 && foreign == 0
}

/// Whether both our filters (handle `handle`) are on the interface. A failed listing counts
/// as present: it is no reason to re-attach.
fn our_filters_present(ifindex: u32, handle: u32) -> bool {
    [
        (PROG_IN, TcAttachType::Ingress),
        (PROG_OUT, TcAttachType::Egress),
    ]
    .into_iter()
    .all(|(name, dir)| match clsact::filters(ifindex, dir) {
        Ok(fs) => fs
            .iter()
            .any(|f| f.handle == handle && f.name.as_deref() == Some(name)),
        Err(e) => {
            log::debug!("cannot list the filters on interface {ifindex}: {e}");
            true
        }
    })
}

/// Hands every record the ring holds to `f`.
fn read_all(ring: &mut RingBuf<MapData>, f: &mut impl FnMut(&[u8])) {
    while let Some(item) = ring.next() {
        f(&item);
    }
}

/// Registers a map's fd with the runtime for readability.
fn poll_fd<T: AsRawFd>(inner: T) -> Result<AsyncFd<T>> {
    // SAFETY: the fd is owned by `inner`, which the AsyncFd owns and drops after deregistering.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("{e}"))
}

/// The handshake table's slot function and the overload thresholds: the table's size rounded
/// up to a power of two, a random seed.
fn table_config(table_size: u32, overload_rate: u32) -> TableConfig {
    let mut seed = [0u8; 8];
    // SAFETY: a valid buffer of its length; flags 0 (blocks only before the pool is ready).
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != seed.len() as isize {
        // Not a secret, only unguessable from outside: the time will do.
        seed = crate::clock::WallClock::monotonic_now_ns().to_ne_bytes();
    }
    let per_window = u64::from(overload_rate) * OVERLOAD_WINDOW_NS / 1_000_000_000;
    TableConfig {
        seed: u64::from_ne_bytes(seed),
        mask: table_size.max(2).next_power_of_two() - 1,
        overload_per_window: per_window.clamp(u64::from(overload_rate > 0), u64::from(u32::MAX))
            as u32,
        one_in: OVERLOAD_ONE_IN,
        _pad: 0,
    }
}

/// TCX (fd-based TC links, 6.6+) is what aya uses when the kernel has it.
pub fn has_tcx() -> bool {
    aya::util::KernelVersion::current()
        .map(|v| v.code() >= aya::util::KernelVersion::new(6, 6, 0).code())
        .unwrap_or(false)
}

fn ifindex_of(ifname: &str) -> Result<u32> {
    let c = std::ffi::CString::new(ifname)?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("{}", std::io::Error::last_os_error());
    }
    Ok(idx)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so loading does not fail
/// there. Harmless on newer kernels.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to a local struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "cannot raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_a_power_of_two_and_the_threshold_per_window() {
        let t = table_config(65536, 50_000);
        assert_eq!(
            (t.mask, t.overload_per_window, t.one_in),
            (65535, 5_000, 16)
        );
        assert_eq!(table_config(100_000, 0).mask, 131_071);
        assert_eq!(table_config(100_000, 0).overload_per_window, 0);
        // A rate below one event per window still samples above it, never "never".
        assert_eq!(table_config(64, 3).overload_per_window, 1);
        assert_ne!(table_config(64, 3).seed, table_config(64, 3).seed);
    }
}
