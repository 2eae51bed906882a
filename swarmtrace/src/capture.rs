//! `swarmtrace capture`: one command during an incident that leaves everything a postmortem
//! needs in a bundle (see `bundle`), then `swarmtrace report` reads it anywhere.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::bundle::{self, BundleOut, HandshakesFile};
use crate::cli::{CaptureArgs, ReportArgs, ReportFormat, RunArgs};
use crate::run::{trace, Control, RunResult};

pub async fn capture(args: CaptureArgs) -> Result<()> {
    crate::privileges::require_tracing()?;
    // Fail on an unwritable path before anything is attached.
    let out = BundleOut::prepare(&args.output)?;
    let result = record(&args, &out).await;
    match result {
        Ok(()) => {
            let path = out.finish()?;
            eprintln!(
                "swarmtrace: bundle written to {}; read it with `swarmtrace report {}`",
                path.display(),
                path.display()
            );
            Ok(())
        }
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

async fn record(args: &CaptureArgs, out: &BundleOut) -> Result<()> {
    let run_args = RunArgs {
        port: args.port,
        client: args.client,
        duration: Some(args.duration),
        json: true,
        iface: args.iface.clone(),
        syn_timeout: args.syn_timeout,
        table_size: args.table_size,
        tc_attach: crate::tracer::TcMode::Auto,
    };
    let mut events = BufWriter::new(out.create("events.ndjson")?);
    let started = std::time::Instant::now();
    let result = trace(
        run_args,
        &mut events,
        Control {
            progress: true,
            ..Control::default()
        },
    )
    .await?;
    events.flush()?;
    events
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    write_rest(&result, out, started.elapsed().as_secs_f64())
}

fn write_rest(result: &RunResult, out: &BundleOut, secs: f64) -> Result<()> {
    let hs = HandshakesFile {
        format: bundle::FORMAT.to_owned(),
        handshakes: result.tracker.handshakes().cloned().collect(),
        hops: result.hops.entries(),
        forgotten: result.tracker.evicted,
        clock: result.clock,
    };
    out.write("handshakes.json", &serde_json::to_vec(&hs)?)?;
    out.write("handshakes.pcapng", &bundle::pcapng(&hs, &result.context)?)?;
    let system = bundle::system_json(result, secs);
    out.write("system.json", &serde_json::to_vec_pretty(&system)?)?;
    let events = handshake_lines(out)?;
    let md = crate::report::summary_markdown(&result.summary, &result.verdicts, &system, &events);
    out.write("report.md", md.as_bytes())?;
    Ok(())
}

fn handshake_lines(out: &BundleOut) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(out.dir.join("events.ndjson"))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "handshake")
        .collect())
}

/// `swarmtrace report`: renders bundles offline, without root; several bundles (nodes) are
/// also joined handshake by handshake.
pub fn report(args: ReportArgs) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let bundles = args
        .bundles
        .iter()
        .map(|p| bundle::Bundle::load(Path::new(p)))
        .collect::<Result<Vec<_>>>()?;
    for b in &bundles {
        let verdicts = b.verdicts();
        match args.format {
            ReportFormat::Json => {
                let mut sum = b.summary().clone();
                sum["verdicts"] =
                    serde_json::Value::Array(verdicts.iter().map(|v| v.to_json()).collect());
                sum["bundle"] = serde_json::Value::String(b.source.clone());
                writeln!(stdout, "{sum}")?;
            }
            ReportFormat::Markdown => {
                write!(
                    stdout,
                    "{}",
                    crate::report::summary_markdown(
                        b.summary(),
                        &verdicts,
                        &b.system,
                        &b.handshake_events()
                    )
                )?;
            }
            ReportFormat::Text => {
                writeln!(
                    stdout,
                    "bundle {}: {} (Linux {}), captured {}",
                    b.source,
                    b.system["hostname"].as_str().unwrap_or("?"),
                    b.system["kernel"]["release"].as_str().unwrap_or("?"),
                    b.system["captured_at"].as_str().unwrap_or("?")
                )
                .context("stdout")?;
                write!(
                    stdout,
                    "{}",
                    crate::report::summary_text(b.summary(), &verdicts)
                )?;
            }
        }
    }
    Ok(())
}
