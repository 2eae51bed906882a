//! What the programs are attached to and with: the kernel facts they need, the default
//! interfaces to watch, and the kernel-side filter.

use anyhow::Result;
use swarmtrace_common::Filter;

use crate::kernel::hostns::{ifindex, in_host};
use crate::kernel::routes::default_route_iface;
use crate::kernel::{self, kallsyms::Kallsyms, KernelFacts, Sources};
use crate::net::Cidr;
use crate::trace::tracer::IfaceSpec;

/// The kernel's filter: `port` and `client` as the user asked; VXLAN datagrams to
/// `vxlan_port` are looked inside.
pub fn kernel_filter(port: Option<u16>, client: Option<Cidr>, vxlan_port: u16) -> Filter {
    let mut f = Filter {
        port: port.unwrap_or(0),
        vxlan_port,
        ..Filter::default()
    };
    if let Some(c) = client {
        f.family = if c.addr.is_ipv4() { 4 } else { 6 };
        let (bytes, mask) = c.bytes_and_mask();
        for k in 0..4 {
            let w = |b: &[u8; 16]| {
                u32::from_ne_bytes([b[k * 4], b[k * 4 + 1], b[k * 4 + 2], b[k * 4 + 3]])
            };
            f.mask[k] = w(&mask);
            f.addr[k] = w(&bytes) & f.mask[k];
        }
    }
    f
}

/// Reads what the programs need from the running kernel, with messages that say what to do.
pub fn live_facts() -> Result<(KernelFacts, Kallsyms)> {
    let tracefs = kernel::tracefs()?;
    let facts = KernelFacts::read(&Sources::live(&tracefs))?;
    let kallsyms = match Kallsyms::read(std::path::Path::new("/proc/kallsyms")) {
        Ok(k) => k,
        Err(e) => {
            log::warn!("{e}");
            Kallsyms::default()
        }
    };
    Ok((facts, kallsyms))
}

/// docker_gwbridge and the default-route interface of the host's namespace (PID 1's,
/// `kernel::hostns`), those that exist: both read from a thread in it, by ioctl and
/// `/proc/thread-self/net/route` (`/sys/class/net` may show another namespace: `ip netns exec`
/// and containers mount their own).
pub fn default_watch() -> Vec<IfaceSpec> {
    let found = in_host(|| {
        let mut out = Vec::new();
        if ifindex("docker_gwbridge").is_ok() {
            out.push("docker_gwbridge".to_owned());
        }
        let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
        if let Some(i) = default_route_iface(&routes) {
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    });
    match found {
        Ok(found) => found,
        Err(e) => {
            log::warn!("cannot enter the host's network namespace to find its interfaces: {e}");
            Vec::new()
        }
    }
    .into_iter()
    .map(|ifname| IfaceSpec {
        netns: "host".to_owned(),
        ifname,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::parse_cidr;

    #[test]
    fn filter_masks_match_kernel_comparison() {
        let f = kernel_filter(
            Some(8080),
            Some(parse_cidr("192.168.1.0/20").unwrap()),
            4789,
        );
        assert_eq!(f.port, 8080);
        assert_eq!(f.family, 4);
        let mask_bytes: Vec<u8> = f.mask.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&mask_bytes[..4], &[255, 255, 240, 0]);
        assert_eq!(&mask_bytes[4..], &[0; 12]);
        let addr_bytes: Vec<u8> = f.addr.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&addr_bytes[..4], &[192, 168, 0, 0]);
        let f6 = kernel_filter(None, Some(parse_cidr("fd00::/64").unwrap()), 7789);
        assert_eq!(f6.family, 6);
        assert_eq!(f6.mask[2], 0);
        assert_eq!(f6.mask[0], u32::MAX);
        assert_eq!(kernel_filter(None, None, 4789).family, 0);
        assert_eq!(f6.vxlan_port, 7789);
    }
}
