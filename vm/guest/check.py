"""Judges one swarmtrace NDJSON run against a scenario's expectations; prints one line,
`pass DETAIL` or `fail DETAIL` (the last line is what counts).

Usage: check.py SCENARIO FILE --kernel K --client IP [--min N] [--cause C] [--netns NAME]
                [--task-netns PID --task-service NAME] [--expect TEXT]... [--absent CAUSE]...
                [--absent-for CAUSE]... [--confirm-runs]

--netns NAME: a SYN drop of the client in a namespace whose name is NAME or carries it (Docker's
namespaces are named `container C (service S) [sandbox]`, `ingress_sbox`, ...).
--task-netns PID: the drops in that process's namespace are charged to the client, and with
--task-service the namespace is named after its container and service, as Docker names them."""
import argparse
import json
import os
import subprocess
import sys


def ip_of(addr):
    if addr is None:
        return None
    if addr.startswith("["):
        return addr[1:].split("]")[0]
    return addr.rsplit(":", 1)[0]


def named(name, want):
    """Whether a netns name is WANT or carries it (`... [ingress_sbox]`)."""
    return name is not None and (name == want or f"[{want}]" in name or name.startswith(want))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("file")
    ap.add_argument("--kernel", default="?")
    ap.add_argument("--client", required=True)
    ap.add_argument("--min", type=int, default=1)
    ap.add_argument("--cause")
    ap.add_argument("--netns")
    ap.add_argument("--task-netns", type=int)
    ap.add_argument("--task-service")
    # --expect TEXT (repeatable): a fact the verdict must name (service, task count, rule,
    # namespace), somewhere in its JSON (evidence, confirm, ...).
    ap.add_argument("--expect", action="append", default=[])
    # --absent CAUSE (repeatable): a cause that must not be claimed (a not-this-cause case).
    ap.add_argument("--absent", action="append", default=[])
    # --absent-for CAUSE (repeatable): a cause that must not be charged to --client (another
    # client's verdict may have it).
    ap.add_argument("--absent-for", action="append", default=[])
    # --confirm-runs: the verdict's confirm command, run as printed (bash -c), exits 0.
    ap.add_argument("--confirm-runs", action="store_true")
    a = ap.parse_args()

    objs, bad = [], 0
    with open(a.file) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                objs.append(json.loads(line))
            except ValueError:
                bad += 1
    summaries = [o for o in objs if o.get("type") == "summary"]
    drops = [o for o in objs if o.get("type") == "drop"]
    hs = [o for o in objs if o.get("type") == "handshake"]
    if not summaries:
        return f"fail no summary line in the NDJSON ({len(objs)} objects, {bad} unparsable)"
    summ = summaries[-1]
    verdicts = summ.get("verdicts") or []
    vtext = ",".join(f"{v.get('cause')}({'/'.join(v.get('clients') or [])})" for v in verdicts) or "none"
    dtext = ",".join(sorted({f"{d.get('packet')}:{d.get('reason')}@{(d.get('location') or '').split('+')[0]}"
                             f"/{d.get('netns_name')}" for d in drops})) or "none"
    mine = [h for h in hs if ip_of(h.get("client")) == a.client]
    outcomes = {}
    for h in mine:
        outcomes[h.get("verdict")] = outcomes.get(h.get("verdict"), 0) + 1
    otext = ",".join(f"{k}={v}" for k, v in sorted(outcomes.items())) or "none"
    base = f"handshakes[{otext}] drops[{dtext}] verdicts[{vtext}]"

    if a.scenario == "healthy":
        answered = [h for h in mine if h.get("verdict") == "answered"]
        lat = [h.get("latency_us") for h in answered]
        if len(answered) < a.min:
            return f"fail only {len(answered)} answered handshakes from {a.client} (want {a.min}); {base}"
        if any(l is None for l in lat):
            return f"fail answered handshakes without latency; {base}"
        if verdicts:
            return f"fail a healthy run got verdicts; {base}"
        lat.sort()
        return f"pass {len(answered)} answered, latency_us p50={lat[len(lat) // 2]} max={lat[-1]}, no verdict; {base}"

    claimed = [c for c in a.absent if any(v.get("cause") == c for v in verdicts)]
    if claimed:
        return f"fail claimed {','.join(claimed)}, which it is not; {base}"
    charged = [c for c in a.absent_for
               if any(v.get("cause") == c and a.client in (v.get("clients") or []) for v in verdicts)]
    if charged:
        return f"fail charged {','.join(charged)} to {a.client}, which it is not; {base}"
    v = next((v for v in verdicts if v.get("cause") == a.cause), None)
    if v is None:
        return f"fail no {a.cause} verdict; {base}"
    text = json.dumps(v)
    missing = [e for e in a.expect if e not in text]
    if missing:
        return f"fail the {a.cause} verdict does not name {missing}: {text[:1500]}; {base}"
    if a.client not in (v.get("clients") or []):
        return f"fail {a.cause} charged to {v.get('clients')}, not to the real client {a.client}; {base}"
    notes = []
    if a.netns:
        d = [d for d in drops if named(d.get("netns_name"), a.netns) and d.get("packet") == "SYN"
             and ip_of(d.get("client")) == a.client]
        if not d:
            return f"fail no SYN drop of {a.client} in netns {a.netns}; {base}"
        notes.append(f"dropped in {a.netns} at {d[0].get('location')} reason {d[0].get('reason')}")
    if a.task_netns:
        try:
            ino = os.stat(f"/proc/{a.task_netns}/ns/net").st_ino
        except OSError as e:
            return f"fail cannot read the task's netns: {e}; {base}"
        d = [d for d in drops if d.get("netns") == ino]
        if d:
            names = sorted({str(x.get("netns_name")) for x in d})
            notes.append(f"task netns {ino} named {names}, drop src {d[0].get('src')} charged to {d[0].get('client')}")
            if not any(ip_of(x.get("client")) == a.client for x in d):
                return f"fail drops in the task netns not charged to {a.client}; {'; '.join(notes)}; {base}"
            if a.task_service and not any(
                    n.startswith("container ") and f"(service {a.task_service})" in n for n in names):
                return f"fail the task netns is not named after its container and service {a.task_service}; {'; '.join(notes)}; {base}"
        elif a.task_service:
            return f"fail no drop in the task netns {ino} to check its name; {base}"
        counters = (v.get("evidence") or {}).get("counters") or {}
        if counters:
            notes.append("counters " + ",".join(f"{k}+{n}" for k, n in counters.items()))
    if a.expect:
        notes.append(f"names {a.expect}")
    if a.confirm_runs:
        cmd = v.get("confirm") or ""
        try:
            r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return f"fail the confirm command ran past 60 s: {cmd}; {base}"
        out = " | ".join((r.stdout + r.stderr).split("\n")[:4])[:300]
        if r.returncode != 0:
            return f"fail the confirm command exited {r.returncode}: {cmd} -> {out}; {base}"
        notes.append(f"confirm runs as printed ({cmd[:120]}... -> {out})")
    return f"pass {a.cause} for {a.client}; {'; '.join(notes)}; {base}"


if __name__ == "__main__":
    try:
        print(main())
    except Exception as e:  # a broken file is a failed check, with the reason
        print(f"fail check.py: {type(e).__name__}: {e}")
    sys.exit(0)
