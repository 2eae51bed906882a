//! `swarmtrace run`: attach, follow handshakes and drops as they happen, and on exit print a
//! summary with verdicts (the live view on a terminal, lines or NDJSON otherwise).

use std::io::Write;

use anyhow::Result;

use crate::cli::RunArgs;
use crate::commands::conclude::{conclude, options};
use crate::present::output::Output;
use crate::trace::observe::{Observer, Observers};
use crate::trace::session::{trace, Control};

pub async fn run(args: RunArgs) -> Result<()> {
    use std::io::IsTerminal;
    crate::privileges::require_tracing()?;
    // Piped (NDJSON into jq, a file, a collector), a line per write would cost a system call
    // per event and lose events under a flood: buffer, and flush after every batch.
    let stdout = std::io::stdout();
    let mut out: Box<dyn Write + Send> = if stdout.is_terminal() {
        Box::new(stdout)
    } else {
        Box::new(std::io::BufWriter::with_capacity(1 << 16, stdout))
    };
    let mut metrics = None;
    if let Some(addr) = args.metrics {
        let (observer, _thread) = crate::present::metrics::serve(addr).await?;
        metrics = Some(observer);
        eprintln!("swarmtrace: serving Prometheus metrics at http://{addr}/metrics");
    }
    let mut control = Control::default();
    // On a terminal, the live view; lines otherwise (and with --json).
    let mut view = None;
    let mut view_observer = None;
    if crate::present::tui::should_use(args.json) {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let mut title = format!("swarmtrace on {}", host.trim());
        if let Some(p) = args.trace.port {
            title.push_str(&format!(", port {p}"));
        }
        if let Some(c) = args.trace.client {
            title.push_str(&format!(", client {c}"));
        }
        let (observer, stop, handle) =
            crate::present::tui::start(crate::present::tui::TuiOptions::from_env(title))?;
        view_observer = Some(observer);
        control.stop = Some(stop);
        view = Some(handle);
    }
    let mut output = Output::new(&mut *out, args.json).with_node(&args.trace.node_name());
    output.lines = view.is_none();
    output.max_per_second = args.max_lines_per_second;
    let mut observers: Vec<&mut dyn Observer> = vec![&mut output];
    observers.extend(view_observer.as_deref_mut().map(|o| o as &mut dyn Observer));
    observers.extend(metrics.as_deref_mut().map(|o| o as &mut dyn Observer));
    let result = trace(
        options(&args.trace, args.duration),
        control,
        Observers(observers),
    )
    .await;
    // The terminal back (already done if the run ended) before an error is shown.
    if let Some(view) = view {
        view.finish();
    }
    let done = conclude(result?);
    output.summary(&done.run.summary, &done.verdicts)
}
