//! The one accessor for kernel memory: every read of a kernel address (an `sk_buff`, a
//! `net_device`, a `struct net`, packet bytes behind `skb->head`) goes through `read`.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};

/// A `T` at the kernel address `addr`.
///
/// The addresses come from the kernel (a tracepoint's `skb`, a pointer read through it) plus
/// offsets user space took from the running kernel's BTF; a wrong one is still safe:
/// `bpf_probe_read_kernel` copies through the kernel's fault-handling path and returns an
/// error on an unmapped or user address instead of faulting, and the copy lands in a local
/// the verifier sized for `T`.
#[inline(always)]
pub fn read<T>(addr: u64) -> Result<T, ()> {
    // SAFETY: see above; `T` is a plain value type of the wire crate or a primitive (every bit
    // pattern valid), so whatever the kernel memory holds is a valid `T`.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.map_err(|_| ())
}

/// Fills `buf` from the kernel address `addr` (the same guarantees as `read`).
#[inline(always)]
pub fn read_buf(addr: u64, buf: &mut [u8]) -> Result<(), ()> {
    // SAFETY: as for `read`; `buf` is a writable local of the length passed.
    unsafe { bpf_probe_read_kernel_buf(addr as *const u8, buf) }.map_err(|_| ())
}
