//! The conntrack table's fill, per namespace: a full table drops new connections' first
//! packets.

use super::report::{Finding, Severity};
use super::ConntrackFill;

pub(super) fn conntrack(fills: &[ConntrackFill], f: &mut Vec<Finding>) {
    if fills.is_empty() {
        f.push(
            Finding::new("conntrack", Severity::Info, "nf_conntrack is not loaded")
                .detail("No connection tracking, so no NAT here; published ports need it (Docker loads it)."),
        );
        return;
    }
    let explain = "When the table is full, the first packet of every new connection is dropped (NETFILTER_DROP, and the kernel logs \"nf_conntrack: table full, dropping packet\"): SYNs to published ports vanish while established connections carry on. The count is per namespace, the limit is the host's.";
    let fix = "sysctl -w net.netfilter.nf_conntrack_max=<larger> (and nf_conntrack_buckets); find who fills it with `conntrack -S` and `conntrack -L`; shorter nf_conntrack_tcp_timeout_time_wait and _established help.";
    let mut any = false;
    for c in fills.iter().filter(|c| c.max > 0) {
        let ratio = c.count as f64 / c.max as f64;
        let sev = if ratio > 0.9 {
            Severity::Serious
        } else if ratio > 0.7 {
            Severity::Warning
        } else {
            continue;
        };
        any = true;
        f.push(
            Finding::new(
                "conntrack",
                sev,
                format!(
                    "conntrack table {:.0}% full in {} ({} of {})",
                    ratio * 100.0,
                    c.netns,
                    c.count,
                    c.max
                ),
            )
            .detail(explain)
            .fix(fix),
        );
    }
    if !any {
        let worst = fills.iter().filter(|c| c.max > 0).max_by(|a, b| {
            (a.count as f64 / a.max as f64).total_cmp(&(b.count as f64 / b.max as f64))
        });
        let title = match worst {
            Some(c) => format!(
                "conntrack table at most {:.0}% full ({}: {} of {})",
                c.count as f64 / c.max as f64 * 100.0,
                c.netns,
                c.count,
                c.max
            ),
            None => "conntrack limit not readable".to_owned(),
        };
        f.push(Finding::new("conntrack", Severity::Ok, title));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fake::*;

    #[test]
    fn conntrack_fill() {
        let fill = |count: u64, max: u64| {
            let mut h = Fake::plain();
            h.conntrack = vec![
                ConntrackFill {
                    netns: "host".into(),
                    count: 5,
                    max,
                },
                ConntrackFill {
                    netns: "ingress_sbox".into(),
                    count,
                    max,
                },
            ];
            h.run(&[])
        };
        assert_eq!(worst(&fill(95, 100), "conntrack"), Severity::Serious);
        assert_eq!(worst(&fill(91, 100), "conntrack"), Severity::Serious);
        assert_eq!(worst(&fill(90, 100), "conntrack"), Severity::Warning);
        assert_eq!(worst(&fill(71, 100), "conntrack"), Severity::Warning);
        assert_eq!(worst(&fill(70, 100), "conntrack"), Severity::Ok);
        let r = fill(95, 100);
        let f = r.by_id("conntrack").next().unwrap();
        assert_eq!(
            f.title,
            "conntrack table 95% full in ingress_sbox (95 of 100)"
        );
        assert!(f.detail.contains("NETFILTER_DROP") && f.detail.contains("table full"));
        assert_eq!(
            fill(50, 100).by_id("conntrack").next().unwrap().title,
            "conntrack table at most 50% full (ingress_sbox: 50 of 100)"
        );
        let mut h = Fake::plain();
        h.conntrack.clear();
        assert_eq!(worst(&h.run(&[]), "conntrack"), Severity::Info);
    }
}
