//! `swarmtrace run`: attach, print drops as they happen, summarize on exit.

use std::io::Write;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use swarmtrace_common::Filter;

use crate::cli::{Cidr, RunArgs};
use crate::clock::WallClock;
use crate::drops::{Namer, Summary};
use crate::event::Event;
use crate::kernel::{self, kallsyms::Kallsyms, netns::NetnsNames, KernelFacts, Sources};
use crate::tracer::{Tracer, TracerOptions};

pub fn kernel_filter(port: Option<u16>, client: Option<Cidr>) -> Filter {
    let mut f = Filter {
        port: port.unwrap_or(0),
        ..Filter::default()
    };
    if let Some(c) = client {
        let (bytes, bits): ([u8; 16], u32) = match c.addr {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                f.family = 4;
                (b, c.prefix as u32)
            }
            IpAddr::V6(a) => {
                f.family = 6;
                (a.octets(), c.prefix as u32)
            }
        };
        let mut mask = [0u8; 16];
        for (i, m) in mask.iter_mut().enumerate() {
            let bit = (i as u32) * 8;
            *m = if bits >= bit + 8 {
                0xff
            } else if bits > bit {
                0xffu8 << (8 - (bits - bit))
            } else {
                0
            };
        }
        for k in 0..4 {
            let w = |b: &[u8; 16]| {
                u32::from_ne_bytes([b[k * 4], b[k * 4 + 1], b[k * 4 + 2], b[k * 4 + 3]])
            };
            f.mask[k] = w(&mask);
            f.addr[k] = w(&bytes) & f.mask[k];
        }
    }
    f
}

/// Reads what the programs need from the running kernel, with messages that say what to do.
pub fn live_facts() -> Result<(KernelFacts, Kallsyms)> {
    let tracefs = kernel::tracefs()?;
    let facts = KernelFacts::read(&Sources::live(&tracefs))?;
    if !facts.has_drop_reasons {
        log::warn!(
            "this kernel ({}) has no skb drop reasons (they came in 5.17): drops are named by code location only",
            facts.release
        );
    }
    let kallsyms = match Kallsyms::read(std::path::Path::new("/proc/kallsyms")) {
        Ok(k) => k,
        Err(e) => {
            log::warn!("{e}");
            Kallsyms::default()
        }
    };
    Ok((facts, kallsyms))
}

pub async fn run(args: RunArgs) -> Result<()> {
    crate::privileges::require_tracing()?;
    let (facts, kallsyms) = live_facts()?;
    let opts = TracerOptions {
        filter: kernel_filter(args.port, args.client),
        watch: args.iface.clone(),
        table_size: args.table_size,
    };
    let mut tracer = Tracer::attach(&facts, &opts)?;
    let mut namer = Namer {
        reasons: facts.reasons.clone(),
        kallsyms,
        netns: NetnsNames::live(),
        clock: WallClock::sample(),
    };
    let mut summary = Summary::default();
    let started = Instant::now();
    eprintln!(
        "swarmtrace: tracing dropped TCP handshake packets on Linux {}{}{}; Ctrl-C to stop",
        facts.release,
        args.port.map(|p| format!(", port {p}")).unwrap_or_default(),
        args.client
            .map(|c| format!(", client {c}"))
            .unwrap_or_default(),
    );

    let stdout = std::io::stdout();
    let mut emit = |bytes: &[u8], summary: &mut Summary| {
        let mut out = stdout.lock();
        match Event::try_from(bytes) {
            Ok(Event::Drop(raw)) => {
                let d = namer.name(raw);
                if args.client.is_some_and(|c| {
                    !c.contains(d.packet.src.ip()) && !c.contains(d.packet.dst.ip())
                }) {
                    return;
                }
                summary.add(&d);
                let line = if args.json {
                    d.to_json().to_string()
                } else {
                    d.to_line()
                };
                let _ = writeln!(out, "{line}");
            }
            Err(e) => {
                summary.decode_errors += 1;
                log::warn!("undecodable event: {e}");
            }
        }
    };

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = tracer.next_batch(|b| emit(b, &mut summary)) => r?,
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
        }
    }
    // What arrived between the last wakeup and the stop.
    tracer.drain(|b| emit(b, &mut summary));
    let totals = tracer.totals()?;
    drop(tracer);
    let secs = started.elapsed().as_secs_f64();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{}", summary.to_json(&totals, &facts.reasons, secs))?;
    } else {
        write!(out, "{}", summary.to_text(&totals, &facts.reasons, secs))?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_cidr;

    #[test]
    fn filter_masks_match_kernel_comparison() {
        let f = kernel_filter(Some(8080), Some(parse_cidr("192.168.1.0/20").unwrap()));
        assert_eq!(f.port, 8080);
        assert_eq!(f.family, 4);
        let mask_bytes: Vec<u8> = f.mask.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&mask_bytes[..4], &[255, 255, 240, 0]);
        assert_eq!(&mask_bytes[4..], &[0; 12]);
        let addr_bytes: Vec<u8> = f.addr.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&addr_bytes[..4], &[192, 168, 0, 0]);
        let f6 = kernel_filter(None, Some(parse_cidr("fd00::/64").unwrap()));
        assert_eq!(f6.family, 6);
        assert_eq!(f6.mask[2], 0);
        assert_eq!(f6.mask[0], u32::MAX);
        assert_eq!(kernel_filter(None, None).family, 0);
    }
}
