//! `swarmtrace capture`: one command during an incident that leaves everything a postmortem
//! needs in a bundle (see `bundle`), then `swarmtrace report` reads it anywhere.

use std::io::{BufWriter, Write};

use anyhow::{Context as _, Result};

use crate::cli::CaptureArgs;
use crate::commands::conclude::{conclude, options, Concluded};
use crate::evidence::bundle::{self, BundleOut};
use crate::evidence::format::{self, Recorded};
use crate::present::output::Output;
use crate::trace::observe::Observers;
use crate::trace::session::{trace, Control};

pub async fn capture(args: CaptureArgs) -> Result<()> {
    crate::privileges::require_tracing()?;
    // Fail on an unwritable or unsafe path before anything is attached.
    let out = BundleOut::prepare(&args.output)?;
    match record(&args, &out).await {
        Ok(()) => {
            let path = out.finish()?;
            eprintln!(
                "swarmtrace: bundle written to {}; read it with `swarmtrace report {}`",
                path.display(),
                path.display()
            );
            Ok(())
        }
        // Something was recorded: keep it, with a note of why it is partial.
        Err(e) if out.recorded_anything() => match out.keep_partial(&e) {
            Ok(path) => Err(e.context(format!(
                "the capture failed; what was recorded is kept in {} (partial: see {} in it)",
                path.display(),
                bundle::PARTIAL
            ))),
            Err(keep) => Err(e.context(format!("{keep:#}"))),
        },
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

async fn record(args: &CaptureArgs, out: &BundleOut) -> Result<()> {
    let events_path = out.path().join("events.ndjson");
    let mut events = BufWriter::new(out.create("events.ndjson")?);
    let started = std::time::Instant::now();
    let mut lines = Output::new(&mut events, true).with_node(&args.trace.node_name());
    let result = trace(
        options(&args.trace, Some(args.duration)),
        Control {
            progress: true,
            ..Control::default()
        },
        Observers(vec![&mut lines]),
    )
    .await?;
    let result = conclude(result);
    lines.summary(&result.run.summary, &result.verdicts)?;
    let flushed = events.flush().map_err(anyhow::Error::from).and_then(|()| {
        events
            .into_inner()
            .map_err(|e| anyhow::Error::from(e.into_error()))?
            .sync_all()
            .map_err(anyhow::Error::from)
    });
    flushed.with_context(|| format!("cannot write {}", events_path.display()))?;
    write_rest(&result, out, started.elapsed().as_secs_f64())
}

fn write_rest(result: &Concluded, out: &BundleOut, secs: f64) -> Result<()> {
    let run = &result.run;
    let recorded = Recorded {
        handshakes: run.tracker.handshakes().cloned().collect(),
        hops: run.hops.entries(),
        forgotten: run.tracker.evicted,
        clock: run.clock,
    };
    out.write("handshakes.json", &format::handshakes_json(&recorded)?)?;
    out.write(
        "handshakes.pcapng",
        &bundle::pcapng(&recorded, &result.context)?,
    )?;
    // Written typed, shown (report.md) from what was written.
    let system = serde_json::to_value(bundle::system_json(run, &result.context, secs))?;
    out.write("system.json", &serde_json::to_vec_pretty(&system)?)?;
    let events = handshake_lines(out)?;
    let md =
        crate::present::summary::summary_markdown(&run.summary, &result.verdicts, &system, &events);
    out.write("report.md", md.as_bytes())?;
    Ok(())
}

/// The handshake lines of the events written so far, read back line by line.
fn handshake_lines(out: &BundleOut) -> Result<Vec<serde_json::Value>> {
    use std::io::BufRead;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(out.open("events.ndjson")?).lines() {
        let line = line?;
        if !line.contains("\"handshake\"") {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["type"] == "handshake" {
                lines.push(v);
            }
        }
    }
    Ok(lines)
}
