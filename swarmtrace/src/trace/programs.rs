//! The kernel programs on the drop paths (`kfree_skb`, `tcp_drop`): which one is loaded and
//! attached on this kernel, and what the kernel said when it refused one.

use anyhow::{anyhow, Context, Result};
use aya::programs::{KProbe, RawTracePoint, TracePoint};
use aya::Ebpf;

/// Program names (the netlink filters of the classifiers carry theirs).
pub const PROG_DROP: &str = "swarmtrace_drop";
pub const PROG_DROP_RAW: &str = "swarmtrace_drop_raw";
pub const PROG_TCP_DROP: &str = "swarmtrace_tcp_drop";

/// Which program watches `kfree_skb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropHook {
    /// `raw_tracepoint/kfree_skb`: the tracepoint's arguments, no record copied.
    RawTracepoint,
    /// `tracepoint/skb/kfree_skb`: the classic record, read at the format file's offsets
    /// (plain loads where the layout is a known one).
    Tracepoint { fast_layout: bool },
}

impl DropHook {
    /// As said at start and in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            DropHook::RawTracepoint => "raw_tracepoint",
            DropHook::Tracepoint { fast_layout: true } => "tracepoint",
            DropHook::Tracepoint { fast_layout: false } => "tracepoint (general path)",
        }
    }
}

/// Loads and attaches the `kfree_skb` program: the raw tracepoint where it attaches, else the
/// classic one (also when `SWARMTRACE_GENERAL_PATHS` is set, to test it).
pub fn attach_kfree_skb(ebpf: &mut Ebpf, fast_layout: bool) -> Result<DropHook> {
    if std::env::var_os("SWARMTRACE_GENERAL_PATHS").is_none() {
        let raw = (|| -> Result<()> {
            let prog: &mut RawTracePoint = ebpf
                .program_mut(PROG_DROP_RAW)
                .ok_or_else(|| anyhow!("kernel object has no {PROG_DROP_RAW} program"))?
                .try_into()?;
            prog.load().map_err(|e| explain_load_error(e.into()))?;
            prog.attach("kfree_skb")?;
            Ok(())
        })();
        match raw {
            Ok(()) => return Ok(DropHook::RawTracepoint),
            Err(e) => log::warn!(
                "the raw tracepoint kfree_skb cannot be used ({e:#}): the classic tracepoint instead"
            ),
        }
    }
    let prog: &mut TracePoint = ebpf
        .program_mut(PROG_DROP)
        .ok_or_else(|| anyhow!("kernel object has no {PROG_DROP} program"))?
        .try_into()?;
    prog.load()
        .map_err(|e| explain_load_error(e.into()))
        .context("the kernel rejected the kfree_skb program")?;
    prog.attach("skb", "kfree_skb")
        .context("cannot attach to the skb:kfree_skb tracepoint")?;
    Ok(DropHook::Tracepoint { fast_layout })
}

pub fn attach_tcp_drop(ebpf: &mut Ebpf) -> Result<()> {
    let prog: &mut KProbe = ebpf
        .program_mut(PROG_TCP_DROP)
        .ok_or_else(|| anyhow!("no {PROG_TCP_DROP} program"))?
        .try_into()?;
    prog.load()?;
    prog.attach("tcp_drop", 0)?;
    Ok(())
}

/// The verifier's verdict instead of its whole log; what to do when not allowed.
pub fn explain_load_error(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if let Some((head, log)) = text.split_once("Verifier output:") {
        // The full verifier log is for developers; the user gets its verdict.
        log::debug!("verifier output:{log}");
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let end = lines
            .iter()
            .position(|l| l.starts_with("verification time"))
            .unwrap_or(lines.len());
        let tail = lines[end.saturating_sub(2)..end].join("\n  ");
        return anyhow!(
            "{}the verifier said:\n  {tail}",
            head.trim_end_matches(". ")
        );
    }
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        e.context("not allowed to load eBPF programs: run as root, or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN")
    } else {
        e
    }
}
