//! The live view of `swarmtrace run` on a terminal: a top-style screen with the tracer's health,
//! a table of handshakes per (service, client), the verdicts so far and the last drops.
//!
//! [`start`] takes over the terminal (raw mode, alternate screen) and starts a thread that
//! draws and reads keys; it returns the [`Observer`] to hand to the run, the receiver to put
//! into `Control.stop` (fired by `q` or Ctrl-C) and a [`TuiHandle`]. The terminal is given back
//! when the run reports its summary (so the summary prints normally), when the handle is
//! finished or dropped, and on a panic.
//!
//! While the view owns the terminal, whatever the process writes on stderr (log records, the
//! run's banner) would scribble over the screen: it is captured, its last line shown at the
//! bottom of the view, and written out on stderr again when the view closes.
//!
//! Memory is bounded: at most [`MAX_ROWS`] (service, client) pairs (later pairs are counted
//! together in one "(other pairs)" row), [`MAX_DROPS`] recent drops, the last
//! [`LATENCY_SAMPLES`] latencies per pair for its median.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table};
use ratatui::{Frame, Terminal};
use serde_json::Value;

use crate::escape;
use crate::present::output::{Health, Observer};
use crate::trace::event::PacketKind;
use crate::verdict::Cause;

/// (service, client) pairs kept; later pairs are counted in one "(other pairs)" row.
pub const MAX_ROWS: usize = 10_000;
/// Recent drops kept for the drops panel.
pub const MAX_DROPS: usize = 200;
/// Latencies kept per pair for its median (the maximum is over all of them).
pub const LATENCY_SAMPLES: usize = 64;
/// Handshakes remembered to join drops to them (by client and ISN).
const MAX_JOIN: usize = 20_000;
/// Distinct clients kept per verdict.
const MAX_VERDICT_CLIENTS: usize = 1_000;
/// Lines of stderr kept while the view is open.
const MAX_MESSAGES: usize = 200;
/// At most ~4 redraws a second for updates; keys redraw at once.
const FRAME: Duration = Duration::from_millis(250);
const OTHER_SERVICE: &str = "(other pairs)";

/// How to draw.
#[derive(Debug, Clone, Default)]
pub struct TuiOptions {
    /// No colors at all (`NO_COLOR` set and not empty, or `--no-color`).
    pub no_color: bool,
    /// The first line of the screen, e.g. "swarmtrace on host X, port 8080".
    pub title: String,
}

impl TuiOptions {
    /// `no_color` from the environment (`NO_COLOR`, see no-color.org).
    pub fn from_env(title: impl Into<String>) -> Self {
        Self {
            no_color: no_color_env(),
            title: title.into(),
        }
    }
}

/// `NO_COLOR` is set to a non-empty value.
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Whether `swarmtrace run` should show the live view: not `--json`, stdout and stdin are
/// terminals, and the terminal is not "dumb".
pub fn should_use(json: bool) -> bool {
    !json
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

// ---------------------------------------------------------------------------------------------
// What the view knows: built from the run's objects (docs/json.md), no terminal needed.

/// The cause a failed handshake points at so far. `Silent`: neither answer nor drop; the run
/// names it at exit from the namespaces' counters and subnets, which the view does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SoFar {
    Cause(Cause),
    Silent,
}

impl SoFar {
    pub fn label(self) -> &'static str {
        match self {
            SoFar::Cause(c) => c.id(),
            SoFar::Silent => "unanswered*",
        }
    }
}

/// The cause a dropped packet names, as the run's verdicts read it (a light copy of their
/// mapping from the kernel's drop reasons).
pub fn drop_cause(reason: &str, packet: &str, location: &str) -> Option<Cause> {
    let kind = match packet {
        "SYN" => PacketKind::Syn,
        "SYN-ACK" => PacketKind::SynAck,
        "RST" => PacketKind::Rst,
        _ => PacketKind::Ack,
    };
    crate::verdict::reason_cause(reason, kind, location)
}

/// One (service, client IP) pair.
#[derive(Debug, Clone, Default)]
pub struct PairStats {
    pub service: String,
    pub client: String,
    pub answered: u64,
    pub dropped: u64,
    pub reset: u64,
    pub unanswered: u64,
    latencies: VecDeque<u64>,
    pub latency_max: Option<u64>,
    pub reason: Option<String>,
    pub netns: Option<String>,
    /// When it last changed (a counter of updates), to show the freshest first on ties.
    pub seq: u64,
}

impl PairStats {
    pub fn failed(&self) -> u64 {
        self.dropped + self.reset + self.unanswered
    }

    /// Median of the last [`LATENCY_SAMPLES`] answered handshakes, microseconds.
    pub fn latency_p50(&self) -> Option<u64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v: Vec<u64> = self.latencies.iter().copied().collect();
        v.sort_unstable();
        Some(v[(v.len() - 1) / 2])
    }
}

/// The clients and count of one verdict so far.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub count: u64,
    /// Client IP -> handshakes.
    pub clients: BTreeMap<String, u64>,
    /// Clients not kept past [`MAX_VERDICT_CLIENTS`].
    pub more_clients: bool,
}

/// A map that forgets its oldest entries past `cap`.
#[derive(Debug)]
struct Bounded<V> {
    /// Value and the generation of its entry in `order`.
    map: HashMap<(String, u64), (V, u64)>,
    /// Insertion order; entries whose generation is not the map's are stale.
    order: VecDeque<((String, u64), u64)>,
    cap: usize,
    generation: u64,
}

impl<V> Bounded<V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
            generation: 0,
        }
    }

    fn insert(&mut self, k: (String, u64), v: V) {
        if let Some(old) = self.map.get_mut(&k) {
            old.0 = v;
            return;
        }
        self.generation += 1;
        self.order.push_back((k.clone(), self.generation));
        self.map.insert(k, (v, self.generation));
        while self.map.len() > self.cap {
            let Some((old, g)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.1 == g) {
                self.map.remove(&old);
            }
        }
        // Removed entries leave stale ones behind: drop them now and then.
        if self.order.len() > 2 * self.cap.max(1) {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|e| e.1 == *g));
        }
    }

    fn get(&self, k: &(String, u64)) -> Option<&V> {
        self.map.get(k).map(|e| &e.0)
    }

    fn remove(&mut self, k: &(String, u64)) -> Option<V> {
        self.map.remove(k).map(|e| e.0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A recent drop, ready to print.
#[derive(Debug, Clone)]
pub struct DropLine {
    pub time: String,
    pub packet: String,
    pub reason: String,
    pub netns: String,
    pub flow: String,
}

/// Everything the view shows, fed by the observer.
#[derive(Debug)]
pub struct Model {
    rows: HashMap<(String, String), PairStats>,
    drops: VecDeque<DropLine>,
    /// Drop objects received.
    pub drops_seen: u64,
    /// Handshake objects received.
    pub handshakes: u64,
    verdicts: BTreeMap<SoFar, Tally>,
    /// First nameable cause of the drops of handshakes not yet reported, by (client, ISN).
    pending: Bounded<Cause>,
    /// What each reported failed handshake was counted as, by (client, ISN): a late drop
    /// (an ARP failure takes seconds) moves a silent one to its cause.
    decided: Bounded<(SoFar, String)>,
    pub health: Option<Health>,
    messages: VecDeque<String>,
    /// stderr lines not kept past [`MAX_MESSAGES`].
    pub messages_lost: u64,
    seq: u64,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            drops: VecDeque::new(),
            drops_seen: 0,
            handshakes: 0,
            verdicts: BTreeMap::new(),
            pending: Bounded::new(MAX_JOIN),
            decided: Bounded::new(MAX_JOIN),
            health: None,
            messages: VecDeque::new(),
            messages_lost: 0,
            seq: 0,
        }
    }
}

/// The IP of `ip:port` or `[ip]:port`; the text itself when it is not an address.
fn ip_of(addr: &str) -> String {
    addr.parse::<SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| addr.to_owned())
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

impl Model {
    fn pair(&mut self, service: &str, client_ip: &str) -> &mut PairStats {
        self.seq += 1;
        let seq = self.seq;
        let mut key = (service.to_owned(), client_ip.to_owned());
        if !self.rows.contains_key(&key) && self.rows.len() >= MAX_ROWS {
            key = (OTHER_SERVICE.to_owned(), "*".to_owned());
        }
        let row = self.rows.entry(key).or_insert_with_key(|k| PairStats {
            service: k.0.clone(),
            client: k.1.clone(),
            ..PairStats::default()
        });
        row.seq = seq;
        row
    }

    fn count(&mut self, what: SoFar, client_ip: &str) {
        let t = self.verdicts.entry(what).or_default();
        t.count += 1;
        if let Some(n) = t.clients.get_mut(client_ip) {
            *n += 1;
        } else if t.clients.len() < MAX_VERDICT_CLIENTS {
            t.clients.insert(client_ip.to_owned(), 1);
        } else {
            t.more_clients = true;
        }
    }

    fn uncount(&mut self, what: SoFar, client_ip: &str) {
        if let Some(t) = self.verdicts.get_mut(&what) {
            t.count = t.count.saturating_sub(1);
            if let Some(n) = t.clients.get_mut(client_ip) {
                *n -= 1;
                if *n == 0 {
                    t.clients.remove(client_ip);
                }
            }
            if t.count == 0 {
                self.verdicts.remove(&what);
            }
        }
    }

    /// A `drop` object.
    pub fn on_drop(&mut self, v: &Value) {
        self.drops_seen += 1;
        let reason = str_field(v, "reason").unwrap_or("UNKNOWN");
        let packet = str_field(v, "packet").unwrap_or("?");
        let location = str_field(v, "location").unwrap_or("");
        let netns = str_field(v, "netns_name")
            .map(str::to_owned)
            .or_else(|| {
                v.get("netns")
                    .and_then(Value::as_u64)
                    .map(|n| format!("netns:{n}"))
            })
            .unwrap_or_else(|| "-".to_owned());
        let client = str_field(v, "client");
        let service = str_field(v, "service");
        let flow = match (client, service) {
            (Some(c), Some(s)) => format!("{c} -> {s}"),
            _ => format!(
                "{} -> {}",
                str_field(v, "src").unwrap_or("?"),
                str_field(v, "dst").unwrap_or("?")
            ),
        };
        let ts = str_field(v, "ts").unwrap_or("");
        self.drops.push_front(DropLine {
            time: ts.get(11..19).unwrap_or(ts).to_owned(),
            packet: packet.to_owned(),
            reason: reason.to_owned(),
            netns: netns.clone(),
            flow,
        });
        self.drops.truncate(MAX_DROPS);
        if let (Some(c), Some(s)) = (client, service) {
            let row = self.pair(s, &ip_of(c));
            row.reason = Some(reason.to_owned());
            row.netns = Some(netns);
        }
        let (Some(c), Some(isn)) = (client, v.get("isn").and_then(Value::as_u64)) else {
            return;
        };
        let Some(cause) = drop_cause(reason, packet, location) else {
            return;
        };
        let key = (c.to_owned(), isn);
        match self.decided.get(&key).cloned() {
            Some((was @ (SoFar::Silent | SoFar::Cause(Cause::Unknown)), ip)) => {
                self.uncount(was, &ip);
                self.count(SoFar::Cause(cause), &ip);
                self.decided.insert(key, (SoFar::Cause(cause), ip));
            }
            Some(_) => {}
            None => {
                if self.pending.get(&key).is_none() {
                    self.pending.insert(key, cause);
                }
            }
        }
    }

    /// A `handshake` object.
    pub fn on_handshake(&mut self, v: &Value) {
        self.handshakes += 1;
        let verdict = str_field(v, "verdict").unwrap_or("");
        let client = str_field(v, "client").unwrap_or("?");
        let service = str_field(v, "service").unwrap_or("?");
        let ip = ip_of(client);
        let reason = str_field(v, "reason");
        let row = self.pair(service, &ip);
        match verdict {
            "answered" => row.answered += 1,
            "dropped" => row.dropped += 1,
            "reset" => row.reset += 1,
            _ => row.unanswered += 1,
        }
        if let Some(l) = v.get("latency_us").and_then(Value::as_u64) {
            if row.latencies.len() == LATENCY_SAMPLES {
                row.latencies.pop_front();
            }
            row.latencies.push_back(l);
            row.latency_max = Some(row.latency_max.map_or(l, |m| m.max(l)));
        }
        if let Some(r) = reason {
            row.reason = Some(r.to_owned());
            row.netns = str_field(v, "netns_name").map(str::to_owned);
        }
        let key = v
            .get("isn")
            .and_then(Value::as_u64)
            .map(|isn| (client.to_owned(), isn));
        let joined = key.as_ref().and_then(|k| self.pending.remove(k));
        if verdict == "answered" {
            return;
        }
        let what = match (joined, reason) {
            (Some(c), _) => SoFar::Cause(c),
            // The reason of its first drop, taken as the SYN's.
            (None, Some(r)) => SoFar::Cause(drop_cause(r, "SYN", "").unwrap_or(Cause::Unknown)),
            (None, None) if verdict == "reset" => SoFar::Cause(Cause::NoListener),
            (None, None) if verdict == "dropped" => SoFar::Cause(Cause::Unknown),
            (None, None) => SoFar::Silent,
        };
        self.count(what, &ip);
        if let Some(k) = key {
            self.decided.insert(k, (what, ip));
        }
    }

    pub fn on_health(&mut self, h: &Health) {
        self.health = Some(h.clone());
    }

    /// A line the process wrote on stderr.
    pub fn on_message(&mut self, line: String) {
        if self.messages.len() == MAX_MESSAGES {
            self.messages.pop_front();
            self.messages_lost += 1;
        }
        self.messages.push_back(line);
    }

    pub fn pairs(&self) -> usize {
        self.rows.len()
    }

    pub fn row(&self, service: &str, client_ip: &str) -> Option<&PairStats> {
        self.rows.get(&(service.to_owned(), client_ip.to_owned()))
    }

    /// The verdicts so far, most handshakes first.
    pub fn verdicts(&self) -> Vec<(SoFar, &Tally)> {
        let mut v: Vec<(SoFar, &Tally)> = self.verdicts.iter().map(|(k, t)| (*k, t)).collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
        v
    }

    pub fn recent_drops(&self) -> impl Iterator<Item = &DropLine> {
        self.drops.iter()
    }

    /// The rows that match `filter` (case-insensitive substring of service, client or last
    /// reason), in the order asked.
    pub fn sorted(&self, sort: SortKey, reverse: bool, filter: &str) -> Vec<&PairStats> {
        let needle = filter.to_lowercase();
        let mut rows: Vec<&PairStats> = self
            .rows
            .values()
            .filter(|r| {
                needle.is_empty()
                    || r.service.to_lowercase().contains(&needle)
                    || r.client.to_lowercase().contains(&needle)
                    || r.reason
                        .as_deref()
                        .is_some_and(|x| x.to_lowercase().contains(&needle))
            })
            .collect();
        rows.sort_by(|a, b| {
            let primary = sort.compare(a, b);
            let primary = if reverse { primary.reverse() } else { primary };
            primary
                .then_with(|| b.seq.cmp(&a.seq))
                .then_with(|| a.service.cmp(&b.service))
                .then_with(|| a.client.cmp(&b.client))
        });
        rows
    }
}

/// The column the table is sorted by; `s` cycles through them in the order of the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Service,
    Client,
    Failed,
    Answered,
    Dropped,
    Reset,
    Unanswered,
    P50,
    Max,
    Reason,
    Netns,
}

impl SortKey {
    pub const ALL: [SortKey; 11] = [
        SortKey::Service,
        SortKey::Client,
        SortKey::Failed,
        SortKey::Answered,
        SortKey::Dropped,
        SortKey::Reset,
        SortKey::Unanswered,
        SortKey::P50,
        SortKey::Max,
        SortKey::Reason,
        SortKey::Netns,
    ];

    pub fn title(self) -> &'static str {
        match self {
            SortKey::Service => "SERVICE",
            SortKey::Client => "CLIENT",
            SortKey::Failed => "FAILED",
            SortKey::Answered => "ANSWERED",
            SortKey::Dropped => "DROPPED",
            SortKey::Reset => "RESET",
            SortKey::Unanswered => "UNANSWERED",
            SortKey::P50 => "P50",
            SortKey::Max => "MAX",
            SortKey::Reason => "LAST REASON",
            SortKey::Netns => "NETNS",
        }
    }

    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// Numbers sort largest first, text alphabetically; `r` reverses either.
    fn compare(self, a: &PairStats, b: &PairStats) -> std::cmp::Ordering {
        let text = |x: &Option<String>, y: &Option<String>| {
            // Rows without one go last.
            match (x, y) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        };
        match self {
            SortKey::Service => a.service.cmp(&b.service),
            SortKey::Client => a.client.cmp(&b.client),
            SortKey::Failed => b.failed().cmp(&a.failed()),
            SortKey::Answered => b.answered.cmp(&a.answered),
            SortKey::Dropped => b.dropped.cmp(&a.dropped),
            SortKey::Reset => b.reset.cmp(&a.reset),
            SortKey::Unanswered => b.unanswered.cmp(&a.unanswered),
            SortKey::P50 => b.latency_p50().cmp(&a.latency_p50()),
            SortKey::Max => b.latency_max.cmp(&a.latency_max),
            SortKey::Reason => text(&a.reason, &b.reason),
            SortKey::Netns => text(&a.netns, &b.netns),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and what is on screen.

/// The view's own state: sort, filter, scrolling.
#[derive(Debug, Clone)]
pub struct Ui {
    pub title: String,
    pub no_color: bool,
    pub sort: SortKey,
    pub reverse: bool,
    /// The filter applied.
    pub filter: String,
    /// The filter being typed after `/`.
    pub editing: Option<String>,
    pub scroll: usize,
    /// `q` was pressed: the run is ending.
    pub stopping: bool,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Redraw,
    Quit,
}

impl Ui {
    pub fn new(opts: &TuiOptions) -> Self {
        Self {
            // It holds the host's name.
            title: shown(&opts.title),
            no_color: opts.no_color,
            sort: SortKey::Failed,
            reverse: false,
            filter: String::new(),
            editing: None,
            scroll: 0,
            stopping: false,
        }
    }

    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.kind == KeyEventKind::Release {
            return Action::Nothing;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(text) = &mut self.editing {
            match k.code {
                KeyCode::Enter => {
                    self.filter = self.editing.take().unwrap_or_default();
                    self.scroll = 0;
                }
                KeyCode::Esc => {
                    self.editing = None;
                    self.filter.clear();
                    self.scroll = 0;
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                    if text.chars().count() < 64 {
                        text.push(c);
                    }
                }
                _ => return Action::Nothing,
            }
            return Action::Redraw;
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Char('Q') => return Action::Quit,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.scroll = 0;
            }
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('/') => self.editing = Some(String::new()),
            KeyCode::Esc => {
                self.filter.clear();
                self.scroll = 0;
            }
            KeyCode::Down | KeyCode::Char('j') => self.scroll = self.scroll.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(20),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(20),
            KeyCode::Home => self.scroll = 0,
            _ => return Action::Nothing,
        }
        Action::Redraw
    }

    fn fg(&self, c: Color) -> Style {
        if self.no_color {
            Style::default()
        } else {
            Style::default().fg(c)
        }
    }

    /// Red when `n` > 0.
    fn alarm(&self, n: u64) -> Style {
        if n > 0 {
            self.fg(Color::Red)
        } else {
            Style::default()
        }
    }
}

fn latency(us: Option<u64>) -> String {
    match us {
        None => "-".to_owned(),
        Some(u) if u < 1_000 => format!("{u}µs"),
        Some(u) if u < 1_000_000 => format!("{:.1}ms", u as f64 / 1e3),
        Some(u) => format!("{:.2}s", u as f64 / 1e6),
    }
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn right(s: String, style: Style) -> Cell<'static> {
    Cell::from(Line::from(Span::styled(s, style)).right_aligned())
}

/// A table row, ready to draw.
#[derive(Debug, Clone)]
pub struct RowView {
    pub service: String,
    pub client: String,
    pub failed: u64,
    pub answered: u64,
    pub dropped: u64,
    pub reset: u64,
    pub unanswered: u64,
    pub p50: Option<u64>,
    pub max: Option<u64>,
    pub reason: Option<String>,
    pub netns: Option<String>,
}

/// A verdict so far, ready to draw.
#[derive(Debug, Clone)]
pub struct VerdictView {
    pub what: SoFar,
    pub count: u64,
    /// The first few clients.
    pub clients: Vec<String>,
    /// Clients not listed.
    pub more: usize,
    /// More clients than were kept.
    pub more_clients: bool,
}

/// What one frame shows, copied out of the model so that drawing holds no lock (a slow
/// terminal must not hold up the run).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub health: Option<Health>,
    pub handshakes: u64,
    pub pairs: usize,
    /// Rows that match the filter.
    pub matching: usize,
    /// Index of the first row shown.
    pub scroll: usize,
    pub rows: Vec<RowView>,
    pub verdicts: Vec<VerdictView>,
    pub drops: Vec<DropLine>,
    pub drops_seen: u64,
    /// The last line written on stderr.
    pub message: Option<String>,
}

/// A name for the screen: the model keeps names exact (they are keys), what is drawn has its
/// control and invisible characters escaped (ratatui would drop controls silently and pass
/// bidi overrides through).
fn shown(s: &str) -> String {
    escape::terminal(s).into_owned()
}

impl Model {
    /// What to draw: `capacity` table rows from the scroll position (clamped so that the last
    /// page is full). Every text in it is escaped for the terminal.
    pub fn snapshot(&self, ui: &Ui, capacity: usize) -> Snapshot {
        let sorted = self.sorted(ui.sort, ui.reverse, &ui.filter);
        let scroll = ui.scroll.min(sorted.len().saturating_sub(capacity));
        Snapshot {
            health: self.health.clone().map(|mut h| {
                for (name, _) in &mut h.watched {
                    *name = shown(name);
                }
                h
            }),
            handshakes: self.handshakes,
            pairs: self.pairs(),
            matching: sorted.len(),
            scroll,
            rows: sorted
                .iter()
                .skip(scroll)
                .take(capacity)
                .map(|r| RowView {
                    service: shown(&r.service),
                    client: shown(&r.client),
                    failed: r.failed(),
                    answered: r.answered,
                    dropped: r.dropped,
                    reset: r.reset,
                    unanswered: r.unanswered,
                    p50: r.latency_p50(),
                    max: r.latency_max,
                    reason: r.reason.as_deref().map(shown),
                    netns: r.netns.as_deref().map(shown),
                })
                .collect(),
            verdicts: self
                .verdicts()
                .into_iter()
                .take(SHOWN)
                .map(|(what, t)| {
                    let clients: Vec<String> = t.clients.keys().take(6).map(|c| shown(c)).collect();
                    VerdictView {
                        what,
                        count: t.count,
                        more: t.clients.len() - clients.len(),
                        clients,
                        more_clients: t.more_clients,
                    }
                })
                .collect(),
            drops: self
                .drops
                .iter()
                .take(SHOWN)
                .map(|d| DropLine {
                    time: shown(&d.time),
                    packet: shown(&d.packet),
                    reason: shown(&d.reason),
                    netns: shown(&d.netns),
                    flow: shown(&d.flow),
                })
                .collect(),
            drops_seen: self.drops_seen,
            message: self.messages.back().map(|m| shown(m)),
        }
    }
}

/// Lines of the verdicts and drops panels taken into a snapshot (more than fit).
const SHOWN: usize = 60;

/// Where each part goes: header, table, verdicts, drops, footer.
fn layout(area: Rect) -> [Rect; 5] {
    let bottom = if area.height >= 30 { 10 } else { 6 };
    let v = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(4),
        Constraint::Length(bottom),
        Constraint::Length(1),
    ])
    .split(area);
    let h =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).split(v[2]);
    [v[0], v[1], h[0], h[1], v[3]]
}

/// Table rows that fit on a screen of this size (inside the borders, under the header).
pub fn table_capacity(width: u16, height: u16) -> usize {
    layout(Rect::new(0, 0, width, height))[1]
        .height
        .saturating_sub(3) as usize
}

/// Draws the whole screen.
pub fn render(f: &mut Frame, snap: &Snapshot, ui: &Ui) {
    let [header, table, verdicts, drops, footer] = layout(f.area());
    render_header(f, header, snap, ui);
    render_table(f, table, snap, ui);
    render_verdicts(f, verdicts, snap, ui);
    render_drops(f, drops, snap, ui);
    render_footer(f, footer, snap, ui);
}

fn render_header(f: &mut Frame, area: Rect, m: &Snapshot, ui: &Ui) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    let mut first = vec![Span::styled(
        ui.title.clone(),
        bold.patch(ui.fg(Color::Cyan)),
    )];
    match &m.health {
        Some(h) => first.push(Span::raw(format!("   elapsed {}", hms(h.elapsed_s)))),
        None => first.push(Span::styled(
            "   starting: loading the kernel programs…",
            ui.fg(Color::Yellow),
        )),
    }
    if ui.stopping {
        first.push(Span::styled(
            "   stopping: the summary follows",
            ui.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    lines.push(Line::from(first));
    let h = m.health.clone().unwrap_or_default();
    lines.push(Line::from(vec![
        Span::raw("drops "),
        Span::styled(
            h.drops.to_string(),
            ui.alarm(h.drops).add_modifier(Modifier::BOLD),
        ),
        Span::raw(" (exact)   lost events "),
        Span::styled(
            h.lost_events.to_string(),
            if h.lost_events > 0 {
                ui.fg(Color::Yellow).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            },
        ),
        Span::raw(format!(
            "   SYNs {}   answered {}   resets {}   handshakes {}   pairs {}{}",
            h.syns,
            h.answered,
            h.resets,
            m.handshakes,
            m.pairs,
            if m.pairs > MAX_ROWS {
                format!(" (over {MAX_ROWS}: the rest in one row)")
            } else {
                String::new()
            }
        )),
    ]));
    let mut watched = vec![Span::raw("watching ")];
    if h.watched.is_empty() {
        watched.push(Span::raw(if m.health.is_some() {
            "no interface (drops only)"
        } else {
            "-"
        }));
    }
    for (i, (name, attached)) in h.watched.iter().enumerate() {
        if i > 0 {
            watched.push(Span::raw(", "));
        }
        watched.push(Span::raw(format!("{name} ")));
        watched.push(if *attached {
            Span::styled("attached", ui.fg(Color::Green))
        } else {
            Span::styled("DETACHED", ui.fg(Color::Red).add_modifier(Modifier::BOLD))
        });
    }
    lines.push(Line::from(watched));
    f.render_widget(Paragraph::new(lines), area);
}

fn is_numeric(k: SortKey) -> bool {
    !matches!(
        k,
        SortKey::Service | SortKey::Client | SortKey::Reason | SortKey::Netns
    )
}

fn render_table(f: &mut Frame, area: Rect, m: &Snapshot, ui: &Ui) {
    let header = TableRow::new(SortKey::ALL.iter().map(|k| {
        let mut style = Style::default().add_modifier(Modifier::BOLD);
        let mut t = k.title().to_owned();
        if *k == ui.sort {
            style = style.add_modifier(Modifier::REVERSED);
            // The arrow points the way values go down the table.
            t.push(if is_numeric(*k) != ui.reverse {
                '▼'
            } else {
                '▲'
            });
        }
        let line = Line::from(Span::styled(t, style));
        Cell::from(if is_numeric(*k) {
            line.right_aligned()
        } else {
            line
        })
    }));
    let body = m.rows.iter().map(|r| {
        TableRow::new(vec![
            Cell::from(r.service.clone()),
            Cell::from(r.client.clone()),
            right(r.failed.to_string(), ui.alarm(r.failed)),
            right(
                r.answered.to_string(),
                if r.answered > 0 {
                    ui.fg(Color::Green)
                } else {
                    Style::default()
                },
            ),
            right(r.dropped.to_string(), ui.alarm(r.dropped)),
            right(r.reset.to_string(), ui.alarm(r.reset)),
            right(r.unanswered.to_string(), ui.alarm(r.unanswered)),
            right(latency(r.p50), Style::default()),
            right(latency(r.max), Style::default()),
            Cell::from(r.reason.clone().unwrap_or_else(|| "-".to_owned())),
            Cell::from(r.netns.clone().unwrap_or_else(|| "-".to_owned())),
        ])
    });
    let widths = [
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Fill(2),
        Constraint::Fill(2),
    ];
    let mut title = format!(
        " handshakes by service and client: {} of {} pair(s), sorted by {}{} ",
        m.matching,
        m.pairs,
        ui.sort.title(),
        if ui.reverse { " (reversed)" } else { "" }
    );
    if !ui.filter.is_empty() {
        title.push_str(&format!("matching \"{}\" ", shown(&ui.filter)));
    }
    if m.scroll > 0 {
        title.push_str(&format!("from row {} ", m.scroll + 1));
    }
    let table = Table::new(body, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::default().borders(Borders::ALL).title(Span::styled(
            title,
            Style::default().add_modifier(Modifier::BOLD),
        )));
    f.render_widget(table, area);
}

fn render_verdicts(f: &mut Frame, area: Rect, m: &Snapshot, ui: &Ui) {
    let mut lines = Vec::new();
    if m.verdicts.is_empty() {
        lines.push(Line::from(if m.handshakes == 0 {
            "no handshake decided yet"
        } else {
            "no failed handshake so far"
        }));
    }
    let inner = area.height.saturating_sub(2) as usize;
    let silent = m.verdicts.iter().any(|v| v.what == SoFar::Silent);
    let room = inner.saturating_sub(usize::from(silent));
    for v in m.verdicts.iter().take(room) {
        let mut tail = String::new();
        if v.more > 0 || v.more_clients {
            tail = format!(" +{}{}", v.more, if v.more_clients { "…" } else { "" });
        }
        let clients = if v.clients.is_empty() {
            "-".to_owned()
        } else {
            v.clients.join(", ")
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{:<18}", v.what.label()),
                ui.fg(if v.what == SoFar::Silent {
                    Color::Yellow
                } else {
                    Color::Red
                })
                .add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(" {:>7}  ", v.count)),
            Span::raw(format!("{clients}{tail}")),
        ]));
    }
    if silent {
        lines.push(Line::from(Span::styled(
            "* no answer, no drop: the summary names it from the counters",
            Style::default().add_modifier(Modifier::DIM),
        )));
    }
    let block = Block::default().borders(Borders::ALL).title(Span::styled(
        " verdicts so far (cause, handshakes, clients) ",
        Style::default().add_modifier(Modifier::BOLD),
    ));
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn render_drops(f: &mut Frame, area: Rect, m: &Snapshot, ui: &Ui) {
    let inner = area.height.saturating_sub(2) as usize;
    let mut lines: Vec<Line> = m
        .drops
        .iter()
        .take(inner)
        .map(|d| {
            Line::from(vec![
                Span::raw(format!("{} {:<7} ", d.time, d.packet)),
                Span::styled(d.reason.clone(), ui.fg(Color::Red)),
                Span::raw(format!(" in {}  {}", d.netns, d.flow)),
            ])
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::from("no drop yet"));
    }
    let block = Block::default().borders(Borders::ALL).title(Span::styled(
        format!(" last drops ({} events) ", m.drops_seen),
        Style::default().add_modifier(Modifier::BOLD),
    ));
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn render_footer(f: &mut Frame, area: Rect, m: &Snapshot, ui: &Ui) {
    let key = Style::default().add_modifier(Modifier::REVERSED);
    let line = if let Some(text) = &ui.editing {
        Line::from(vec![
            Span::styled(" filter ", key),
            Span::raw(format!(" {}_   Enter apply, Esc clear", shown(text))),
        ])
    } else {
        let mut spans = Vec::new();
        for (k, what) in [
            ("q", "quit"),
            ("s", "sort"),
            ("r", "reverse"),
            ("/", "filter"),
            ("↑↓", "scroll"),
        ] {
            spans.push(Span::styled(format!(" {k} "), key));
            spans.push(Span::raw(format!(" {what}  ")));
        }
        if !ui.filter.is_empty() {
            spans.push(Span::styled(
                format!("filter \"{}\" (Esc clears)  ", shown(&ui.filter)),
                ui.fg(Color::Yellow),
            ));
        }
        if let Some(msg) = &m.message {
            spans.push(Span::styled(
                format!("stderr: {msg}"),
                Style::default().add_modifier(Modifier::DIM),
            ));
        }
        Line::from(spans)
    };
    f.render_widget(Paragraph::new(line), area);
}

// ---------------------------------------------------------------------------------------------
// The terminal: taking it over, the drawing thread, giving it back.

/// The view is on screen: the terminal must be given back.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The real stderr while it is captured, else -1.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
static PANIC_HOOK: Once = Once::new();

/// Leaves the alternate screen, ends raw mode, shows the cursor and puts stderr back.
/// Idempotent; safe from a panic hook.
fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let mut out = std::io::stdout();
        let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
        let _ = out.flush();
    }
    let fd = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is our duplicate of the original stderr; dup2 closes the pipe end.
        unsafe {
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }
}

/// Sends fd 2 into a pipe; returns its reading end.
fn capture_stderr() -> Result<std::fs::File> {
    let mut fds = [0; 2];
    // SAFETY: plain fd juggling; every fd is checked and closed on failure.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error()).context("pipe");
        }
        let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fds[0]);
            libc::close(fds[1]);
            return Err(e).context("dup stderr");
        }
        if libc::dup2(fds[1], 2) < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fds[0]);
            libc::close(fds[1]);
            libc::close(saved);
            return Err(e).context("dup2 stderr");
        }
        libc::close(fds[1]);
        SAVED_STDERR.store(saved, Ordering::SeqCst);
        Ok(std::fs::File::from_raw_fd(fds[0]))
    }
}

struct Shared {
    model: Mutex<Model>,
    /// The model changed since the last draw.
    dirty: AtomicBool,
    /// Give the terminal back and end the thread.
    quit: AtomicBool,
    /// The terminal is given back.
    done: Mutex<bool>,
    done_cv: Condvar,
}

impl Shared {
    fn model(&self) -> MutexGuard<'_, Model> {
        // A panic while holding the lock leaves the model usable: it holds only counters.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Model)) {
        f(&mut self.model());
        self.dirty.store(true, Ordering::Release);
    }

    /// Asks the thread to give the terminal back and waits (at most `timeout`) until it has.
    fn close(&self, timeout: Duration) {
        self.quit.store(true, Ordering::Release);
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .done_cv
            .wait_timeout_while(done, timeout, |d| !*d)
            .map_err(|_| ());
    }
}

/// Tells those waiting in [`Shared::close`] that the terminal is given back.
struct Done<'a>(&'a Shared);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        restore_terminal();
        *self.0.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.done_cv.notify_all();
    }
}

/// The observer handed to the run.
struct ViewObserver {
    shared: Arc<Shared>,
}

impl Observer for ViewObserver {
    fn on_drop(&mut self, drop: &Value) {
        self.shared.update(|m| m.on_drop(drop));
    }

    fn on_handshake(&mut self, handshake: &Value) {
        self.shared.update(|m| m.on_handshake(handshake));
    }

    fn on_health(&mut self, health: &Health) {
        self.shared.update(|m| m.on_health(health));
    }

    /// The summary is about to be printed: give the terminal back first.
    fn on_summary(&mut self, _summary: &Value) {
        self.shared.close(Duration::from_secs(3));
    }
}

/// The running view. [`TuiHandle::finish`] (or dropping it) gives the terminal back.
pub struct TuiHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl TuiHandle {
    /// Gives the terminal back (if the run's summary has not already done it) and waits for
    /// the drawing thread. Idempotent.
    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        restore_terminal();
    }
}

impl Drop for TuiHandle {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Starts the live view on the terminal (a thread that draws, reading keys); returns the
/// observer to hand to the run, the stop receiver to put into `Control.stop` (fired by `q` or
/// Ctrl-C), and the handle that gives the terminal back.
pub fn start(
    opts: TuiOptions,
) -> Result<(
    Box<dyn Observer>,
    tokio::sync::oneshot::Receiver<()>,
    TuiHandle,
)> {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
    if ACTIVE.load(Ordering::SeqCst) {
        anyhow::bail!("the live view is already open");
    }
    terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
    ACTIVE.store(true, Ordering::SeqCst);
    let mut stdout = std::io::stdout();
    if let Err(e) = execute!(stdout, terminal::EnterAlternateScreen, cursor::Hide) {
        restore_terminal();
        return Err(e).context("cannot open the alternate screen");
    }
    let term = match Terminal::new(CrosstermBackend::new(std::io::stdout())) {
        Ok(t) => t,
        Err(e) => {
            restore_terminal();
            return Err(e).context("cannot draw on the terminal");
        }
    };
    let shared = Arc::new(Shared {
        model: Mutex::new(Model::default()),
        dirty: AtomicBool::new(true),
        quit: AtomicBool::new(false),
        done: Mutex::new(false),
        done_cv: Condvar::new(),
    });
    // stderr into the view; without it (no fd left?) the view still works, scribbled on.
    let reader = match capture_stderr() {
        Ok(pipe) => {
            let s = shared.clone();
            let (eof_tx, eof) = mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("swarmtrace-tui-stderr".to_owned())
                .spawn(move || {
                    for line in std::io::BufReader::new(pipe).lines() {
                        match line {
                            Ok(l) => s.update(|m| m.on_message(l)),
                            Err(_) => break,
                        }
                    }
                    let _ = eof_tx.send(());
                })
                .map(|_| eof)
                .ok()
        }
        Err(e) => {
            log::debug!("stderr stays on the terminal: {e:#}");
            None
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let ui = Ui::new(&opts);
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("swarmtrace-tui".to_owned())
        .spawn(move || {
            // Whatever happens here (a panic too), whoever waits for the terminal gets it.
            let _done = Done(&s);
            draw_loop(term, &s, ui, stop_tx);
            restore_terminal();
            // What was written on stderr meanwhile, now that it reaches the terminal again.
            if let Some(eof) = reader {
                let _ = eof.recv_timeout(Duration::from_millis(500));
            }
            let (lines, lost) = {
                let mut m = s.model();
                (std::mem::take(&mut m.messages), m.messages_lost)
            };
            let mut err = std::io::stderr().lock();
            if lost > 0 {
                let _ = writeln!(err, "swarmtrace: ({lost} earlier stderr lines not kept)");
            }
            for l in lines {
                let _ = writeln!(err, "{l}");
            }
        });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            restore_terminal();
            return Err(e).context("cannot start the live view's thread");
        }
    };
    let handle = TuiHandle {
        shared: shared.clone(),
        thread: Some(thread),
    };
    Ok((Box::new(ViewObserver { shared }), stop_rx, handle))
}

fn draw_loop<B: Backend>(
    mut term: Terminal<B>,
    shared: &Shared,
    mut ui: Ui,
    stop: tokio::sync::oneshot::Sender<()>,
) {
    let mut stop = Some(stop);
    let mut last_draw: Option<Instant> = None;
    let mut force = true;
    while !shared.quit.load(Ordering::Acquire) {
        let due = last_draw.is_none_or(|t| t.elapsed() >= FRAME);
        if force || (due && shared.dirty.load(Ordering::Acquire)) {
            shared.dirty.store(false, Ordering::Release);
            let capacity = term
                .size()
                .map(|a| table_capacity(a.width, a.height))
                .unwrap_or(0);
            let snap = shared.model().snapshot(&ui, capacity);
            // Scrolling stops at the last page.
            ui.scroll = snap.scroll;
            let drawn = term.draw(|f| render(f, &snap, &ui)).map(|_| ());
            if drawn.is_err() {
                // The terminal is gone: end the run so that it reports.
                if let Some(tx) = stop.take() {
                    let _ = tx.send(());
                }
                return;
            }
            last_draw = Some(Instant::now());
            force = false;
        }
        match event::poll(Duration::from_millis(50)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        match event::read() {
            Ok(Event::Key(k)) => match ui.key(k) {
                Action::Quit => {
                    ui.stopping = true;
                    force = true;
                    if let Some(tx) = stop.take() {
                        let _ = tx.send(());
                    }
                }
                Action::Redraw => force = true,
                Action::Nothing => {}
            },
            Ok(Event::Resize(..)) => {
                let _ = term.autoresize();
                force = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn hs(verdict: &str, client: &str, service: &str, isn: u64, reason: Option<&str>) -> Value {
        json!({
            "type": "handshake", "ts": "2026-11-27T08:01:43.123456Z", "verdict": verdict,
            "client": client, "service": service,
            "latency_us": if verdict == "answered" { json!(isn * 100) } else { Value::Null },
            "reason": reason, "netns_name": reason.map(|_| "ingress_sbox"),
            "isn": isn, "syns": 1, "first_hop": "eth0/in", "last_hop": null, "answer_hop": null,
        })
    }

    fn drop_(client: Option<&str>, isn: u64, packet: &str, reason: &str, location: &str) -> Value {
        json!({
            "type": "drop", "ts": "2026-11-27T08:01:44.000001Z", "packet": packet,
            "reason": reason, "location": location, "netns": 4026532000u64,
            "netns_name": "ingress_sbox", "ifname": "eth0",
            "src": "10.0.0.2:40000", "dst": "10.0.0.1:80", "isn": isn, "tsval": 1,
            "client": client, "service": client.map(|_| "192.0.2.1:8080"),
        })
    }

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn handshakes_add_up_per_service_and_client_ip() {
        let mut m = Model::default();
        for (i, port) in [1000, 1001, 1002].iter().enumerate() {
            m.on_handshake(&hs(
                "answered",
                &format!("198.51.100.7:{port}"),
                "192.0.2.1:8080",
                i as u64 + 1,
                None,
            ));
        }
        m.on_handshake(&hs(
            "reset",
            "198.51.100.7:1003",
            "192.0.2.1:8080",
            9,
            Some("NO_SOCKET"),
        ));
        m.on_handshake(&hs("unanswered", "[fd00::7]:5", "[fd00::1]:80", 10, None));
        let r = m.row("192.0.2.1:8080", "198.51.100.7").unwrap();
        assert_eq!((r.answered, r.reset, r.failed()), (3, 1, 1));
        assert_eq!(r.latency_p50(), Some(200));
        assert_eq!(r.latency_max, Some(300));
        assert_eq!(r.reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(r.netns.as_deref(), Some("ingress_sbox"));
        assert_eq!(m.row("[fd00::1]:80", "fd00::7").unwrap().unanswered, 1);
        assert_eq!(m.pairs(), 2);
        let v = m.verdicts();
        assert_eq!(v.len(), 2);
        assert!(v.iter().any(|(k, t)| *k == SoFar::Cause(Cause::NoListener)
            && t.count == 1
            && t.clients.contains_key("198.51.100.7")));
        assert!(v.iter().any(|(k, _)| *k == SoFar::Silent));
    }

    #[test]
    fn drops_join_their_handshake_and_late_drops_move_silent_ones() {
        let mut m = Model::default();
        // The drop names the cause (TIME_WAIT path) before the handshake is reported.
        m.on_drop(&drop_(
            Some("198.51.100.7:1000"),
            5,
            "SYN",
            "NOT_SPECIFIED",
            "tcp_timewait_state_process+0x1a",
        ));
        m.on_handshake(&hs(
            "dropped",
            "198.51.100.7:1000",
            "192.0.2.1:8080",
            5,
            Some("NOT_SPECIFIED"),
        ));
        // A silent one, then its SYN-ACK is dropped for want of a neighbour.
        m.on_handshake(&hs(
            "unanswered",
            "198.51.100.8:1000",
            "192.0.2.1:8080",
            6,
            None,
        ));
        assert!(m.verdicts().iter().any(|(k, _)| *k == SoFar::Silent));
        m.on_drop(&drop_(
            Some("198.51.100.8:1000"),
            6,
            "SYN-ACK",
            "NEIGH_FAILED",
            "neigh_invalidate+0x10",
        ));
        let v = m.verdicts();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v
            .iter()
            .any(|(k, t)| *k == SoFar::Cause(Cause::PawsTimestamps) && t.count == 1));
        assert!(v
            .iter()
            .any(|(k, t)| *k == SoFar::Cause(Cause::ReplyMisrouted)
                && t.clients.keys().collect::<Vec<_>>() == ["198.51.100.8"]));
        // A drop without a client only goes to the drops panel.
        m.on_drop(&drop_(None, 7, "SYN", "NETFILTER_DROP", "nft_do_chain+0x1"));
        assert_eq!(m.drops_seen, 3);
        let d = m.recent_drops().next().unwrap();
        assert_eq!(d.flow, "10.0.0.2:40000 -> 10.0.0.1:80");
        assert_eq!(d.time, "08:01:44");
        assert_eq!(m.verdicts().len(), 2);
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = Model::default();
        for i in 0..(MAX_ROWS as u64 + 50) {
            let c = format!("10.{}.{}.{}:1", i >> 16, (i >> 8) & 255, i & 255);
            m.on_handshake(&hs("answered", &c, "192.0.2.1:8080", i, None));
            m.on_drop(&drop_(Some(&c), i, "ACK", "NO_SOCKET", "tcp_v4_rcv+0x1"));
        }
        assert_eq!(m.pairs(), MAX_ROWS + 1);
        assert_eq!(m.row(OTHER_SERVICE, "*").unwrap().answered, 50);
        assert_eq!(m.recent_drops().count(), MAX_DROPS);
        assert!(m.pending.len() <= MAX_JOIN && m.decided.len() <= MAX_JOIN);
        // A pair's latencies are a window; the maximum is over all.
        for i in 0..(LATENCY_SAMPLES as u64 * 3) {
            m.on_handshake(&hs("answered", "10.0.0.1:1", "192.0.2.1:8080", i + 1, None));
        }
        let r = m.row("192.0.2.1:8080", "10.0.0.1").unwrap();
        assert_eq!(r.latencies.len(), LATENCY_SAMPLES);
        assert_eq!(r.latency_max, Some(LATENCY_SAMPLES as u64 * 3 * 100));
        // Joins that come and go leave no trail.
        let mut b = Bounded::new(4);
        for i in 0..1000 {
            b.insert(("c".to_owned(), i), ());
            b.remove(&("c".to_owned(), i));
        }
        assert!(b.order.len() <= 9 && b.len() == 0);
        for i in 0..10 {
            b.insert(("c".to_owned(), i), ());
        }
        assert_eq!(b.len(), 4);
        assert!(b.get(&("c".to_owned(), 9)).is_some() && b.get(&("c".to_owned(), 5)).is_none());
        for _ in 0..(MAX_MESSAGES + 3) {
            m.on_message("x".into());
        }
        assert_eq!(m.messages.len(), MAX_MESSAGES);
        assert_eq!(m.messages_lost, 3);
    }

    #[test]
    fn sort_filter_and_keys() {
        let mut m = Model::default();
        for i in 0..5 {
            m.on_handshake(&hs("answered", "198.51.100.1:1", "192.0.2.1:80", i, None));
        }
        for i in 0..3 {
            m.on_handshake(&hs(
                "reset",
                "198.51.100.2:1",
                "192.0.2.1:81",
                10 + i,
                Some("NO_SOCKET"),
            ));
        }
        let mut ui = Ui::new(&TuiOptions::default());
        let order = |ui: &Ui| {
            m.sorted(ui.sort, ui.reverse, &ui.filter)
                .iter()
                .map(|r| r.client.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ui.sort, SortKey::Failed);
        assert_eq!(order(&ui), ["198.51.100.2", "198.51.100.1"]);
        assert_eq!(ui.key(key('s')), Action::Redraw);
        assert_eq!(ui.sort, SortKey::Answered);
        assert_eq!(order(&ui), ["198.51.100.1", "198.51.100.2"]);
        ui.key(key('r'));
        assert_eq!(order(&ui), ["198.51.100.2", "198.51.100.1"]);
        for _ in 0..SortKey::ALL.len() {
            ui.key(key('s'));
        }
        assert_eq!(ui.sort, SortKey::Answered);
        // Filter: typed after '/', applied by Enter, cleared by Esc; 'q' is text meanwhile.
        ui.key(key('/'));
        for c in "no_soq".chars() {
            assert_eq!(ui.key(key(c)), Action::Redraw);
        }
        ui.key(KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE));
        ui.key(key('c'));
        assert_eq!(order(&ui).len(), 2, "not applied before Enter");
        ui.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        assert_eq!(ui.filter, "no_soc");
        assert_eq!(order(&ui), ["198.51.100.2"]);
        ui.key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        assert_eq!(order(&ui).len(), 2);
        ui.key(key('/'));
        ui.key(key('8'));
        ui.key(key('1'));
        ui.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        assert_eq!(order(&ui), ["198.51.100.2"], "matches the service");
        assert_eq!(ui.key(key('q')), Action::Quit);
        ui.key(key('/'));
        assert_eq!(
            ui.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }

    fn screen(m: &Model, ui: &Ui) -> (String, ratatui::buffer::Buffer) {
        let mut t = Terminal::new(TestBackend::new(160, 45)).unwrap();
        let snap = m.snapshot(ui, table_capacity(160, 45));
        t.draw(|f| render(f, &snap, ui)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut s = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        (s, buf)
    }

    #[test]
    fn renders_header_table_verdicts_and_drops_with_or_without_color() {
        let mut m = Model::default();
        m.on_health(&Health {
            elapsed_s: 83.2,
            drops: 4,
            lost_events: 0,
            syns: 9,
            answered: 5,
            resets: 4,
            watched: vec![("st1s:eth0".into(), true), ("eth1".into(), false)],
            tracked: 2,
        });
        for i in 0..5 {
            m.on_handshake(&hs(
                "answered",
                "198.51.100.1:1",
                "192.0.2.1:80",
                i + 1,
                None,
            ));
        }
        m.on_drop(&drop_(
            Some("198.51.100.2:1"),
            10,
            "SYN",
            "NO_SOCKET",
            "tcp_v4_rcv+0x1",
        ));
        m.on_handshake(&hs(
            "reset",
            "198.51.100.2:1",
            "192.0.2.1:81",
            10,
            Some("NO_SOCKET"),
        ));
        for color in [true, false] {
            let ui = Ui::new(&TuiOptions {
                no_color: !color,
                title: "swarmtrace on testhost".into(),
            });
            let (s, buf) = screen(&m, &ui);
            assert!(s.contains("swarmtrace on testhost"), "{s}");
            assert!(s.contains("elapsed 00:01:23"), "{s}");
            assert!(s.contains("drops 4 (exact)"), "{s}");
            assert!(s.contains("lost events 0"), "{s}");
            assert!(s.contains("st1s:eth0 attached, eth1 DETACHED"), "{s}");
            assert!(s.contains("FAILED▼"), "{s}");
            let row = s
                .lines()
                .find(|l| l.contains("192.0.2.1:81") && l.contains("198.51.100.2"))
                .unwrap_or_else(|| panic!("no row: {s}"));
            let nums: Vec<&str> = row
                .split_whitespace()
                .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
                .collect();
            assert_eq!(nums[..5], ["1", "0", "0", "1", "0"], "{row}");
            assert!(
                row.contains("NO_SOCKET") && row.contains("ingress_sbox"),
                "{row}"
            );
            let answered = s.lines().position(|l| l.contains("192.0.2.1:80 ")).unwrap();
            let failed = s.lines().position(|l| l.contains("192.0.2.1:81 ")).unwrap();
            assert!(failed < answered, "{s}");
            assert!(s.contains("verdicts so far"), "{s}");
            assert!(
                s.lines()
                    .any(|l| l.contains("no-listener") && l.contains("198.51.100.2")),
                "{s}"
            );
            assert!(
                s.contains("08:01:44 SYN     NO_SOCKET in ingress_sbox"),
                "{s}"
            );
            let colored = buf
                .content()
                .iter()
                .any(|c| c.fg != Color::Reset || c.bg != Color::Reset);
            assert_eq!(colored, color, "no_color={}", !color);
        }
    }

    #[test]
    fn scrolling_stops_at_the_last_page() {
        let mut m = Model::default();
        for i in 0..100u64 {
            m.on_handshake(&hs(
                "answered",
                &format!("10.0.0.{i}:1"),
                "192.0.2.1:80",
                i + 1,
                None,
            ));
        }
        let mut ui = Ui::new(&TuiOptions::default());
        let cap = table_capacity(160, 45);
        assert_eq!(cap, 28);
        for _ in 0..10 {
            ui.key(KeyEvent::new(KeyCode::PageDown, KeyModifiers::NONE));
        }
        let snap = m.snapshot(&ui, cap);
        assert_eq!(
            (snap.scroll, snap.rows.len(), snap.matching),
            (100 - cap, cap, 100)
        );
        ui.scroll = snap.scroll;
        ui.key(KeyEvent::new(KeyCode::Up, KeyModifiers::NONE));
        assert_eq!(m.snapshot(&ui, cap).scroll, 100 - cap - 1);
        ui.key(KeyEvent::new(KeyCode::Home, KeyModifiers::NONE));
        let (s, _) = screen(&m, &ui);
        assert!(
            s.contains("100 of 100 pair(s)") && !s.contains("from row"),
            "{s}"
        );
    }

    #[test]
    fn small_terminals_do_not_panic() {
        let mut m = Model::default();
        m.on_handshake(&hs("unanswered", "198.51.100.1:1", "192.0.2.1:80", 1, None));
        let ui = Ui::new(&TuiOptions::default());
        for (w, h) in [(1, 1), (20, 5), (80, 12), (300, 100)] {
            let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
            let snap = m.snapshot(&ui, table_capacity(w, h));
            t.draw(|f| render(f, &snap, &ui)).unwrap();
        }
    }

    #[test]
    fn names_on_screen_are_escaped_and_kept_exact_in_the_model() {
        let hostile = "\x1b]0;pwn\x07\u{9b}2J\u{202e}`$(x)`\nX";
        let mut m = Model::default();
        let mut d = drop_(
            Some("198.51.100.9:1000"),
            7,
            "SYN",
            "NO_SOCKET",
            "tcp_v4_rcv+0x1",
        );
        d["netns_name"] = json!(hostile);
        m.on_drop(&d);
        m.on_health(&Health {
            watched: vec![(format!("{hostile}:eth0"), true)],
            ..Health::default()
        });
        assert_eq!(
            m.row("192.0.2.1:8080", "198.51.100.9")
                .unwrap()
                .netns
                .as_deref(),
            Some(hostile)
        );
        let ui = Ui::new(&TuiOptions {
            title: format!("swarmtrace on {hostile}"),
            ..TuiOptions::default()
        });
        let (text, _) = screen(&m, &ui);
        let escaped = "\\x1b]0;pwn\\x07\\u{9b}2J\\u{202e}`$(x)`\\nX";
        assert!(text.contains(&format!("swarmtrace on {escaped}")), "{text}");
        assert!(text.contains(&format!("{escaped}:eth0 attached")), "{text}");
        assert!(text.contains(&format!("in {escaped}")), "{text}");
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
            "{text}"
        );
    }
}
