//! The live view drawn with ratatui: the keys it reads, the snapshot of the model a frame
//! shows, and the drawing.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use super::model::{DropLine, Model, SoFar, SortKey, MAX_ROWS};
use super::TuiOptions;
use crate::escape;
use crate::trace::observe::Health;

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
    if let Some(n) = m
        .health
        .as_ref()
        .map(|h| h.sampled_one_in)
        .filter(|&n| n > 0)
    {
        first.push(Span::styled(
            format!("   overload: sampled 1 in {n} (rows are of the sample, drops exact)"),
            ui.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::tui::model::tests::{drop_, hs};
    use crate::trace::event::PacketKind;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
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
            ..Health::default()
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
            PacketKind::Syn,
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
        for i in 0..100u32 {
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
            PacketKind::Syn,
            "NO_SOCKET",
            "tcp_v4_rcv+0x1",
        );
        d.netns_name = Some(hostile.into());
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
