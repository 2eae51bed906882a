//! Loads the kernel programs with the running kernel's facts, attaches them, and hands out
//! their events and exact counters. Dropping a `Tracer` detaches everything.

use std::os::fd::AsRawFd;

use anyhow::{anyhow, Context, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use swarmtrace_common::{stat, Filter, MAX_REASONS};
use tokio::io::unix::AsyncFd;

use crate::kernel::KernelFacts;

/// The kernel object built by `cargo xtask build-ebpf` (through build.rs), embedded.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SWARMTRACE_EBPF_OBJ"));

/// Exact totals read from the per-CPU counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub drops: u64,
    pub lost_events: u64,
    pub unreadable: u64,
    /// (reason value, count), non-zero only.
    pub drops_by_reason: Vec<(u32, u64)>,
}

pub struct Tracer {
    // Field order is drop order: the maps' readers go before the object that owns the links.
    events: AsyncFd<RingBuf<MapData>>,
    logger: Option<AsyncFd<EbpfLogger<&'static dyn log::Log>>>,
    stats: PerCpuArray<MapData, u64>,
    reasons: PerCpuArray<MapData, u64>,
    _ebpf: Ebpf,
}

impl Tracer {
    /// Loads and attaches. Must be called inside a tokio runtime.
    pub fn attach(facts: &KernelFacts, filter: &Filter) -> Result<Self> {
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &facts.offsets, true)
            .override_global("FILTER", filter, true)
            .load(EBPF_OBJECT)
            .map_err(|e| explain_load_error(e.into()))?;
        // The logger must exist before any program loads (it owns the log map's fd) and stay
        // alive as long as the programs do.
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(poll_fd(l).context("cannot poll the kernel log buffer")?),
            Err(e) => {
                log::debug!("kernel-side logging unavailable: {e}");
                None
            }
        };
        let prog: &mut TracePoint = ebpf
            .program_mut("kfree_skb")
            .ok_or_else(|| anyhow!("kernel object has no kfree_skb program"))?
            .try_into()?;
        prog.load()
            .map_err(|e| explain_load_error(e.into()))
            .context("the kernel rejected the kfree_skb program")?;
        prog.attach("skb", "kfree_skb")
            .context("cannot attach to the skb:kfree_skb tracepoint")?;

        let events = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| anyhow!("no EVENTS map"))?,
        )?;
        let stats = PerCpuArray::try_from(
            ebpf.take_map("STATS")
                .ok_or_else(|| anyhow!("no STATS map"))?,
        )?;
        let reasons = PerCpuArray::try_from(
            ebpf.take_map("DROP_REASONS")
                .ok_or_else(|| anyhow!("no DROP_REASONS map"))?,
        )?;
        Ok(Self {
            events: poll_fd(events).context("cannot poll the event ring buffer")?,
            logger,
            stats,
            reasons,
            _ebpf: ebpf,
        })
    }

    /// Waits until events are ready (or the kernel logged something), then hands every
    /// pending record to `f`.
    pub async fn next_batch(&mut self, mut f: impl FnMut(&[u8])) -> Result<()> {
        let logger = self.logger.as_mut();
        let ready = async {
            match logger {
                Some(l) => {
                    let mut g = l.readable_mut().await?;
                    g.get_inner_mut().flush();
                    g.clear_ready();
                    std::future::pending::<std::io::Result<()>>().await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.events.readable_mut() => {
                let mut guard = r?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    f(&item);
                }
                guard.clear_ready();
            }
            r = ready => { r?; }
        }
        Ok(())
    }

    /// Hands every record already in the ring buffer to `f`, without waiting.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        let ring = self.events.get_mut();
        while let Some(item) = ring.next() {
            f(&item);
        }
        if let Some(l) = self.logger.as_mut() {
            l.get_mut().flush();
        }
    }

    pub fn totals(&self) -> Result<Totals> {
        let sum = |map: &PerCpuArray<MapData, u64>, i: u32| -> Result<u64> {
            Ok(map.get(&i, 0)?.iter().sum())
        };
        let mut drops_by_reason = Vec::new();
        for r in 0..MAX_REASONS {
            let n = sum(&self.reasons, r)?;
            if n > 0 {
                drops_by_reason.push((r, n));
            }
        }
        Ok(Totals {
            drops: sum(&self.stats, stat::DROPS)?,
            lost_events: sum(&self.stats, stat::LOST_EVENTS)?,
            unreadable: sum(&self.stats, stat::UNREADABLE)?,
            drops_by_reason,
        })
    }

    pub fn ring_fd(&self) -> i32 {
        self.events.get_ref().as_raw_fd()
    }
}

/// Registers a map's fd with the runtime for readability.
fn poll_fd<T: AsRawFd>(inner: T) -> Result<AsyncFd<T>> {
    // SAFETY: the fd is owned by `inner`, which the AsyncFd owns and drops after deregistering.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("{e}"))
}

fn explain_load_error(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        e.context("not allowed to load eBPF programs: run as root, or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN")
    } else {
        e
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so loading does not fail
/// there. Harmless on newer kernels.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to a local struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "cannot raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
