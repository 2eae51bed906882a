//! Privileged: `swarmtrace join` on the streams of two real `run --json` processes that see
//! the lab's PAWS incident as two Swarm nodes would see it: "n1" watches the host's LAN side
//! and the clients' network (it knows the real client); "n2" only what leaves ingress_sbox
//! SNATed (its PAWS drop in the task is charged to 10.0.0.2 there, as on a task's node behind
//! the mesh). On one machine kfree_skb is shared, so n1 sees the drop too; what is tested is
//! that the join names the real client for n2's drop and charges n2's verdict to it.
//! Two real nodes: the VM guests. Run as root (`sudo cargo xtask test`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use swarmtrace::lab::mesh::{MeshLab, Scenario};
use swarmtrace_tests::{binary, ns_name, require_privileged, Tracer};

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|v| format!("{v}\n")).collect()
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn two_nodes_streams_join_the_real_client_to_the_drop_behind_the_snat() {
    require_privileged("two_nodes_streams_join_the_real_client_to_the_drop_behind_the_snat");
    let mut lab = MeshLab::build(&ns_name("jn")).unwrap();
    lab.apply(Scenario::Paws).unwrap();
    let host_eth0 = format!("{}:eth0", lab.host().name());
    let sbox_eth0 = format!("{}:eth0", lab.sbox().name());
    let n1 = Tracer::start(&[
        "--node",
        "n1",
        "--iface",
        &host_eth0,
        "--client",
        "10.10.0.0/24",
    ])
    .unwrap();
    let n2 = Tracer::start(&[
        "--node",
        "n2",
        "--iface",
        &sbox_eth0,
        "--client",
        "10.0.0.2/32",
    ])
    .unwrap();
    let drive = lab.drive(Scenario::Paws).unwrap();
    let (mut s1, mut s2) = (Vec::new(), Vec::new());
    n1.wait_for(&mut s1, Duration::from_millis(1500), |_| false);
    n2.wait_for(&mut s2, Duration::from_millis(10), |_| false);
    let out1 = n1.stop(s1).unwrap();
    let out2 = n2.stop(s2).unwrap();
    let victim = drive.attempts[1].client;
    eprintln!(
        "victim {victim}\nn1: {}\nn2: {}",
        ndjson(&out1),
        ndjson(&out2)
    );
    for (node, out) in [("n1", &out1), ("n2", &out2)] {
        assert!(
            out.iter().all(|l| l["node"] == node),
            "every line names its node: {out:?}"
        );
    }
    // n2 alone charges the drop to the SNAT address: only the join knows the real client.
    assert!(!ndjson(&out2).contains(&victim.ip().to_string()));

    let dir = std::env::temp_dir().join(format!("swarmtrace-join-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f2 = dir.join("n2.ndjson");
    std::fs::write(&f2, ndjson(&out2)).unwrap();
    // n1's stream on standard input, n2's from a file.
    let mut child = Command::new(binary())
        .args(["join", "--json", "-"])
        .arg(&f2)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ndjson(&out1).as_bytes())
        .unwrap();
    let got = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let recs: Vec<Value> = String::from_utf8(got.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    eprintln!("join: {recs:#?}");
    let joined = recs
        .iter()
        .find(|r| {
            r["type"] == "joined"
                && r["client"] == victim.to_string()
                && r["nodes"].as_array().unwrap().iter().any(|n| {
                    n["node"] == "n2"
                        && n["drops"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|d| d["packet"] == "SYN" && d["reason"] == "TCP_RFC7323_TW_PAWS")
                })
        })
        .unwrap_or_else(|| panic!("no joined record of {victim} with n2's PAWS drop: {recs:#?}"));
    assert_eq!(joined["client_node"], "n1");
    let verdict = recs
        .iter()
        .find(|r| r["type"] == "verdict" && r["node"] == "n2" && r["cause"] == "paws-timestamps")
        .unwrap_or_else(|| panic!("no paws verdict from n2: {recs:#?}"));
    assert_eq!(
        verdict["clients"],
        serde_json::json!([victim.ip().to_string()])
    );
    assert_eq!(verdict["seen_as"], serde_json::json!(["10.0.0.2"]));
    assert_eq!(recs.last().unwrap()["type"], "join-summary");
    drop(lab);
}
