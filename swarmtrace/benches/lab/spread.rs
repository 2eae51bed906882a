//! The flood from many sources and the replayed SYN (issue 13): whatever the number of
//! distinct addresses, swarmtrace's memory stays flat, the kernel's totals and the verdict's
//! count are exact, and the output and the summary line stay bounded.

use super::*;

/// Where the spread flood comes from (4 194 304 addresses); the lab's host drops it in its
/// raw table.
pub const SPREAD_CIDR: &str = "10.64.0.0/10";
const SPREAD_NET: u32 = 0x0a40_0000;

/// The source of SYN `n`: `n * 2654435761` is odd, so a permutation of the /10's offsets: the
/// first 4 194 304 SYNs come from distinct addresses.
pub fn source(n: u64) -> Ipv4Addr {
    Ipv4Addr::from(SPREAD_NET + ((n as u32).wrapping_mul(2_654_435_761) & 0x3f_ffff))
}

fn verdict_of<'a>(summary: &'a Value, cause: &str) -> Option<&'a Value> {
    summary["verdicts"]
        .as_array()?
        .iter()
        .find(|v| v["cause"] == cause)
}

fn tool_args(lab: &Lab, client: &str) -> Vec<String> {
    [
        "--iface".to_owned(),
        format!("{}:eth0", lab.mesh.host().name()),
        "--client".to_owned(),
        client.to_owned(),
        "--syn-timeout".to_owned(),
        "1s".to_owned(),
    ]
    .into()
}

/// SYNs from a million sources and more, as fast as the generator sends them.
pub fn spread(args: &Args, lab: &Lab, report: &mut Report) -> Result<()> {
    let total: u64 = if args.quick { 1_000_000 } else { 5_000_000 };
    eprintln!("bench: {total} SYNs from distinct sources into a DROP rule");
    let tool = Tool::start(&args.bin, &tool_args(lab, SPREAD_CIDR))?;
    let pid = tool.pid();
    let (bytes, lines) = (tool.summary_bytes.clone(), tool.stdout_lines.clone());
    let sampler = RssSampler::start(pid, Duration::from_millis(100));
    let sent = join(generate(
        lab.mesh.client(0),
        Frames::SynSpread,
        None,
        Duration::from_secs(600),
        total,
    )?)?;
    // The SYN timeout, and user space catching up with the ring.
    std::thread::sleep(Duration::from_secs(3));
    let hwm = rss(pid).map(|x| x.1).unwrap_or(0);
    let cpu = cpu_secs(pid);
    let (rss_max, _, _) = sampler.finish();
    let (summary, _) = tool.stop()?;
    let hwm = hwm.max(rss_max);
    let bytes = bytes.load(Ordering::Relaxed);
    let lines = lines.load(Ordering::Relaxed);
    let drops = summary["drops"].as_u64().unwrap_or(0);
    let exact = summary["drops_by_reason"]["NETFILTER_DROP"]
        .as_u64()
        .unwrap_or(0);
    let verdict = verdict_of(&summary, "netfilter-drop")
        .cloned()
        .unwrap_or_default();
    let count = verdict["count"].as_u64().unwrap_or(0);
    let distinct = sent.packets.min(1 << 22);
    let how = format!(
        "{} SYNs from {distinct} distinct sources of {SPREAD_CIDR} at {:.0}/s (the generator's maximum with swarmtrace attached); {} lost events, {} drop events; swarmtrace used {cpu:.1} s of CPU",
        sent.packets,
        sent.rate(),
        summary["lost_events"],
        summary["events"],
    );
    let only = "--only flood";
    eprintln!("  {how}");
    report.row(
        "user space",
        "random-source flood: resident memory (VmHWM)",
        format!("{:.1} MiB", hwm as f64 / 1024.0),
        "<= 40 MiB",
        Some(hwm <= 40 * 1024),
        only,
        how.clone(),
    );
    report.row(
        "user space",
        "random-source flood: drop totals exact (kernel counters == SYNs sent)",
        format!("{drops} of {}", sent.packets),
        "exact",
        Some(drops == sent.packets),
        only,
        String::new(),
    );
    report.row(
        "user space",
        "random-source flood: summary line",
        format!("{:.1} KiB", bytes as f64 / 1024.0),
        "<= 64 KiB",
        Some(bytes > 0 && bytes <= 64 * 1024),
        only,
        format!(
            "{lines} stdout lines in all (per-packet lines capped at 1000 a second, with left_out records)"
        ),
    );
    report.row(
        "user space",
        "random-source flood: verdict count == kernel's exact count",
        format!("{count} == {exact}"),
        "equal",
        Some(count == exact && exact > 0),
        only,
        format!(
            "of the count: {} forgotten by the tracker (counted by kind), {} from the kernel's counters (drops no event showed: sampled out under overload, or lost)",
            verdict["forgotten"], verdict["from_counters"]
        ),
    );
    report.raw.insert(
        "spread".to_owned(),
        json!({"sent": sent.packets, "rate": sent.rate(), "hwm_kib": hwm, "summary_bytes": bytes,
               "lines": lines, "cpu_s": cpu, "summary": summary}),
    );
    Ok(())
}

/// One SYN replayed, in two halves at one rate: the second half costs as much memory (none)
/// and CPU as the first.
pub fn replay(args: &Args, lab: &Lab, report: &mut Report) -> Result<()> {
    let total: u64 = if args.quick { 200_000 } else { 1_000_000 };
    let rate = 50_000;
    eprintln!("bench: one SYN replayed {total} times into a DROP rule at {rate}/s");
    let tool = Tool::start(&args.bin, &tool_args(lab, &format!("{FLOOD_SRC}/32")))?;
    let pid = tool.pid();
    let mut halves = Vec::new();
    let (rss0, _) = rss(pid).unwrap_or_default();
    let cpu0 = cpu_secs(pid);
    for _ in 0..2 {
        let sent = join(generate(
            lab.mesh.client(0),
            Frames::SynReplay,
            Some(rate),
            Duration::from_secs(600),
            total / 2,
        )?)?;
        std::thread::sleep(Duration::from_millis(1500));
        let (rss_now, hwm) = rss(pid).unwrap_or_default();
        halves.push((sent, rss_now, hwm, cpu_secs(pid)));
    }
    let (summary, _) = tool.stop()?;
    let (first, second) = (&halves[0], &halves[1]);
    let cpu1 = first.3 - cpu0;
    let cpu2 = second.3 - first.3;
    let growth = second.1.saturating_sub(first.1);
    let sent = first.0.packets + second.0.packets;
    let handshakes = summary["handshakes"]["total"].clone();
    let only = "--only flood";
    let how = format!(
        "{sent} identical SYNs ({}/s); RSS {:.1} MiB at start, {:.1} MiB after half, {:.1} MiB at the end (VmHWM {:.1} MiB); drops counted {}, handshakes {handshakes}",
        rate,
        rss0 as f64 / 1024.0,
        first.1 as f64 / 1024.0,
        second.1 as f64 / 1024.0,
        second.2 as f64 / 1024.0,
        summary["drops"]
    );
    eprintln!("  {how}");
    report.row(
        "user space",
        "one SYN replayed: memory growth over the second half",
        format!("{:.2} MiB", growth as f64 / 1024.0),
        "flat (<= 1 MiB)",
        Some(growth <= 1024),
        only,
        how,
    );
    let ratio = cpu2 / cpu1.max(1e-3);
    report.row(
        "user space",
        "one SYN replayed: CPU of the second half / the first",
        format!("{ratio:.2} ({cpu1:.2} s, {cpu2:.2} s)"),
        "linear (0.7-1.4)",
        Some((0.7..=1.4).contains(&ratio)),
        only,
        String::new(),
    );
    report.raw.insert(
        "replay".to_owned(),
        json!({"sent": sent, "cpu_s": [cpu1, cpu2], "rss_kib": [rss0, first.1, second.1], "summary": summary}),
    );
    Ok(())
}
