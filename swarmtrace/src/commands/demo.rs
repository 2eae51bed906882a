//! `swarmtrace demo`: builds the lab (the routing mesh in network namespaces), switches a
//! fault on, drives traffic through it, traces it with the real kernel programs and prints
//! the verdicts. Everything it creates is removed at the end, on Ctrl-C and on failure too.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cli::{DemoArgs, TraceArgs};
use crate::commands::conclude::{conclude, options};
use crate::lab::mesh::{MeshLab, Scenario};
use crate::present::output::Output;
use crate::trace::observe::Observers;
use crate::trace::session::{trace, Control};

/// Runs one scenario; returns whether its verdict was the expected one.
pub async fn scenario(s: Scenario, args: &DemoArgs) -> Result<bool> {
    let out = &mut std::io::stdout();
    eprintln!("\n=== scenario {}: {}", s.name(), s.describe());
    let prefix = format!("stdemo{}", std::process::id() % 1000);
    let mut lab = MeshLab::build(&prefix).context("cannot build the lab")?;
    lab.apply(s)
        .with_context(|| format!("cannot set up scenario {}", s.name()))?;
    let watch = lab
        .watch()
        .iter()
        .map(|w| w.parse())
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let trace_args = TraceArgs::watching(watch);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    // The traffic runs on its own thread with the lab, which comes back when it is done; if
    // the thread panics, the lab is dropped (and torn down) while it unwinds.
    let driver = async move {
        if ready_rx.await.is_err() {
            return Ok::<_, anyhow::Error>(lab);
        }
        let handle = std::thread::spawn(move || {
            let drive = lab.drive(s);
            (lab, drive)
        });
        let (lab, drive) = tokio::task::spawn_blocking(move || handle.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the traffic driver panicked"))?;
        let drive = drive.with_context(|| format!("driving scenario {}", s.name()))?;
        for a in &drive.attempts {
            log::info!("client {} -> {:?} {}", a.client, a.outcome, a.note);
        }
        // Let the last handshakes time out (--syn-timeout) before stopping.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = stop_tx.send(());
        Ok(lab)
    };
    let mut lines = Output::new(out, args.json);
    let tracing = trace(
        options(&trace_args, None),
        Control {
            ready: Some(ready_tx),
            stop: Some(stop_rx),
            ..Control::default()
        },
        Observers(vec![&mut lines]),
    );
    let (traced, lab) = tokio::join!(tracing, driver);
    let lab = lab?;
    let result = conclude(traced?);
    lines.summary(&result.run.summary, &result.verdicts)?;
    drop(lab);
    let causes: Vec<&str> = result.verdicts.iter().map(|v| v.cause.id()).collect();
    let ok = match s.expected_cause() {
        None => causes.is_empty(),
        Some(want) => causes.first() == Some(&want),
    };
    eprintln!(
        "=== scenario {}: expected {}, got {} -> {}",
        s.name(),
        s.expected_cause().unwrap_or("no verdict"),
        if causes.is_empty() {
            "no verdict".to_owned()
        } else {
            causes.join(", ")
        },
        if ok { "OK" } else { "MISMATCH" }
    );
    Ok(ok)
}

pub async fn demo(args: DemoArgs) -> Result<()> {
    crate::privileges::require_tracing()?;
    let scenarios: Vec<Scenario> = match args.scenario.as_str() {
        "all" => Scenario::ALL.to_vec(),
        name => vec![Scenario::from_name(name).with_context(|| {
            format!(
                "unknown scenario `{name}`: one of {}, or all",
                Scenario::ALL.map(|s| s.name()).join(", ")
            )
        })?],
    };
    let mut failed = Vec::new();
    for s in scenarios {
        if !scenario(s, &args).await? {
            failed.push(s.name());
        }
    }
    if !failed.is_empty() {
        bail!("unexpected verdicts in: {}", failed.join(", "));
    }
    Ok(())
}
