//! `cargo xtask bench`: builds what the benchmarks need, runs them (criterion for user space,
//! `swarmtrace/benches/lab.rs` for everything that needs root and the kernel), prints a table
//! and writes it, with the machine's description, into BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// A short run (a few seconds per measurement): for checking, not for the record.
    #[arg(long)]
    quick: bool,
    /// Only this part: decode (criterion), cost, conn, flood or capacity. Its rows of the
    /// recorded results in BENCHMARKS.md are replaced.
    #[arg(long, value_parser = ["decode", "cost", "conn", "flood", "capacity"])]
    only: Option<String>,
    /// The soak instead: mixed traffic and drops with swarmtrace attached, memory over time.
    #[arg(long)]
    soak: bool,
    /// Length of the soak.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Print the results without writing BENCHMARKS.md.
    #[arg(long)]
    no_write: bool,
}

const BEGIN: &str = "<!-- bench-results:begin -->";
const END: &str = "<!-- bench-results:end -->";
const SOAK_BEGIN: &str = "<!-- soak-results:begin -->";
const SOAK_END: &str = "<!-- soak-results:end -->";

pub fn main(root: &Path, args: Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load eBPF programs and build network namespaces: run as root");
    }
    let mut cmd = "cargo xtask bench".to_owned();
    if args.soak {
        cmd.push_str(&format!(" --soak --minutes {}", args.minutes));
    } else {
        if args.quick {
            cmd.push_str(" --quick");
        }
        if let Some(o) = &args.only {
            cmd.push_str(&format!(" --only {o}"));
        }
    }
    let want = |s: &str| args.only.as_deref().is_none_or(|o| o == s);
    let mut rows: Vec<Value> = Vec::new();

    if !args.soak && want("decode") {
        rows.extend(criterion(root, args.quick)?);
    }
    let lab_parts = ["cost", "conn", "flood", "capacity"];
    if args.soak || lab_parts.iter().any(|p| want(p)) {
        super::cargo(root, &["build", "--release", "-p", "swarmtrace"])?;
        let floor = build_floor(root)?;
        let out = root.join("target/bench/lab.json");
        let _ = std::fs::remove_file(&out);
        let bin = root.join("target/release/swarmtrace");
        let minutes = args.minutes.to_string();
        let mut lab_args: Vec<&str> = vec![
            "bench",
            "-p",
            "swarmtrace",
            "--bench",
            "lab",
            "--",
            "--swarmtrace",
            path_str(&bin)?,
            "--floor",
            path_str(&floor)?,
            "--out",
            path_str(&out)?,
        ];
        if args.quick {
            lab_args.push("--quick");
        }
        if args.soak {
            lab_args.extend(["--soak-minutes", &minutes]);
        } else if let Some(o) = args.only.as_deref() {
            lab_args.extend(["--only", o]);
        }
        super::cargo(root, &lab_args)?;
        let lab: Value = serde_json::from_str(
            &std::fs::read_to_string(&out)
                .with_context(|| format!("the lab benchmarks wrote no {}", out.display()))?,
        )?;
        rows.extend(lab["rows"].as_array().cloned().unwrap_or_default());
    }

    let table = render(&rows, &cmd);
    println!("\n{table}");
    if args.no_write {
        println!("xtask: BENCHMARKS.md left as it is");
        return Ok(());
    }
    let md = root.join("BENCHMARKS.md");
    if let Some(only) = &args.only {
        return replace_rows(&md, only, &table);
    }
    let (begin, end) = if args.soak {
        (SOAK_BEGIN, SOAK_END)
    } else {
        (BEGIN, END)
    };
    let text = std::fs::read_to_string(&md).context("cannot read BENCHMARKS.md")?;
    let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
        bail!("BENCHMARKS.md has no {begin} ... {end} section");
    };
    let new = format!(
        "{}{begin}\n{}\n{end}{}",
        &text[..a],
        table.trim_end(),
        &text[b + end.len()..]
    );
    std::fs::write(&md, new)?;
    println!("xtask: results written into {}", md.display());
    Ok(())
}

/// `--only PART`: replaces that part's rows of the recorded results (the rows that rerun with
/// `--only PART`) and says when they were measured again.
fn replace_rows(md: &Path, only: &str, table: &str) -> Result<()> {
    let text = std::fs::read_to_string(md).context("cannot read BENCHMARKS.md")?;
    let (Some(a), Some(b)) = (text.find(BEGIN), text.find(END)) else {
        bail!("BENCHMARKS.md has no {BEGIN} ... {END} section");
    };
    let marker = format!("`cargo xtask bench --only {only}`");
    let fresh: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with('|') && l.contains(&marker))
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut placed = false;
    for line in text[a..b].lines() {
        if line.starts_with('|') && line.contains(&marker) {
            if !placed {
                out.extend(fresh.iter().map(|l| l.to_string()));
                placed = true;
            }
            continue;
        }
        if line.starts_with(&format!("Rows of `--only {only}`")) {
            continue;
        }
        out.push(line.to_owned());
    }
    if !placed {
        // A part new since the table was written: its rows go at the table's end.
        let Some(last) = out.iter().rposition(|l| l.starts_with('|')) else {
            bail!("no table in BENCHMARKS.md: run the whole `cargo xtask bench` first");
        };
        out.splice(last + 1..last + 1, fresh.iter().map(|l| l.to_string()));
    }
    // The blank line before a removed "Rows of" line goes with it.
    out.dedup_by(|a, b| a.is_empty() && b.is_empty());
    if out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.push(String::new());
    out.push(format!(
        "Rows of `--only {only}` measured again by `sudo cargo xtask bench --only {only}`: {}.",
        machine()
    ));
    let new = format!(
        "{}{}\n{}",
        &text[..a],
        out.join("\n").trim_end(),
        &text[b..]
    );
    std::fs::write(md, new)?;
    println!("xtask: rows of --only {only} replaced in {}", md.display());
    Ok(())
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// The empty programs of bench/floor-ebpf, built like the kernel crate.
fn build_floor(root: &Path) -> Result<PathBuf> {
    let target = root.join("target/bench-floor");
    super::nightly_cargo(
        &root.join("bench/floor-ebpf"),
        &[
            "build",
            "--release",
            "--target",
            super::ebpf_build::TARGET,
            "-Z",
            "build-std=core",
            "--target-dir",
            path_str(&target)?,
        ],
    )?;
    let obj = target.join(super::ebpf_build::TARGET).join("release/floor");
    if !obj.is_file() {
        bail!("the floor build succeeded but {} is missing", obj.display());
    }
    Ok(obj)
}

/// Runs the criterion benchmark of decoding and aggregation; rows from its estimates.
fn criterion(root: &Path, quick: bool) -> Result<Vec<Value>> {
    let mut a = vec!["bench", "-p", "swarmtrace", "--bench", "decode", "--"];
    if quick {
        a.extend(["--warm-up-time", "1", "--measurement-time", "2"]);
    }
    super::cargo(root, &a)?;
    let mut rows = Vec::new();
    let mean_ns = |group: &str, id: &str| -> Result<(f64, f64, f64)> {
        let est = root.join(format!("target/criterion/{group}/{id}/new/estimates.json"));
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(&est)
                .with_context(|| format!("criterion wrote no {}", est.display()))?,
        )?;
        let m = &v["mean"];
        let f = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
        Ok((
            f(&m["point_estimate"]),
            f(&m["confidence_interval"]["lower_bound"]),
            f(&m["confidence_interval"]["upper_bound"]),
        ))
    };
    for (id, what, target) in [
        ("decode", "decoding ring-buffer records", None),
        (
            "decode_name_aggregate",
            "decoding + naming + aggregation (tracker, summary)",
            Some(5e6),
        ),
    ] {
        let (mean, lo, hi) = mean_ns("events", id)?;
        // One iteration handles two events: a SYN sighting and its drop.
        let rate = 2e9 / mean;
        rows.push(json!({
            "section": "user space",
            "what": format!("{what}, one core"),
            "value": format!(
                "{:.2} M events/s ({:.0} ns per event, 95 % CI {:.0}..{:.0})",
                rate / 1e6,
                mean / 2.0,
                lo / 2.0,
                hi / 2.0
            ),
            "target": if target.is_some() { ">= 5M events/s" } else { "" },
            "met": target.map(|t| rate >= t),
            "only": "--only decode",
            "note": "criterion, swarmtrace/benches/decode.rs: a SYN sighting and its joined drop per handshake, 200 000 handshakes cycled",
        }));
    }
    for (id, what) in [("drop", "a drop"), ("handshake", "a reported handshake")] {
        let (mean, lo, hi) = mean_ns("ndjson", id)?;
        let (via_value, _, _) = mean_ns("ndjson", &format!("{id}_via_value"))?;
        rows.push(json!({
            "section": "user space",
            "what": format!("NDJSON line of {what} (`run --json`), one core"),
            "value": format!(
                "{:.0} ns per line (95 % CI {:.0}..{:.0}) = {:.2} M lines/s",
                mean,
                lo,
                hi,
                1e3 / mean
            ),
            "target": "",
            "met": null,
            "only": "--only decode",
            "note": format!(
                "criterion, swarmtrace/benches/decode.rs (group ndjson), the line serialized from a typed record; the same line through a serde_json::Value, the way every line was made before (and what observers still get): {via_value:.0} ns"
            ),
        }));
    }
    Ok(rows)
}

fn first_line_with(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// CPU model, cores, memory, kernel, date.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let model = first_line_with(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = first_line_with(&meminfo, "MemTotal")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{model}, {cores} cores, {:.1} GiB of memory, Linux {kernel}; measured {date}",
        mem_kib as f64 / 1048576.0
    )
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn render(rows: &[Value], cmd: &str) -> String {
    let mut t = String::new();
    t.push_str(&format!("Machine: {}.\n\n", machine()));
    t.push_str(&format!("Produced by `sudo {cmd}` (as root, from the repository root); each row's last column reruns that part alone.\n\n"));
    t.push_str("| section | what | measured | target | met | rerun | notes |\n");
    t.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
        let met = match r["met"].as_bool() {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "",
        };
        let rerun = format!("`cargo xtask bench {}`", s("only"));
        t.push_str(&format!(
            "| {} | {} | {} | {} | {met} | {rerun} | {} |\n",
            cell(&s("section")),
            cell(&s("what")),
            cell(&s("value")),
            cell(&s("target")),
            cell(&s("note")),
        ));
    }
    t
}
