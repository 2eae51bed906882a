//! `--metrics ADDR`: a Prometheus endpoint (`GET /metrics`, text exposition format 0.0.4) fed
//! by the run's observers: handshakes by service and verdict, drops by service, reason and
//! namespace, answered handshakes' latency, and the tracer's health.
//!
//! Nothing here runs on the event loop but the observer, which updates counters under a
//! mutex held for a map update. Scrapes are served by a small HTTP/1.1 responder on a thread
//! of its own, which copies the counters (the only time it takes that mutex) and renders the
//! copy at most once per [`RENDER_EVERY`]; each connection is bounded in size and time (a few seconds in all, however
//! slowly the client sends or reads), connections are capped in all and per peer, so slow or
//! hostile scrapers never hold up the tracer nor keep a real scrape out for long. Label
//! cardinality is bounded: past the limits, new series are folded into `service="other"` and
//! counted in `swarmtrace_metrics_series_dropped_total`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::escape;
use crate::trace::drops::{self, netns_label};
use crate::trace::observe::{HandshakeRecord, Health, Observer};
use crate::trace::tracker::Outcome;
use crate::verdict::{self, Cause};

/// Upper bounds of the latency histogram's buckets, in microseconds (0.0001 s .. 5 s).
pub const BUCKETS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// The service label of series folded together past a cardinality limit.
pub const OTHER: &str = "other";

/// Scrapes served at once; more wait in the listen backlog (each is done within
/// [`CONNECTION_DEADLINE`], so a place frees up within that long).
const MAX_CONNECTIONS: usize = 256;
/// Connections served at once from one peer (an IPv4 address, an IPv6 /64); more are
/// answered 503 and closed at once.
const MAX_PER_PEER: usize = 32;
/// The request line and headers; past this the answer is 431.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client has to send its whole request head, however it dribbles it.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a connection may take in all (request, answer, close), however slowly it reads.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// After answering: how long, and how much, to read what the client still sends before
/// closing (closing with unread data would reset the connection and could lose the answer).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// Time a connection turned away (its peer has too many) may take in all.
const REJECT_DEADLINE: Duration = Duration::from_millis(500);
/// The counters are copied and rendered at most this often, however many scrape: a scrape
/// is at most this old.
pub const RENDER_EVERY: Duration = Duration::from_millis(250);

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How many series each labelled metric may hold before new ones go to `service="other"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `swarmtrace_handshakes_total`: services x verdicts.
    pub handshake_series: usize,
    /// `swarmtrace_handshake_drops_total`: services x reasons x namespaces.
    pub drop_series: usize,
    /// `swarmtrace_handshake_latency_seconds`: services (each is 18 series).
    pub latency_services: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_series: 2_000,
            drop_series: 2_000,
            latency_services: 500,
        }
    }
}

/// One service's latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is above the last bound.
    buckets: [u64; BUCKETS_US.len() + 1],
    count: u64,
    sum_us: u64,
}

impl Histogram {
    fn observe(&mut self, us: u64) {
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }
}

/// Everything the endpoint exposes, fed by the observer.
#[derive(Debug, Clone)]
pub struct MetricsState {
    limits: Limits,
    /// (service, verdict, cause: empty for an answered one) -> handshakes.
    handshakes: BTreeMap<(String, String, &'static str), u64>,
    /// (service, reason, netns) -> dropped packets.
    drops: BTreeMap<(String, String, String), u64>,
    latency: BTreeMap<String, Histogram>,
    health: Health,
    series_dropped: u64,
    /// Bumped by every update: a scrape reuses the last rendering while it is unchanged.
    generation: u64,
}

impl Default for MetricsState {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// The counter of `key` in `map`, or of the `overflow` key when `map` is full and `key` new.
fn slot<'m, K: Ord>(
    map: &'m mut BTreeMap<K, u64>,
    key: K,
    limit: usize,
    dropped: &mut u64,
    overflow: impl FnOnce() -> K,
) -> &'m mut u64 {
    if map.len() >= limit && !map.contains_key(&key) {
        *dropped += 1;
        return map.entry(overflow()).or_default();
    }
    map.entry(key).or_default()
}

impl MetricsState {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            handshakes: BTreeMap::new(),
            drops: BTreeMap::new(),
            latency: BTreeMap::new(),
            health: Health::default(),
            series_dropped: 0,
            generation: 0,
        }
    }

    pub fn on_drop(&mut self, d: &drops::Drop) {
        self.generation += 1;
        let service = d
            .joined
            .map_or_else(|| "unknown".to_owned(), |j| j.service.to_string());
        let reason = &*d.reason;
        let netns = netns_label(d.netns_name.as_deref(), d.netns);
        let reason_owned = reason.to_owned();
        *slot(
            &mut self.drops,
            (service, reason.to_owned(), netns),
            self.limits.drop_series,
            &mut self.series_dropped,
            // The namespace goes too: `pid:N(comm)` names are as many as processes.
            || (OTHER.to_owned(), reason_owned, OTHER.to_owned()),
        ) += 1;
    }

    pub fn on_handshake(&mut self, h: &HandshakeRecord<'_>) {
        self.generation += 1;
        let service = &*h.service.to_string();
        let verdict = h.verdict.as_str();
        // Unanswered after its SYN left into the overlay: the run's verdict names that cause.
        let cause = if h.verdict == Outcome::Unanswered && h.overlay.is_some() {
            Some(Cause::OverlayUnreachable)
        } else {
            verdict::own_cause(h.verdict, h.first_drop)
        }
        .map_or("", Cause::id);
        *slot(
            &mut self.handshakes,
            (service.to_owned(), verdict.to_owned(), cause),
            self.limits.handshake_series,
            &mut self.series_dropped,
            || (OTHER.to_owned(), verdict.to_owned(), cause),
        ) += 1;
        if h.verdict != Outcome::Answered {
            return;
        }
        let Some(us) = h.latency_us() else {
            return;
        };
        let key = if self.latency.len() >= self.limits.latency_services
            && !self.latency.contains_key(service)
        {
            self.series_dropped += 1;
            OTHER
        } else {
            service
        };
        self.latency.entry(key.to_owned()).or_default().observe(us);
    }

    pub fn on_health(&mut self, h: &Health) {
        self.generation += 1;
        self.health = h.clone();
    }
}

/// Escapes a label value: backslash, double quote and line feed as the format says; every
/// other character a terminal must not get as it is (ESC, CR, C1, bidi overrides...) as
/// [`escape::terminal`] shows it, its backslash escaped in turn: the format knows no other
/// escape (`\x1b` would fail the scrape), and a scraped value read on a terminal stays text.
pub fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut buf = [0u8; 4];
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => match escape::terminal(c.encode_utf8(&mut buf)) {
                Cow::Borrowed(_) => out.push(c),
                Cow::Owned(shown) => out.push_str(&shown.replace('\\', "\\\\")),
            },
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // HELP text escapes only backslash and line feed; ours has neither.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape_label(v));
    }
    s.push('}');
    s
}

/// Seconds from microseconds, as Prometheus reads them (`0.0001`, `1`, `2.5`).
fn seconds(us: u64) -> String {
    format!("{}", us as f64 / 1e6)
}

/// Renders the current state in the Prometheus text exposition format, version 0.0.4.
pub fn render(state: &MetricsState) -> String {
    let mut out = String::with_capacity(
        4096 + 96 * (state.handshakes.len() + state.drops.len())
            + 1800 * state.latency.len()
            + 64 * state.health.watched.len(),
    );
    let o = &mut out;

    family(
        o,
        "swarmtrace_handshakes_total",
        "counter",
        "TCP handshakes by service (the published address as first seen), verdict (answered, dropped, reset, unanswered) and, for a failed one, the cause its own packets show (paws-timestamps, netfilter-drop, no-listener, listen-queue-full, rp-filter, reply-misrouted, no-route, overlay-unreachable, bad-checksum, backend-unreachable, unknown: the run's summary may name more from counters, e.g. conntrack-full for a netfilter-drop where the conntrack table was full, ipvs-no-backend for one where IPVS had no backend for the port, ipvs-misdirected for a no-listener where IPVS had sent the SYN to a backend Docker was draining).",
    );
    for ((service, verdict, cause), n) in &state.handshakes {
        let l = if cause.is_empty() {
            labels(&[("service", service), ("verdict", verdict)])
        } else {
            labels(&[("service", service), ("verdict", verdict), ("cause", cause)])
        };
        let _ = writeln!(o, "swarmtrace_handshakes_total{l} {n}");
    }

    family(
        o,
        "swarmtrace_handshake_drops_total",
        "counter",
        "Handshake packets the kernel dropped, by service (unknown when the handshake was not seen on a watched interface), kernel drop reason and network namespace.",
    );
    for ((service, reason, netns), n) in &state.drops {
        let l = labels(&[("service", service), ("reason", reason), ("netns", netns)]);
        let _ = writeln!(o, "swarmtrace_handshake_drops_total{l} {n}");
    }

    family(
        o,
        "swarmtrace_handshake_latency_seconds",
        "histogram",
        "Time from an answered handshake's first SYN to its SYN-ACK, by service.",
    );
    for (service, h) in &state.latency {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += h.buckets[i];
            let l = labels(&[("service", service), ("le", &seconds(*bound))]);
            let _ = writeln!(
                o,
                "swarmtrace_handshake_latency_seconds_bucket{l} {cumulative}"
            );
        }
        let l = labels(&[("service", service), ("le", "+Inf")]);
        let _ = writeln!(
            o,
            "swarmtrace_handshake_latency_seconds_bucket{l} {}",
            h.count
        );
        let l = labels(&[("service", service)]);
        let _ = writeln!(
            o,
            "swarmtrace_handshake_latency_seconds_sum{l} {}",
            seconds(h.sum_us)
        );
        let _ = writeln!(
            o,
            "swarmtrace_handshake_latency_seconds_count{l} {}",
            h.count
        );
    }

    let h = &state.health;
    let simple: [(&str, &str, &str, String); 11] = [
        (
            "swarmtrace_kernel_drops_total",
            "counter",
            "Dropped handshake packets matching the filters, exact (the kernel's per-CPU counters).",
            h.drops.to_string(),
        ),
        (
            "swarmtrace_lost_events_total",
            "counter",
            "Events the kernel could not hand over (ring buffer full); the kernel totals stay exact.",
            h.lost_events.to_string(),
        ),
        (
            "swarmtrace_syns_total",
            "counter",
            "Handshakes started: SYNs first seen on watched interfaces (kernel counter).",
            h.syns.to_string(),
        ),
        (
            "swarmtrace_synacks_total",
            "counter",
            "Handshakes answered by a SYN-ACK seen on watched interfaces (kernel counter).",
            h.answered.to_string(),
        ),
        (
            "swarmtrace_resets_total",
            "counter",
            "Handshakes answered by a RST seen on watched interfaces (kernel counter).",
            h.resets.to_string(),
        ),
        (
            "swarmtrace_interfaces_watched",
            "gauge",
            "Interfaces swarmtrace watches for handshakes.",
            h.watched.len().to_string(),
        ),
        (
            "swarmtrace_tracked_handshakes",
            "gauge",
            "Handshakes held in memory.",
            h.tracked.to_string(),
        ),
        (
            "swarmtrace_sampled_one_in",
            "gauge",
            "N while the kernel sends the detail events of 1 handshake in N (overload), else 0: event-made series are of the sample, the kernel_* and *_total counters of the kernel stay exact.",
            h.sampled_one_in.to_string(),
        ),
        (
            "swarmtrace_events_sampled_out_total",
            "counter",
            "Detail events the kernel did not send while sampling (overload).",
            h.events_sampled_out.to_string(),
        ),
        (
            "swarmtrace_metrics_series_dropped_total",
            "counter",
            "Observations counted under service=\"other\" because their metric had reached its series limit.",
            state.series_dropped.to_string(),
        ),
        (
            "swarmtrace_up",
            "gauge",
            "1 while swarmtrace is tracing.",
            "1".to_owned(),
        ),
    ];
    for (name, kind, help, value) in simple {
        family(o, name, kind, help);
        let _ = writeln!(o, "{name} {value}");
    }

    family(
        o,
        "swarmtrace_interface_attached",
        "gauge",
        "1 when the classifiers are attached to the watched interface now, else 0.",
    );
    for (iface, attached) in &h.watched {
        let l = labels(&[("interface", iface)]);
        let _ = writeln!(
            o,
            "swarmtrace_interface_attached{l} {}",
            u8::from(*attached)
        );
    }

    family(
        o,
        "swarmtrace_build_info",
        "gauge",
        "Always 1; the version is in the label.",
    );
    let l = labels(&[("version", env!("CARGO_PKG_VERSION"))]);
    let _ = writeln!(o, "swarmtrace_build_info{l} 1");
    out
}

/// Parses `--metrics ADDR`: `9100` or `:9100` is 127.0.0.1:9100; `0.0.0.0:9100`,
/// `[::]:9100`, `[::1]:9100` are taken as given; `localhost:9100` is 127.0.0.1:9100.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let example = "e.g. 9100, 127.0.0.1:9100, 0.0.0.0:9100 or [::]:9100";
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) => Err(format!("`{s}`: the port must be 1-65535")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("`{s}` is not a port or address ({example})")),
        }
    };
    let local = |p: &str| -> Result<SocketAddr, String> {
        Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port(p)?))
    };
    if t.is_empty() {
        return Err(format!("an address to listen on is needed ({example})"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return local(t);
    }
    if let Some(p) = t.strip_prefix(':') {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            return local(p);
        }
    }
    if let Some(p) = t.strip_prefix("localhost:") {
        return local(p);
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(format!("`{s}`: the port must be 1-65535"));
        }
        return Ok(a);
    }
    if t.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "`{s}` has no port ({example}; an IPv6 address goes in brackets: [::1]:9100)"
        ));
    }
    if let Some((host, p)) = t.rsplit_once(':') {
        if host.parse::<IpAddr>().is_ok() && host.contains(':') {
            return Err(format!(
                "`{s}`: put an IPv6 address in brackets, as in [{host}]:{p}"
            ));
        }
    }
    Err(format!("`{s}` is not a port or address ({example})"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the observer and the connections share.
#[derive(Default)]
struct Shared {
    state: Mutex<MetricsState>,
    /// The last rendering, the generation it was made from, and when.
    cache: Mutex<Option<(u64, Instant, Arc<String>)>>,
}

impl Shared {
    /// The current exposition, rendered on the responder's thread from a copy of the
    /// counters (the observer waits at most for the copy), at most once per [`RENDER_EVERY`]
    /// however many scrapers ask, and shared by those that read it slowly.
    fn body(&self) -> Arc<String> {
        let mut cache = lock(&self.cache);
        if let Some((_, at, body)) = &*cache {
            if at.elapsed() < RENDER_EVERY {
                return body.clone();
            }
        }
        let snapshot = {
            let state = lock(&self.state);
            match &*cache {
                Some((generation, _, body)) if *generation == state.generation => {
                    let body = body.clone();
                    *cache = Some((state.generation, Instant::now(), body.clone()));
                    return body;
                }
                _ => state.clone(),
            }
        };
        let body = Arc::new(render(&snapshot));
        *cache = Some((snapshot.generation, Instant::now(), body.clone()));
        body
    }
}

/// Feeds the shared state from the run; each call holds the lock for a map update.
struct MetricsObserver {
    shared: Arc<Shared>,
}

impl Observer for MetricsObserver {
    fn on_drop(&mut self, drop: &drops::Drop) -> anyhow::Result<()> {
        lock(&self.shared.state).on_drop(drop);
        Ok(())
    }
    fn on_handshake(&mut self, handshake: &HandshakeRecord<'_>) -> anyhow::Result<()> {
        lock(&self.shared.state).on_handshake(handshake);
        Ok(())
    }
    fn on_health(&mut self, health: &Health) {
        lock(&self.shared.state).on_health(health);
    }
}

/// Binds `addr`, with a message that says what to do when it cannot.
async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::AddrInUse => format!(
                "the address is already in use (another swarmtrace or exporter? `ss -ltnp 'sport = :{}'` shows who); choose another with --metrics",
                addr.port()
            ),
            io::ErrorKind::PermissionDenied => {
                "not allowed: ports below 1024 need root or CAP_NET_BIND_SERVICE".to_owned()
            }
            io::ErrorKind::AddrNotAvailable => {
                "no interface of this host has that address; use 127.0.0.1, 0.0.0.0 or [::]"
                    .to_owned()
            }
            _ => e.to_string(),
        };
        anyhow::anyhow!("cannot serve metrics on {addr}: {hint} ({e})")
    })
}

/// Binds `addr` (failing with a clear message if the address is taken or not allowed) and
/// serves `GET /metrics` from a thread of its own (with its own runtime, so that no scrape
/// ever runs on the event loop's thread); returns the observer that feeds it. The thread is
/// never joined: it ends with the process.
pub async fn serve(
    addr: SocketAddr,
) -> anyhow::Result<(Box<dyn Observer>, std::thread::JoinHandle<()>)> {
    let listener = bind(addr).await?.into_std()?;
    let shared = Arc::new(Shared::default());
    let serving = shared.clone();
    let thread = std::thread::Builder::new()
        .name("metrics".to_owned())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::warn!("metrics: cannot start the responder's runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, serving).await,
                    Err(e) => log::warn!("metrics: {e}"),
                }
            });
        })?;
    log::info!("serving metrics on http://{addr}/metrics");
    Ok((Box::new(MetricsObserver { shared }), thread))
}

/// Who a peer is for [`MAX_PER_PEER`]: its IPv4 address, or its IPv6 /64 (one host gets a
/// whole /64 to pick addresses from).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
    }
}

/// Connections open per peer; a place is given back when its guard drops.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

struct PeerGuard {
    peers: Arc<Peers>,
    key: IpAddr,
}

impl Peers {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<PeerGuard> {
        let key = peer_key(ip);
        let mut m = lock(&self.0);
        let n = m.entry(key).or_default();
        if *n >= MAX_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerGuard {
            peers: self.clone(),
            key,
        })
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut m = lock(&self.peers.0);
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = Arc::new(Peers::default());
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(guard) = peers.enter(peer.ip()) else {
                    log::debug!("metrics: {peer}: too many connections from this peer");
                    // A short answer, then close (holding a place of the overall cap, briefly).
                    tokio::spawn(async move {
                        let _permit = permit;
                        let busy = async {
                            write_all(&stream, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n").await?;
                            close_gently(&stream).await;
                            io::Result::Ok(())
                        };
                        let _ = tokio::time::timeout(REJECT_DEADLINE, busy).await;
                    });
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _guard = guard;
                    match tokio::time::timeout(CONNECTION_DEADLINE, answer(stream, &shared)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => log::debug!("metrics: {peer}: {e}"),
                        Err(_) => log::debug!("metrics: {peer}: too slow, closed"),
                    }
                });
            }
            Err(e) => {
                // Out of descriptors, mostly: wait rather than spin.
                log::warn!("metrics: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What the request head gave.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Complete(usize),
    TooLarge,
    Closed,
}

/// The end of the request head (`\r\n\r\n`, or `\n\n` from lax clients) in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn read_head(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<Head> {
    let mut chunk = [0u8; 2048];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = head_end(buf) {
                    if end <= MAX_REQUEST_HEAD {
                        return Ok(Head::Complete(end));
                    }
                }
                if buf.len() > MAX_REQUEST_HEAD {
                    return Ok(Head::TooLarge);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The status and whether to send the metrics, for a request head.
fn route(head: &[u8]) -> (u16, &'static str, bool) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or_default().trim_end();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (400, "Bad Request", false);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || target.is_empty() {
        return (400, "Bad Request", false);
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => (200, "OK", true),
        _ => (404, "Not Found", false),
    }
}

async fn answer(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&stream, &mut buf)).await {
        Ok(h) => h?,
        Err(_) => return Ok(()),
    };
    let (status, text, metrics, head_only) = match head {
        Head::Closed => return Ok(()),
        Head::TooLarge => (431, "Request Header Fields Too Large", false, false),
        Head::Complete(end) => {
            let (status, text, metrics) = route(&buf[..end]);
            (status, text, metrics, buf.starts_with(b"HEAD "))
        }
    };
    let (body, content_type) = if metrics {
        (shared.body(), CONTENT_TYPE)
    } else if status == 404 {
        (
            Arc::new("not found: the metrics are at /metrics\n".to_owned()),
            "text/plain; charset=utf-8",
        )
    } else {
        (Arc::new(format!("{text}\n")), "text/plain; charset=utf-8")
    };
    let head = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    write_all(&stream, head.as_bytes()).await?;
    if !head_only {
        write_all(&stream, body.as_bytes()).await?;
    }
    close_gently(&stream).await;
    Ok(())
}

/// Sends FIN, then reads what the client may still send until it closes (for [`LINGER`] at
/// most), so that closing does not reset the connection before the client has read the
/// answer.
async fn close_gently(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    let linger = async {
        let mut chunk = [0u8; 2048];
        let mut read = 0;
        while read < LINGER_BYTES {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, linger).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::event::{Joined, Packet, PacketKind};
    use crate::trace::tracker::DropNote;
    use std::io::{Read, Write};

    fn handshake(
        service: &str,
        verdict: &str,
        latency_us: Option<u64>,
    ) -> HandshakeRecord<'static> {
        HandshakeRecord {
            unix_ns: 1_700_000_000_000_000_000,
            verdict: match verdict {
                "answered" => Outcome::Answered,
                "dropped" => Outcome::Dropped,
                "reset" => Outcome::Reset,
                _ => Outcome::Unanswered,
            },
            client: "192.168.1.7:40000".parse().unwrap(),
            service: service.parse().unwrap(),
            latency_ns: latency_us.map(|us| us * 1000),
            reason: None,
            netns_name: None,
            isn: 1,
            syns: 1,
            first_hop: None,
            last_hop: None,
            answer_hop: None,
            tsvals: &[],
            overlay: None,
            first_drop: None,
        }
    }

    fn dropped(service: Option<&str>, reason: &str, netns_name: Option<&str>) -> drops::Drop {
        drops::Drop {
            ts_ns: 1,
            unix_ns: 1_700_000_000_000_000_000,
            packet: Packet {
                kind: PacketKind::Syn,
                src: "10.0.0.2:40000".parse().unwrap(),
                dst: "10.0.0.1:80".parse().unwrap(),
                seq: 1,
                ack: 0,
                tsval: Some(5),
                tsecr: None,
                flags: 2,
            },
            reason: reason.into(),
            location: "tcp_v4_rcv+0x1a".into(),
            netns: 4026531840,
            netns_name: netns_name.map(Into::into),
            ifname: Some("eth0".into()),
            joined: service.map(|s| Joined {
                key: Default::default(),
                client: "10.0.0.2:40000".parse().unwrap(),
                service: s.parse().unwrap(),
            }),
            vxlan_from: None,
        }
    }

    /// The sample lines of `text` (`name{labels} value`), checked for shape.
    fn samples(text: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect(line);
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(
                out.insert(series.to_owned(), value.to_owned()).is_none(),
                "{line}"
            );
        }
        out
    }

    fn fed() -> MetricsState {
        let mut s = MetricsState::default();
        s.on_handshake(&handshake("10.0.0.1:80", "answered", Some(300)));
        s.on_handshake(&handshake("10.0.0.1:80", "answered", Some(1_500)));
        s.on_handshake(&handshake("10.0.0.1:80", "answered", Some(7_000_000)));
        s.on_handshake(&handshake("10.0.0.1:81", "dropped", None));
        s.on_handshake(&handshake("[fd00::1]:80", "reset", None));
        s.on_drop(&dropped(Some("10.0.0.1:81"), "NO_SOCKET", Some("host")));
        s.on_drop(&dropped(Some("10.0.0.1:81"), "NO_SOCKET", Some("host")));
        s.on_drop(&dropped(None, "NETFILTER_DROP", None));
        s.on_health(&Health {
            elapsed_s: 3.0,
            drops: 3,
            lost_events: 0,
            syns: 5,
            answered: 3,
            resets: 1,
            watched: vec![
                ("eth0".to_owned(), true),
                ("ingress_sbox:eth1".to_owned(), false),
            ],
            tracked: 5,
            ..Health::default()
        });
        s
    }

    #[test]
    fn renders_every_metric_from_the_objects() {
        let text = render(&fed());
        let s = samples(&text);
        let get = |k: &str| {
            s.get(k)
                .map(String::as_str)
                .unwrap_or_else(|| panic!("{k} missing in\n{text}"))
        };
        assert_eq!(
            get(r#"swarmtrace_handshakes_total{service="10.0.0.1:80",verdict="answered"}"#),
            "3"
        );
        assert_eq!(
            get(
                r#"swarmtrace_handshakes_total{service="10.0.0.1:81",verdict="dropped",cause="unknown"}"#
            ),
            "1"
        );
        assert_eq!(
            get(
                r#"swarmtrace_handshakes_total{service="[fd00::1]:80",verdict="reset",cause="no-listener"}"#
            ),
            "1"
        );
        assert_eq!(
            get(
                r#"swarmtrace_handshake_drops_total{service="10.0.0.1:81",reason="NO_SOCKET",netns="host"}"#
            ),
            "2"
        );
        assert_eq!(
            get(
                r#"swarmtrace_handshake_drops_total{service="unknown",reason="NETFILTER_DROP",netns="netns:4026531840"}"#
            ),
            "1"
        );
        let b = |le: &str| {
            get(&format!(
                r#"swarmtrace_handshake_latency_seconds_bucket{{service="10.0.0.1:80",le="{le}"}}"#
            ))
            .to_owned()
        };
        assert_eq!(b("0.0001"), "0");
        assert_eq!(b("0.00025"), "0");
        assert_eq!(b("0.0005"), "1");
        assert_eq!(b("0.001"), "1");
        assert_eq!(b("0.0025"), "2");
        assert_eq!(b("1"), "2");
        assert_eq!(b("5"), "2");
        assert_eq!(b("+Inf"), "3");
        assert_eq!(
            get(r#"swarmtrace_handshake_latency_seconds_count{service="10.0.0.1:80"}"#),
            "3"
        );
        assert_eq!(
            get(r#"swarmtrace_handshake_latency_seconds_sum{service="10.0.0.1:80"}"#),
            "7.0018"
        );
        // Only answered handshakes have a latency.
        assert!(!text.contains(r#"latency_seconds_count{service="10.0.0.1:81"}"#));
        assert_eq!(get("swarmtrace_kernel_drops_total"), "3");
        assert_eq!(get("swarmtrace_lost_events_total"), "0");
        assert_eq!(get("swarmtrace_syns_total"), "5");
        assert_eq!(get("swarmtrace_synacks_total"), "3");
        assert_eq!(get("swarmtrace_resets_total"), "1");
        assert_eq!(
            get(r#"swarmtrace_interface_attached{interface="eth0"}"#),
            "1"
        );
        assert_eq!(
            get(r#"swarmtrace_interface_attached{interface="ingress_sbox:eth1"}"#),
            "0"
        );
        assert_eq!(get("swarmtrace_interfaces_watched"), "2");
        assert_eq!(get("swarmtrace_tracked_handshakes"), "5");
        assert_eq!(get("swarmtrace_up"), "1");
        assert_eq!(get("swarmtrace_metrics_series_dropped_total"), "0");
        assert_eq!(
            get(&format!(
                r#"swarmtrace_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )),
            "1"
        );
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples_once() {
        let text = render(&fed());
        let mut typed: Vec<String> = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(!typed.contains(&name.to_owned()), "{name} twice");
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "{name} has no HELP"
                );
                typed.push(name.to_owned());
                current = name.to_owned();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    name == current
                        || name
                            .strip_prefix(current.as_str())
                            .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)),
                    "{line} outside its family {current}"
                );
            }
        }
        assert_eq!(typed.len(), 16, "{typed:?}");
        // An empty state renders the families too, with the health at zero.
        let empty = render(&MetricsState::default());
        assert!(empty.contains("swarmtrace_up 1\n"));
        assert!(empty.contains("swarmtrace_kernel_drops_total 0\n"));
        assert!(empty.contains("# TYPE swarmtrace_handshakes_total counter\n"));
    }

    #[test]
    fn failed_handshakes_carry_the_cause_their_packets_show() {
        let note = |reason: &str, location: &str, tsval: Option<u32>| DropNote {
            ts_ns: 1,
            kind: PacketKind::Syn,
            reason: reason.into(),
            location: location.into(),
            netns: 7,
            netns_name: Some("task".into()),
            ifname: None,
            packet: Packet {
                kind: PacketKind::Syn,
                src: "10.0.0.2:40000".parse().unwrap(),
                dst: "10.0.0.5:80".parse().unwrap(),
                seq: 1,
                ack: 0,
                tsval,
                tsecr: None,
                flags: 2,
            },
            vxlan_from: None,
        };
        let paws = note("TCP_RFC7323_TW_PAWS", "tcp_v4_rcv+0x1", Some(5));
        let by_place = note("NOT_SPECIFIED", "tcp_timewait_state_process+0x1", Some(5));
        let no_ts = note("NOT_SPECIFIED", "tcp_timewait_state_process+0x1", None);
        let rule = note("NETFILTER_DROP", "nft_do_chain+0x1", Some(5));
        let mut s = MetricsState::default();
        for d in [&paws, &by_place, &no_ts, &rule] {
            let mut h = handshake("10.0.0.1:80", "dropped", None);
            h.first_drop = Some(d);
            s.on_handshake(&h);
        }
        s.on_handshake(&handshake("10.0.0.1:80", "unanswered", None));
        s.on_handshake(&handshake("10.0.0.1:80", "answered", Some(10)));
        let m = samples(&render(&s));
        let get = |labels: &str| {
            m[&format!("swarmtrace_handshakes_total{{service=\"10.0.0.1:80\",{labels}}}")].clone()
        };
        // An alert on PAWS: `swarmtrace_handshakes_total{cause="paws-timestamps"}`.
        assert_eq!(get(r#"verdict="dropped",cause="paws-timestamps""#), "2");
        assert_eq!(get(r#"verdict="dropped",cause="netfilter-drop""#), "1");
        assert_eq!(
            get(r#"verdict="dropped",cause="unknown""#),
            "1",
            "no timestamp, no PAWS"
        );
        assert_eq!(get(r#"verdict="unanswered",cause="unknown""#), "1");
        assert_eq!(get(r#"verdict="answered""#), "1");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), r"line\nbreak");
        assert_eq!(escape_label("pid:12(my app)"), "pid:12(my app)");
        assert_eq!(escape_label("ünï"), "ünï");
        // Control and invisible characters: shown as escapes, whose backslash the format
        // escapes (it knows no `\x1b`).
        assert_eq!(escape_label("a\x1b[2Jb"), r"a\\x1b[2Jb");
        assert_eq!(escape_label("cr\rtab\t"), r"cr\\rtab\\t");
        assert_eq!(escape_label("\u{9b}x\u{202e}y"), r"\\u{9b}x\\u{202e}y");
        let mut s = MetricsState::default();
        s.on_drop(&dropped(
            Some("10.0.0.1:80"),
            "NO_SOCKET",
            Some("pid:7(evil\"\\\nns)"),
        ));
        s.on_drop(&dropped(
            Some("10.0.0.1:80"),
            "NO_SOCKET",
            Some("pid:8(\x1b]0;pwn\x07\r)"),
        ));
        let text = render(&s);
        assert!(text.contains(r#"netns="pid:7(evil\"\\\nns)"} 1"#), "{text}");
        assert!(
            text.contains(r#"netns="pid:8(\\x1b]0;pwn\\x07\\r)"} 1"#),
            "{text}"
        );
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        // Every sample stays on one line.
        samples(&text);
    }

    #[test]
    fn cardinality_is_capped_into_other() {
        let mut s = MetricsState::new(Limits {
            handshake_series: 4,
            drop_series: 2,
            latency_services: 2,
        });
        for i in 0..10 {
            let svc = format!("10.0.0.{i}:80");
            s.on_handshake(&handshake(&svc, "answered", Some(1_000)));
            s.on_drop(&dropped(
                Some(&svc),
                "NO_SOCKET",
                Some(&format!("pid:{i}(x)")),
            ));
        }
        // Known series keep counting past the limit.
        s.on_handshake(&handshake("10.0.0.0:80", "answered", Some(1_000)));
        s.on_handshake(&handshake("10.0.0.9:80", "reset", None));
        let text = render(&s);
        let m = samples(&text);
        let hs: Vec<_> = m
            .keys()
            .filter(|k| k.starts_with("swarmtrace_handshakes_total"))
            .collect();
        // 4 series, and the overflow ones.
        assert_eq!(hs.len(), 6, "{hs:?}");
        assert_eq!(
            m[r#"swarmtrace_handshakes_total{service="10.0.0.0:80",verdict="answered"}"#],
            "2"
        );
        assert_eq!(
            m[r#"swarmtrace_handshakes_total{service="other",verdict="answered"}"#],
            "6"
        );
        assert_eq!(
            m[r#"swarmtrace_handshakes_total{service="other",verdict="reset",cause="no-listener"}"#],
            "1"
        );
        assert_eq!(
            m[r#"swarmtrace_handshake_drops_total{service="other",reason="NO_SOCKET",netns="other"}"#],
            "8"
        );
        assert_eq!(
            m[r#"swarmtrace_handshake_latency_seconds_count{service="other"}"#],
            "8"
        );
        assert_eq!(
            m[r#"swarmtrace_handshake_latency_seconds_count{service="10.0.0.0:80"}"#],
            "2"
        );
        assert!(!text.contains("10.0.0.5:80"));
        // 7 handshakes, 8 drops and 8 latencies folded.
        assert_eq!(m["swarmtrace_metrics_series_dropped_total"], "23");
        // The totals are all there.
        let total: u64 = hs.iter().map(|k| m[*k].parse::<u64>().unwrap()).sum();
        assert_eq!(total, 12);
    }

    #[test]
    fn default_limits_bound_the_output() {
        let mut s = MetricsState::default();
        for i in 0..5_000u32 {
            let svc = format!("10.{}.{}.1:80", i / 256, i % 256);
            s.on_handshake(&handshake(&svc, "answered", Some(u64::from(i))));
            s.on_handshake(&handshake(&svc, "unanswered", None));
        }
        let m = samples(&render(&s));
        let hs = m
            .keys()
            .filter(|k| k.starts_with("swarmtrace_handshakes_total"))
            .count();
        assert_eq!(hs, 2_000 + 2);
        let lat = m
            .keys()
            .filter(|k| k.starts_with("swarmtrace_handshake_latency_seconds_count"))
            .count();
        assert_eq!(lat, 500 + 1);
    }

    #[test]
    fn addresses() {
        let a = |s: &str| parse_addr(s).map(|a| a.to_string());
        assert_eq!(a("9100").unwrap(), "127.0.0.1:9100");
        assert_eq!(a(":9100").unwrap(), "127.0.0.1:9100");
        assert_eq!(a("localhost:9100").unwrap(), "127.0.0.1:9100");
        assert_eq!(a("0.0.0.0:9100").unwrap(), "0.0.0.0:9100");
        assert_eq!(a("192.168.1.5:9100").unwrap(), "192.168.1.5:9100");
        assert_eq!(a("[::]:9100").unwrap(), "[::]:9100");
        assert_eq!(a("[::1]:9100").unwrap(), "[::1]:9100");
        assert!(a("0").unwrap_err().contains("1-65535"));
        assert!(a(":0").unwrap_err().contains("1-65535"));
        assert!(a("65536").unwrap_err().contains("not a port"));
        assert!(a("").is_err());
        assert!(a(":").is_err());
        assert!(a("abc").unwrap_err().contains("not a port or address"));
        assert!(a("10.0.0.1").unwrap_err().contains("no port"));
        assert!(a("::1").unwrap_err().contains("no port"));
        assert!(a("fd00::1:9100").is_err());
        assert!(a("example.com:9100").is_err());
    }

    #[test]
    fn request_routing() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").0, 200);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").0, 200);
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n").0, 200);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(route(b"GET /metrics\r\n\r\n").0, 400);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n").0, 400);
        assert_eq!(route(b"\xff\xfe\r\n\r\n").0, 400);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    /// A server on 127.0.0.1, on its own thread and runtime, as in `swarmtrace run`.
    fn server() -> (SocketAddr, Arc<Shared>) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
                let shared = Arc::new(Shared::default());
                tx.send((listener.local_addr().unwrap(), shared.clone()))
                    .unwrap();
                accept_loop(listener, shared).await;
            });
        });
        rx.recv().unwrap()
    }

    /// A connection to `addr` from the loopback address `127.0.x.y` (each is a peer).
    fn connect_from(x: u8, y: u8, addr: SocketAddr) -> std::net::TcpStream {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, x, y)), 0);
        s.bind(&from.into()).unwrap();
        s.connect(&addr.into()).unwrap();
        s.into()
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        exchange_from(0, 1, addr, request)
    }

    fn exchange_from(x: u8, y: u8, addr: SocketAddr, request: &[u8]) -> String {
        let mut s = connect_from(x, y, addr);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").unwrap().1
    }

    #[test]
    fn serves_metrics_and_404s_over_http() {
        let (addr, shared) = server();
        MetricsObserver {
            shared: shared.clone(),
        }
        .on_handshake(&handshake("10.0.0.1:80", "answered", Some(42)))
        .unwrap();
        let r = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{r}"
        );
        let b = body(&r);
        assert!(
            r.contains(&format!("\r\nContent-Length: {}\r\n", b.len())),
            "{r}"
        );
        assert!(
            b.contains(
                r#"swarmtrace_handshakes_total{service="10.0.0.1:80",verdict="answered"} 1"#
            ),
            "{b}"
        );
        assert_eq!(b, render(&lock(&shared.state)));

        let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && body(&r).is_empty(),
            "{r}"
        );
        let r = exchange(addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = exchange(addr, b"hello\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
        // A head that never ends is cut at the bound.
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while big.len() < 3 * MAX_REQUEST_HEAD {
            big.extend_from_slice(
                b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&big);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let r = String::from_utf8_lossy(&out);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }

    #[test]
    fn many_scrapers_at_once_and_idle_ones_do_not_stall_them() {
        let (addr, shared) = server();
        // Idle connections that never send a request, from peers of their own.
        let idle: Vec<_> = (0..20u8)
            .map(|i| connect_from(1, 1 + i / 4, addr))
            .collect();
        let feeder = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut o = MetricsObserver { shared };
                for i in 0..20_000u64 {
                    o.on_handshake(&handshake(
                        &format!("10.0.{}.1:80", i % 100),
                        "answered",
                        Some(i),
                    ))
                    .unwrap();
                }
            })
        };
        let started = std::time::Instant::now();
        let scrapers: Vec<_> = (0..40u8)
            .map(|i| {
                std::thread::spawn(move || {
                    exchange_from(2, 1 + i / 4, addr, b"GET /metrics HTTP/1.1\r\n\r\n")
                })
            })
            .collect();
        for s in scrapers {
            let r = s.join().unwrap();
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            samples(body(&r));
        }
        feeder.join().unwrap();
        assert!(started.elapsed() < READ_TIMEOUT, "{:?}", started.elapsed());
        // A rendering is reused for RENDER_EVERY: the feeder may be done within it.
        std::thread::sleep(RENDER_EVERY);
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        let m = samples(body(&r));
        let total: u64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("swarmtrace_handshakes_total"))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 20_000);
        drop(idle);
    }

    #[test]
    fn one_peer_holds_a_few_connections_and_slow_ones_are_cut() {
        let (addr, _shared) = server();
        // MAX_PER_PEER idle connections from one address; its next one is turned away at
        // once, another peer is served.
        let idle: Vec<_> = (0..MAX_PER_PEER)
            .map(|_| connect_from(3, 1, addr))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let r = exchange_from(3, 1, addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        let r = exchange_from(3, 2, addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(started.elapsed() < Duration::from_secs(1));
        // A client that dribbles its request a byte at a time is closed at READ_TIMEOUT.
        let mut slow = connect_from(3, 3, addr);
        slow.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        for b in b"GET /metrics HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            let mut buf = [0u8; 64];
            match slow.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            assert!(started.elapsed() < 3 * READ_TIMEOUT, "still open");
        }
        assert!(
            started.elapsed() >= READ_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        drop(idle);
    }

    #[test]
    fn a_rendering_is_reused_until_the_state_changes() {
        let shared = Shared::default();
        let a = shared.body();
        assert!(Arc::ptr_eq(&a, &shared.body()));
        lock(&shared.state).on_handshake(&handshake("10.0.0.1:80", "reset", None));
        // Within RENDER_EVERY of the last rendering, it is served again.
        assert!(Arc::ptr_eq(&a, &shared.body()));
        std::thread::sleep(RENDER_EVERY);
        let b = shared.body();
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(
            b.contains(r#"{service="10.0.0.1:80",verdict="reset",cause="no-listener"} 1"#),
            "{b}"
        );
        // Unchanged, it is not rendered again.
        std::thread::sleep(RENDER_EVERY);
        assert!(Arc::ptr_eq(&b, &shared.body()));
        lock(&shared.state).on_health(&Health {
            syns: 9,
            ..Health::default()
        });
        std::thread::sleep(RENDER_EVERY);
        assert!(shared.body().contains("\nswarmtrace_syns_total 9\n"));
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(serve(addr)).err().expect("the port is taken");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("already in use"),
            "{msg}"
        );
    }

    #[test]
    fn promtool_accepts_the_output_when_installed() {
        let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("promtool is not installed: the lint of the output is left to tests/tests/metrics.rs");
            return;
        };
        let mut s = fed();
        s.on_drop(&dropped(
            Some("10.0.0.1:80"),
            "NO_SOCKET",
            Some("pid:7(evil\"\\\nns)"),
        ));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(render(&s).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
