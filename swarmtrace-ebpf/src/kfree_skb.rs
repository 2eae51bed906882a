//! `skb:kfree_skb`: every freed packet passes here, with the kernel's drop reason (5.17+).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{config::global, drop::report_drop};

#[tracepoint]
pub fn swarmtrace_drop(ctx: TracePointContext) -> u32 {
    let _ = try_kfree_skb(&ctx);
    0
}

#[inline(always)]
fn try_kfree_skb(ctx: &TracePointContext) -> Result<(), ()> {
    let tp_reason = global!(OFFSETS.tp_reason);
    let reason: u32 = if tp_reason == u32::MAX {
        0
    } else {
        unsafe { ctx.read_at::<u32>(tp_reason as usize) }.map_err(|_| ())?
    };
    // Freed after use, not dropped (the value differs between kernels; user space reads it).
    if reason == global!(OFFSETS.reason_consumed) {
        return Ok(());
    }
    let skb: u64 = unsafe { ctx.read_at(global!(OFFSETS.tp_skbaddr) as usize) }.map_err(|_| ())?;
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
