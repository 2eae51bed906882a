//! `skb:kfree_skb`: every freed packet passes here, with the kernel's drop reason (5.17+).
//!
//! Two programs, one loaded: `swarmtrace_drop_raw`, a raw tracepoint, gets the tracepoint's
//! arguments as they are (skb, location, reason, rx_sk: plain loads of the context) and
//! spares every freed packet the copy of the classic record; `swarmtrace_drop`, the classic
//! tracepoint, reads that record, and is the fallback where the raw one cannot attach (and
//! with `SWARMTRACE_GENERAL_PATHS`). User space says at start which one runs.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};

use swarmtrace_common::TP_LAYOUTS;

use crate::{config::global, drop::report_drop};

#[tracepoint]
pub fn swarmtrace_drop(ctx: TracePointContext) -> u32 {
    let _ = try_kfree_skb(&ctx);
    0
}

/// A `T` of the tracepoint record at a fixed offset: a plain load, which the verifier allows
/// on a tracepoint's context and which costs next to nothing, unlike a helper call. Volatile,
/// so that the compiler keeps it the load it is.
#[inline(always)]
fn load<T: Copy>(ctx: &TracePointContext, off: u32) -> T {
    // SAFETY: a read-only offset inside the record, checked below against each layout; the
    // kernel also refuses at attach a program that reads past the record's end.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(off as usize) as *const T) }
}

const L0: (u32, u32) = TP_LAYOUTS[0];
const L1: (u32, u32) = TP_LAYOUTS[1];
const L2: (u32, u32) = TP_LAYOUTS[2];
const _: () = {
    assert!(
        TP_LAYOUTS.len() == 3,
        "skb_and_reason has one match arm per layout"
    );
    assert!(L0.0.is_multiple_of(8) && L1.0.is_multiple_of(8) && L2.0.is_multiple_of(8));
    assert!(L0.1 == u32::MAX);
    assert!(L1.1.is_multiple_of(4));
    // Read as the high half of the 8-aligned word that holds it.
    assert!(L2.1 % 8 == 4);
};

/// (skb, reason) from a record of a known layout (plain loads), else read field by field.
///
/// Each arm reads only inside its own record (the kernel checks the furthest offset a program
/// reads against the record's size when it attaches), and the arms' reason loads are of
/// different kinds (a 4-byte load; an 8-byte load and a shift): identical loads at different
/// offsets could be merged by the compiler into one load through a computed context pointer,
/// which the verifier refuses.
#[inline(always)]
fn skb_and_reason(ctx: &TracePointContext) -> Result<(u64, u32), ()> {
    // A constant of the frozen globals: the verifier walks only the arm taken.
    match global!(OFFSETS.tp_layout) {
        0 => Ok((load(ctx, L0.0), 0)),
        1 => Ok((load(ctx, L1.0), load::<u32>(ctx, L1.1))),
        2 => Ok((load(ctx, L2.0), (load::<u64>(ctx, L2.1 - 4) >> 32) as u32)),
        _ => {
            let tp_reason = global!(OFFSETS.tp_reason);
            let reason: u32 = if tp_reason == u32::MAX {
                0
            } else {
                // SAFETY: read_at copies with bpf_probe_read_kernel (an error, never a fault,
                // on a bad offset); the offset is the format file's, a u32 field.
                unsafe { ctx.read_at::<u32>(tp_reason as usize) }.map_err(|_| ())?
            };
            // SAFETY: as above; `skbaddr` is a pointer-sized field of every layout.
            let skb: u64 =
                unsafe { ctx.read_at(global!(OFFSETS.tp_skbaddr) as usize) }.map_err(|_| ())?;
            Ok((skb, reason))
        }
    }
}

#[inline(always)]
fn try_kfree_skb(ctx: &TracePointContext) -> Result<(), ()> {
    let (skb, reason) = skb_and_reason(ctx)?;
    // Freed after use, not dropped (the value differs between kernels; user space reads it).
    if reason == global!(OFFSETS.reason_consumed) {
        return Ok(());
    }
    report_drop(ctx, skb, reason, || {
        // SAFETY: read_at copies with bpf_probe_read_kernel from the record at the format
        // file's offset of `location`, a pointer-sized field.
        let location =
            unsafe { ctx.read_at::<u64>(global!(OFFSETS.tp_location) as usize) }.unwrap_or(0);
        let tp_rx_sk = global!(OFFSETS.tp_rx_sk);
        let rx_sk = if tp_rx_sk == u32::MAX {
            0
        } else {
            // SAFETY: as for `location`; `rx_sk` is pointer-sized (6.1+ records).
            unsafe { ctx.read_at::<u64>(tp_rx_sk as usize) }.unwrap_or(0)
        };
        (location, rx_sk)
    })
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn swarmtrace_drop_raw(ctx: RawTracePointContext) -> u32 {
    let _ = try_kfree_skb_raw(&ctx);
    0
}

/// Argument `n` of the raw tracepoint: the context is the kernel's `u64 args[]`, read with a
/// plain 8-byte load (the only access the verifier allows there). The kernel refuses at attach
/// a program that reads past the tracepoint's last argument; the reads of arguments a kernel
/// lacks are behind constants of the frozen globals, so the verifier never walks them there.
#[inline(always)]
fn arg(ctx: &RawTracePointContext, n: usize) -> u64 {
    // SAFETY: an aligned u64 inside the arguments array (see above).
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u64).add(n)) }
}

#[inline(always)]
fn try_kfree_skb_raw(ctx: &RawTracePointContext) -> Result<(), ()> {
    let skb = arg(ctx, 0);
    // `reason` (5.17+) is the third argument where the record has the field.
    let reason = if global!(OFFSETS.tp_reason) == u32::MAX {
        0
    } else {
        arg(ctx, 2) as u32
    };
    if reason == global!(OFFSETS.reason_consumed) {
        return Ok(());
    }
    report_drop(ctx, skb, reason, || {
        let rx_sk = if global!(OFFSETS.tp_rx_sk) == u32::MAX {
            0
        } else {
            arg(ctx, 3)
        };
        (arg(ctx, 1), rx_sk)
    })
}
