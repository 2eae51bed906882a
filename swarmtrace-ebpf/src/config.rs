//! Globals set by user space before load, and the maps shared by every hook.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf},
    EbpfContext,
};
use aya_log_ebpf::warn;
use swarmtrace_common::{
    sampled_in, stat, DropEvent, Filter, HandshakeEvent, KernelOffsets, Overload, Slot,
    TableConfig, MAX_REASONS, OVERLOAD_WINDOW_NS, RING_BYTES, VXLAN_PORT,
};

/// Offsets into kernel structures, derived by user space from the running kernel.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    tp_skbaddr: 0,
    tp_location: 0,
    tp_reason: u32::MAX,
    tp_rx_sk: u32::MAX,
    skb_head: 0,
    skb_network_header: 0,
    skb_dev: 0,
    skb_sk: 0,
    dev_ifindex: 0,
    dev_name: 0,
    dev_nd_net: 0,
    net_inum: 0,
    sk_net: 0,
    reason_consumed: u32::MAX,
    tp_layout: u32::MAX,
    skb_hdr_window: u32::MAX,
    dev_window: u32::MAX,
    dev_window_len: 0,
};

/// What the user asked to see; counters and events cover only matching packets.
#[unsafe(no_mangle)]
pub static FILTER: Filter = Filter {
    port: 0,
    family: 0,
    _pad: 0,
    addr: [0; 4],
    mask: [0; 4],
    vxlan_port: VXLAN_PORT,
    _pad2: [0; 2],
};

/// The handshake table's slot function and the overload thresholds (`TableConfig`).
#[unsafe(no_mangle)]
pub static TABLE: TableConfig = TableConfig {
    seed: 0,
    mask: 0,
    overload_per_window: 0,
    one_in: 1,
    _pad: 0,
};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Exact per-CPU totals, see `swarmtrace_common::stat`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Exact per-CPU count of dropped handshake packets by the kernel's drop reason.
#[map]
pub static DROP_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_REASONS, 0);

/// Reads one field of a global. Volatile: the value is patched into the object before load, so
/// the compiler must not fold the zeros above into the code. One field at a time keeps the
/// 512-byte stack free.
macro_rules! global {
    ($global:ident . $field:ident) => {
        $crate::config::volatile(&$crate::config::$global.$field)
    };
}
pub(crate) use global;

#[inline(always)]
pub fn volatile<T: Copy>(value: &T) -> T {
    // SAFETY: a reference to initialized, immutable data.
    unsafe { core::ptr::read_volatile(value) }
}

/// Scratch space for one event being built: too large for the BPF stack.
#[repr(C)]
pub struct Scratch {
    pub drop: DropEvent,
    pub handshake: HandshakeEvent,
    /// A handshake table slot being read or made, by TC and by the drop hooks.
    pub tc_slot: Slot,
    pub drop_slot: Slot,
    /// The first bytes at a dropped packet's network header (`packet::HEAD`).
    pub drop_head: [u8; crate::packet::HEAD],
    /// The same for a packet at TC.
    pub tc_head: [u8; crate::packet::HEAD],
    /// A dropped packet's device: the window of `struct net_device` holding its index, name
    /// and namespace (`KernelOffsets::dev_window`).
    pub drop_dev: [u8; swarmtrace_common::DEV_WINDOW as usize],
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch space.
#[inline(always)]
pub fn scratch() -> Result<&'static mut Scratch, ()> {
    let ptr = SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: a per-CPU value, so no other CPU touches it; on this CPU the programs that use
    // it do not nest: tracepoint programs are not re-entered (the kernel's bpf_prog_active
    // guard skips a nested run), TC ingress runs in softirq and TC egress with bottom halves
    // disabled, and `drop`, `drop_slot` and `handshake`, `tc_slot` are separate fields for the
    // tracepoint and TC.
    Ok(unsafe { &mut *ptr })
}

#[inline(always)]
pub fn count(map: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: a valid pointer to this CPU's slot, which no other CPU writes. On this CPU a
        // TC program (softirq) may interrupt a drop program between its load and its store;
        // the slots they count are disjoint (TC: SYNS, ANSWERED, RESETS, TC_UNREADABLE; drops:
        // DROPS, JOINED_DROPS, UNREADABLE and the reasons) but for LOST_EVENTS, so every drop
        // counter is exact.
        unsafe { *slot += 1 };
    }
}

/// Bytes waiting in the ring before an event wakes user space. Each wakeup costs the
/// sending CPU (irq_work, the reader's epoll); user space also drains the ring on its own
/// every few milliseconds (`Tracer::next_batch`), so a wakeup is only needed when the ring
/// fills faster than that.
const WAKEUP_BYTES: u64 = RING_BYTES as u64 / 16;

/// Sends an event to user space, or counts it as lost when the ring buffer is full (and
/// says so through the kernel log, once, when the first one is lost).
#[inline(always)]
pub fn output<C: EbpfContext, T: 'static>(ctx: &C, event: &T) {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<T>(event, flags as u64).is_err() {
        if STATS.get(stat::LOST_EVENTS).copied().unwrap_or(0) == 0 {
            warn!(
                ctx,
                "ring buffer full: events are being lost (totals stay exact)"
            );
        }
        count(&STATS, stat::LOST_EVENTS);
    }
}

/// Each CPU's overload state, see `keep_detail`.
#[map]
pub static OVERLOAD: PerCpuArray<Overload> = PerCpuArray::with_max_entries(1, 0);

/// Whether to send the detail event (SYN, SYN-ACK, RST or drop) of the handshake of `isn`
/// now; when not, counts it in `sampled_out` (exact). The counters of what happened are
/// counted before, whatever this says.
///
/// Overload is a state of each CPU: a CPU that wanted to send more than
/// `TABLE.overload_per_window` detail events in the last 100 ms window samples in the next,
/// 1 handshake in `TABLE.one_in` (by a seeded hash of its ISN, so a kept handshake keeps all
/// its events), and stops sampling after a window under the threshold. Per CPU, so deciding
/// costs no shared write; user space reads every CPU's state to say since when, and how
/// much was not sent. A TC program interrupting a drop program on the same CPU may count one
/// event in the wrong window: the decision is approximate, the counters are not.
#[inline(always)]
pub fn keep_detail(isn: u32, now: u64, sampled_out: u32) -> bool {
    let limit = global!(TABLE.overload_per_window) as u64;
    if limit == 0 {
        return true;
    }
    let Some(ptr) = OVERLOAD.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's value, which no other CPU writes (see the doc above for this CPU).
    let o = unsafe { &mut *ptr };
    let age = now.wrapping_sub(o.window_start);
    if age >= OVERLOAD_WINDOW_NS {
        // A window that ended long ago says nothing of the last 100 ms.
        if o.in_window > limit && age < 2 * OVERLOAD_WINDOW_NS {
            if o.sampling_since == 0 {
                o.sampling_since = now;
            }
            o.windows_sampled += 1;
        } else {
            o.sampling_since = 0;
        }
        o.window_start = now;
        o.in_window = 0;
    }
    o.in_window += 1;
    if o.sampling_since == 0 || sampled_in(isn, global!(TABLE.seed), global!(TABLE.one_in)) {
        return true;
    }
    count(&STATS, sampled_out);
    false
}
