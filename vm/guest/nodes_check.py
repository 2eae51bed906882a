"""Judges `swarmtrace join --json` over both nodes' NDJSON of a two-node scenario (run on the
host by `cargo xtask vm-test` after both guests ended); prints `pass DETAIL` or `fail DETAIL`.
nodes-fleet: the live output of `docker service logs --raw -f ... | swarmtrace join --json -`
while it still runs (node 1 asks, no summary yet). nodes-capture: `swarmtrace report --format
json` of both nodes' bundles.

Usage: nodes_check.py SCENARIO JOIN_NDJSON|REPORT_JSON"""
import json
import sys

CLIENT2 = "192.168.100.3"
CLIENT = "192.168.100.2"
NODE1 = "192.168.200.1"
NODE2 = "192.168.200.2"
# The swarm's data-path port (nodes.sh's DPP).
DPP = 7789


def overlay(recs):
    """nodes-overlay: node 2 dropped UDP DPP (the swarm's VXLAN). Node 1 names the overlay to node 2 unreachable
    for the real client; node 2 names the VXLAN datagram from node 1 dropped by its firewall;
    the join ties node 2's drop to the client's SYN on node 1."""
    verdicts = [r for r in recs if r.get("type") == "verdict"]
    by_node = lambda n: [v for v in verdicts if v.get("node") == n and v.get("cause") == "overlay-unreachable"]
    v1, v2 = by_node("node1"), by_node("node2")
    causes = [(v.get("node"), v.get("cause"), v.get("confidence")) for v in verdicts]
    if not v1:
        return f"fail node1 named no overlay-unreachable verdict (verdicts: {causes})"
    t1 = json.dumps(v1[0])
    missing = [w for w in (NODE2, "VXLAN", f"UDP {DPP}") if w not in t1]
    if missing or CLIENT not in v1[0].get("clients", []):
        return f"fail node1's overlay-unreachable verdict does not name {missing} or the client {CLIENT}: {t1[:1200]}"
    if not v2:
        return f"fail node2 named no overlay-unreachable verdict (verdicts: {causes})"
    t2 = json.dumps(v2[0])
    # The join's verdict records carry no confidence: a circumstantial verdict's explanation
    # starts with "Not confirmed".
    if NODE1 not in t2 or (v2[0].get("explanation") or "").startswith("Not confirmed"):
        return f"fail node2's overlay-unreachable verdict is not confirmed from {NODE1}: {t2[:1200]}"
    joined = [
        r
        for r in recs
        if r.get("type") == "joined"
        and (r.get("client") or "").startswith(CLIENT + ":")
        and any(n.get("node") == "node2" and n.get("drops") for n in r.get("nodes", []))
    ]
    if not joined:
        return f"fail no joined record of {CLIENT}'s SYN with a drop on node2 ({len(recs)} records)"
    drop = next(d for n in joined[-1]["nodes"] if n["node"] == "node2" for d in n.get("drops", []))
    return (
        f"pass node1: overlay-unreachable for {v1[0].get('clients')} towards {NODE2}; "
        f"node2: overlay-unreachable (confirmed) from {NODE1}, charged by the join to {v2[0].get('clients')}; "
        f"joined drop on node2: {drop.get('packet')} {drop.get('reason')} in {drop.get('netns_name')}"
    )


def main():
    scen, path = sys.argv[1], sys.argv[2]
    recs = []
    with open(path) as f:
        for line in f:
            try:
                recs.append(json.loads(line))
            except ValueError:
                print(f"fail join printed a line that is not JSON: {line[:200]!r}")
                return
    if scen == "nodes-capture":
        return capture(recs)
    if scen == "nodes-fleet":
        return fleet(recs)
    summary = [r for r in recs if r.get("type") == "join-summary"]
    if not summary:
        print("fail no join-summary: swarmtrace join did not finish")
        return
    s = summary[-1]
    if s.get("nodes") != 2:
        print(f"fail lines from {s.get('nodes')} nodes, not 2: {s}")
        return
    if scen == "nodes-healthy":
        print(f"pass {s['lines']} lines from both nodes, {s['skipped']} skipped")
        return
    if scen == "nodes-overlay":
        print(overlay(recs))
        return
    if scen != "nodes-paws":
        print(f"fail unknown scenario {scen}")
        return
    j = joined_paws(recs)
    if not j:
        print(f"fail no joined record of {CLIENT2}'s SYN with a SYN drop on node2: {len(recs)} records")
        return
    err, where = paws_path(j)
    if err:
        print(f"fail {err}")
        return
    verdicts = [r for r in recs if r.get("type") == "verdict" and r.get("node") == "node2"]
    paws = [v for v in verdicts if v.get("cause") == "paws-timestamps"]
    if not paws:
        causes = [v.get("cause") for v in verdicts]
        print(f"fail node2 named no paws-timestamps verdict (its verdicts: {causes}); joined drop {where}")
        return
    if CLIENT2 not in paws[0].get("clients", []):
        print(f"fail node2's paws verdict is charged to {paws[0].get('clients')}, not the real client {CLIENT2} (seen as {paws[0].get('seen_as')})")
        return
    print(
        f"pass {CLIENT2}:40000 seen on node1 at {j['nodes'][0].get('first_hop')}, SYN dropped on node2: {where}; "
        f"node2's paws-timestamps charged to {paws[0]['clients']} (seen there as {paws[0].get('seen_as')})"
    )


def joined_paws(recs):
    """The last joined record of client 2's SYN with a SYN drop on node2, or None."""
    joined = [
        r
        for r in recs
        if r.get("type") == "joined"
        and (r.get("client") or "").startswith(CLIENT2 + ":")
        and any(
            n.get("node") == "node2" and any(d.get("packet") == "SYN" for d in n.get("drops", []))
            for n in r.get("nodes", [])
        )
    ]
    return joined[-1] if joined else None


def paws_path(j):
    """(error or None, where node 2 dropped it) of a joined record of client 2's SYN: the real
    client named from node 1, node 2's SYN drop in the paws task."""
    if j.get("client_node") != "node1":
        return f"the real client came from {j.get('client_node')}, not node1", None
    drop = next(
        d for n in j["nodes"] if n["node"] == "node2" for d in n.get("drops", []) if d.get("packet") == "SYN"
    )
    where = f"{drop.get('reason')} at {drop.get('location')} in {drop.get('netns_name')}"
    if "paws" not in (drop.get("netns_name") or ""):
        return f"node2's drop is not in the paws task's namespace: {where}", where
    return None, where


def fleet(recs):
    if any(r.get("type") == "join-summary" for r in recs):
        print("fail join had already ended (a join-summary): not live")
        return
    j = joined_paws(recs)
    if not j:
        joined = [r for r in recs if r.get("type") == "joined"]
        print(f"fail no joined record of {CLIENT2}'s SYN with a SYN drop on node2 yet: {len(recs)} records, {len(joined)} joined")
        return
    err, where = paws_path(j)
    if err:
        print(f"fail {err}")
        return
    hop = next((n.get("first_hop") for n in j["nodes"] if n["node"] == "node1"), None)
    print(f"pass joined live: {j['client']} seen on node1 at {hop}, SYN dropped on node2: {where}")


def capture(recs):
    join = [r for r in recs if r.get("type") == "join"]
    if not join:
        print(f"fail report printed no join of the two bundles: {len(recs)} objects")
        return
    join = join[-1]
    hs = [h for h in join.get("handshakes", []) if (h.get("client") or "").startswith(CLIENT2 + ":")]
    if not hs:
        clients = [h.get("client") for h in join.get("handshakes", [])]
        print(f"fail no joined handshake of the real client {CLIENT2} (joined: {clients[:8]})")
        return
    h = hs[-1]
    if h.get("client_host") != "node1":
        print(f"fail the real client came from {h.get('client_host')}, not node1")
        return
    nodes = h.get("nodes", [])
    n1 = [n for n in nodes if n.get("host") == "node1"]
    n2 = [n for n in nodes if n.get("host") == "node2"]
    if not n1 or not n2:
        print(f"fail the handshake is not on both nodes: {[n.get('host') for n in nodes]}")
        return
    drops = [d for d in n2[0].get("drops", []) if d.get("packet") == "SYN"]
    if not drops:
        print(f"fail no SYN drop on node2 in the report's join: {n2[0]}")
        return
    where = f"{drops[0].get('reason')} at {drops[0].get('location')} in {drops[0].get('netns_name')}"
    if "paws" not in (drops[0].get("netns_name") or ""):
        print(f"fail node2's drop is not in the paws task's namespace: {where}")
        return
    paws = [v for v in join.get("verdicts", []) if v.get("host") == "node2" and v.get("cause") == "paws-timestamps"]
    if not paws:
        causes = [(v.get("host"), v.get("cause")) for v in join.get("verdicts", [])]
        print(f"fail no paws-timestamps verdict of node2 in the report's join (verdicts: {causes}); drop {where}")
        return
    if CLIENT2 not in paws[0].get("clients", []):
        print(f"fail node2's paws verdict is charged to {paws[0].get('clients')}, not the real client {CLIENT2} (seen as {paws[0].get('seen_as')})")
        return
    print(
        f"pass report n1 n2: {h['client']} came in on node1 at {n1[0].get('first_hop')}, SYN dropped on node2: {where}; "
        f"node2's paws-timestamps charged to {paws[0]['clients']} (seen there as {paws[0].get('seen_as')})"
    )


main()
