//! The floor: an empty classifier, an empty `skb:kfree_skb` program and an empty raw
//! tracepoint on `kfree_skb`, loaded and attached
//! beside swarmtrace's programs so that the kernel's own accounting (run_time_ns / run_cnt)
//! gives the cost of running *any* program of that kind at the same hook, on the same packets.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TcContext, TracePointContext},
};

#[classifier]
pub fn floor_tc(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[tracepoint]
pub fn floor_tp(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn floor_raw_tp(_ctx: RawTracePointContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
