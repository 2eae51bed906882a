//! `swarmtrace run`: attach, follow handshakes and drops as they happen, and on exit print a
//! summary with verdicts (the live view on a terminal, lines or NDJSON otherwise).

use std::io::Write;

use anyhow::Result;

use crate::cli::RunArgs;
use crate::trace::session::{trace, Control};

pub async fn run(args: RunArgs) -> Result<()> {
    use std::io::IsTerminal;
    // Piped (NDJSON into jq, a file, a collector), a line per write would cost a system call
    // per event and lose events under a flood: buffer, and flush after every batch.
    let stdout = std::io::stdout();
    let mut out: Box<dyn Write + Send> = if stdout.is_terminal() {
        Box::new(stdout)
    } else {
        Box::new(std::io::BufWriter::with_capacity(1 << 16, stdout))
    };
    let mut control = Control::default();
    // On a terminal, the live view; lines otherwise (and with --json).
    let mut view = None;
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
        control.observers.push(observer);
        control.stop = Some(stop);
        control.quiet = true;
        view = Some(handle);
    }
    let result = trace(args, &mut *out, control).await;
    // The terminal back (already done if the summary was printed) before an error is shown.
    if let Some(view) = view {
        view.finish();
    }
    result.map(|_| ())
}
