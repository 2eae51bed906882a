//! A kprobe on `tcp_drop(sk, skb)`, on kernels that still have it (before 5.19, when it is
//! not inlined): TCP drops there did not pass through kfree_skb with a reason. User space
//! attaches it only where the symbol exists.

use aya_ebpf::{macros::kprobe, programs::ProbeContext};
use swarmtrace_common::REASON_TCP_DROP;

use crate::drop::report_drop;

#[kprobe]
pub fn swarmtrace_tcp_drop(ctx: ProbeContext) -> u32 {
    let sk: u64 = ctx.arg(0).unwrap_or(0);
    let skb: u64 = ctx.arg(1).unwrap_or(0);
    if skb != 0 {
        // The location is tcp_drop itself; user space names it.
        let _ = report_drop(&ctx, skb, REASON_TCP_DROP, || (0, sk));
    }
    0
}
