//! Raw BTF (`/sys/kernel/btf/vmlinux`): the blob, then the members, enums and sizes swarmtrace
//! reads from it, and the kernel facts built from it with a real kernel's tracepoint layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmtrace::kernel::btf::Btf;
use swarmtrace::kernel::KernelFacts;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    let _ = format!("{btf:?}");
    let _ = btf.field("sk_buff", "dev");
    for (ty, path) in [
        ("sk_buff", "network_header"),
        ("net_device", "nd_net.net"),
        ("sock", "__sk_common.skc_net.net"),
        ("net", "ns.inum"),
        ("sk_buff", ""),
        ("sk_buff", "dev."),
    ] {
        let _ = btf.field(ty, path);
    }
    let _ = btf.enum_variants("skb_drop_reason");
    let _ = btf.struct_size("sk_buff");
    let _ = KernelFacts::from_parts("6.18.0".into(), swarmtrace_fuzz::kfree_skb_format(), &btf);
});
