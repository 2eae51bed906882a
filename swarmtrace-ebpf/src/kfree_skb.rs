//! `skb:kfree_skb`: every freed packet passes here, with the kernel's drop reason (5.17+).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext};

use swarmtrace_common::TP_LAYOUTS;

use crate::{config::global, drop::report_drop};

#[tracepoint]
pub fn swarmtrace_drop(ctx: TracePointContext) -> u32 {
    let _ = try_kfree_skb(&ctx);
    0
}

/// Words 1..=4 (bytes 8..40) of the tracepoint record: plain loads at fixed offsets, which
/// the verifier allows on a tracepoint's context, unlike a helper call they cost next to
/// nothing. Always the same four loads: picking a field is then register work, so the compiler
/// cannot turn the layouts' different offsets into a computed context pointer (which the
/// verifier refuses). A record shorter than 40 bytes leaves garbage in the last word, never
/// used for it: the context is a per-CPU buffer of PERF_MAX_TRACE_SIZE bytes.
#[inline(always)]
fn record_words(ctx: &TracePointContext) -> [u64; 5] {
    let p = ctx.as_ptr() as *const u64;
    // SAFETY: fixed offsets inside the tracepoint buffer, read-only.
    unsafe {
        [
            0,
            core::ptr::read_volatile(p.add(1)),
            core::ptr::read_volatile(p.add(2)),
            core::ptr::read_volatile(p.add(3)),
            core::ptr::read_volatile(p.add(4)),
        ]
    }
}

const _: () = {
    assert!(
        TP_LAYOUTS.len() == 3,
        "skb_and_reason has one match arm per layout"
    );
    let mut i = 0;
    while i < TP_LAYOUTS.len() {
        let (skb, reason) = TP_LAYOUTS[i];
        assert!(skb % 8 == 0 && skb >= 8 && skb < 40);
        assert!(reason == u32::MAX || (reason % 4 == 0 && reason >= 8 && reason < 40));
        i += 1;
    }
};

#[inline(always)]
fn pick(words: &[u64; 5], (skb, reason): (u32, u32)) -> (u64, u32) {
    let reason = if reason == u32::MAX {
        0
    } else {
        (words[(reason / 8) as usize] >> ((reason % 8) * 8)) as u32
    };
    (words[(skb / 8) as usize], reason)
}

/// (skb, reason) from a record of a known layout (plain loads), else read field by field.
#[inline(always)]
fn skb_and_reason(ctx: &TracePointContext) -> Result<(u64, u32), ()> {
    // A constant of the frozen globals: the verifier keeps only the branch taken.
    match global!(OFFSETS.tp_layout) {
        0 => Ok(pick(&record_words(ctx), TP_LAYOUTS[0])),
        1 => Ok(pick(&record_words(ctx), TP_LAYOUTS[1])),
        2 => Ok(pick(&record_words(ctx), TP_LAYOUTS[2])),
        _ => {
            let tp_reason = global!(OFFSETS.tp_reason);
            let reason: u32 = if tp_reason == u32::MAX {
                0
            } else {
                unsafe { ctx.read_at::<u32>(tp_reason as usize) }.map_err(|_| ())?
            };
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
        let location =
            unsafe { ctx.read_at::<u64>(global!(OFFSETS.tp_location) as usize) }.unwrap_or(0);
        let tp_rx_sk = global!(OFFSETS.tp_rx_sk);
        let rx_sk = if tp_rx_sk == u32::MAX {
            0
        } else {
            unsafe { ctx.read_at::<u64>(tp_rx_sk as usize) }.unwrap_or(0)
        };
        (location, rx_sk)
    })
}
