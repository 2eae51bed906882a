//! Privileged: overload is a designed state. A SYN flood past `--overload-rate` makes the
//! kernel programs send the detail events of 1 handshake in N only, while the per-CPU drop
//! counters stay exact and the run says it sampled. Run as root (`sudo cargo xtask test`).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde_json::Value;
use swarmtrace::lab::craft::{random_u32, Syn};
use swarmtrace::lab::{addr, veth, Netns};
use swarmtrace_tests::{drop_tcp_port, ns_name, require_privileged, test_port, Tracer};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
/// SYNs of the flood: bounded, a second or two of sending.
const FLOOD: u32 = 30_000;

/// Sends `n` crafted SYNs (each its own source port, ISN and TSval) from the namespace it
/// runs in to `dst`, through a raw socket; returns how many the kernel accepted.
fn flood(dst: SocketAddrV4, n: u32) -> std::io::Result<u32> {
    // SAFETY: a raw socket we own and close below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zeroed sockaddr_in is valid; filled below.
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as u16;
    to.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
    let (isn, tsval) = (random_u32(), random_u32());
    let mut sent = 0;
    for i in 0..n {
        let src = SocketAddrV4::new(CLIENT, 10_000 + (i % 50_000) as u16);
        let seg = Syn::new(
            src,
            dst,
            isn.wrapping_add(i.wrapping_mul(7919)),
            tsval.wrapping_add(i),
        )
        .segment();
        // SAFETY: a valid buffer and address of the given lengths.
        let rc = unsafe {
            libc::sendto(
                fd,
                seg.as_ptr().cast(),
                seg.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if rc == seg.len() as isize {
            sent += 1;
        }
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    Ok(sent)
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn a_flood_past_the_threshold_is_sampled_and_counted_exactly() {
    require_privileged("a_flood_past_the_threshold_is_sampled_and_counted_exactly");
    let c = Netns::create(&ns_name("kernovc")).unwrap();
    let s = Netns::create(&ns_name("kernovs")).unwrap();
    veth(&c, "eth0", &s, "eth0").unwrap();
    addr(&c, "eth0", "10.203.0.2/24").unwrap();
    addr(&s, "eth0", "10.203.0.1/24").unwrap();
    let port = test_port(11);
    drop_tcp_port(&s, port).unwrap();
    let iface = format!("{}:eth0", s.name());
    let tracer = Tracer::start(&[
        "--port",
        &port.to_string(),
        "--iface",
        &iface,
        // 200 detail events per CPU per 100 ms window: the flood passes it at once.
        "--overload-rate",
        "2000",
    ])
    .unwrap();
    assert!(
        tracer
            .stderr()
            .contains("detail sampled 1 in 16 above 2000/s per CPU"),
        "{}",
        tracer.stderr()
    );
    let dst = SocketAddrV4::new(SERVER, port);
    let sent = c.run(move || flood(dst, FLOOD)).unwrap().unwrap();
    assert!(sent > FLOOD / 2, "only {sent} SYNs sent");
    std::thread::sleep(Duration::from_millis(1500));
    let (status, out, stderr) = tracer.signal(libc::SIGINT, Vec::new()).unwrap();
    assert!(status.success(), "{stderr}");
    let summary = out.last().unwrap();
    assert_eq!(summary["type"], "summary");
    let n = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
    // Exact whatever was sampled: every SYN the kernel accepted was dropped once.
    assert_eq!(n(&summary["drops"]), u64::from(sent), "{summary}");
    assert_eq!(
        n(&summary["drops_by_reason"]["NETFILTER_DROP"]),
        u64::from(sent),
        "{summary}"
    );
    let sampled = &summary["sampled"];
    assert_eq!(sampled["one_in"], 16, "{summary}");
    assert!(
        sampled["since"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{summary}"
    );
    // What was not sent, what was lost and what arrived add up to the exact count.
    let events = n(&summary["events"]);
    let not_sent = n(&sampled["drop_events_not_sent"]);
    assert!(not_sent > 0 && events < u64::from(sent), "{summary}");
    assert_eq!(
        events + not_sent + n(&summary["lost_events"]),
        u64::from(sent),
        "{summary}"
    );
    assert!(n(&sampled["sighting_events_not_sent"]) > 0, "{summary}");
    // And the run said so, not only the summary.
    let said = format!(
        "{stderr}{}",
        out.iter().map(|v| v.to_string()).collect::<String>()
    );
    assert!(said.contains("sampled 1 in 16 since"), "{said}");
    assert_eq!(summary["kfree_skb_hook"], "raw_tracepoint", "{summary}");
}
