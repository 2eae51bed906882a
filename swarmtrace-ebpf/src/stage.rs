//! Measurement by elimination (BENCHMARKS.md, "Where the kernel's time goes"): a kernel
//! object built with `SWARMTRACE_STAGE=N` returns after stage N of each program's path, so
//! that the cost bench measures what the stages before it cost. Unset (every shipped build),
//! `STAGE` is `u32::MAX`, every `stop(N)` is a constant false and the compiler removes it:
//! the shipped object is the same as without these calls.

const fn parse(s: Option<&str>) -> u32 {
    let Some(s) = s else { return u32::MAX };
    let b = s.as_bytes();
    let mut n: u32 = 0;
    let mut i = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "SWARMTRACE_STAGE is a number");
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

const STAGE: u32 = parse(option_env!("SWARMTRACE_STAGE"));

/// True when the object was built to stop after stage `n`; then it also keeps every map and
/// global user space expects in the object (a few stores: the cost of every stage's stop).
#[inline(always)]
pub fn stop(n: u32) -> bool {
    if STAGE != n {
        return false;
    }
    keep();
    true
}

#[inline(always)]
fn keep() {
    use crate::config::{volatile, DROP_REASONS, EVENTS, FILTER, OFFSETS, OVERLOAD, STATS, TABLE};
    use crate::handshake::HANDSHAKES;
    use core::hint::black_box;
    black_box(&EVENTS as *const _ as usize);
    black_box(&STATS as *const _ as usize);
    black_box(&DROP_REASONS as *const _ as usize);
    black_box(&HANDSHAKES as *const _ as usize);
    black_box(&OVERLOAD as *const _ as usize);
    black_box(volatile(&OFFSETS.tp_layout));
    black_box(volatile(&FILTER.port));
    black_box(volatile(&TABLE.seed));
}
