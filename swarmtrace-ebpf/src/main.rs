//! swarmtrace's kernel programs: one module per hook. None of them changes a packet's fate.
#![no_std]
#![no_main]

mod config;
mod drop;
mod handshake;
mod kfree_skb;
mod kmem;
mod packet;
mod stage;
mod tc;
mod tcp_drop;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects code that can reach here.
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
