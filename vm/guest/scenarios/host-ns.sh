# host-ns: `host` means one namespace (PID 1's) wherever swarmtrace runs. Three runs with the
# default interfaces, each against `web` (5 requests from the client) plus a SYN to a closed
# port in the host and in ingress_sbox (two named drops):
#   a. `ip netns exec sthostA swarmtrace run`: sthostA has no docker_gwbridge (the host
#      has) and a default route of its own; neither may be taken for the host's (before, the
#      bridge was looked up in /sys/class/net, which `ip netns exec` remounts for sthostA:
#      the host's docker_gwbridge went unwatched);
#   b. the image, `docker run --network host --pid host --privileged`;
#   c. the image, `docker run --pid host --privileged` (the container's own network namespace).
# Each must watch the host's docker_gwbridge and default-route interface, see the 5 handshakes
# answered, and name the two drops' namespaces as the host names them; a and c must say at
# start that they run outside the host's namespace, b must not. Then d: `docker run
# --privileged` alone (the container's own PID namespace) must say that /proc is not the
# machine's and to use `--pid host`.
IMG=$IO/dist/swarmtrace-image.tar
[ -f "$IMG" ] || { result host-ns fail "no image on the io disk"; return 0; }
t0=$(date +%s)
docker load -q -i "$IMG" >/dev/null || { result host-ns fail "docker load failed"; return 0; }

# The host's defaults, as `ip` sees them from the host.
want=""
ip link show dev docker_gwbridge >/dev/null 2>&1 && want="docker_gwbridge"
defdev=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
[ -n "$defdev" ] && want="${want:+$want,}$defdev"

ip netns add sthostA
ip -n sthostA link set lo up
ip -n sthostA link add sthostAd type veth peer name sthostAp
ip -n sthostA addr add 10.231.0.1/24 dev sthostAd
ip -n sthostA link set sthostAd up
ip -n sthostA link set sthostAp up
ip -n sthostA route add default via 10.231.0.2

SBOX=/var/run/docker/netns/ingress_sbox
# Requests through the mesh, then a SYN to a closed port (9) on loopback in the host and in
# ingress_sbox: each is answered by a RST and dropped (NO_SOCKET) there.
traffic() {
    local i ok=0
    for i in 1 2 3 4 5; do
        [ "$(http_get 8081)" = 200 ] && ok=$((ok + 1))
    done
    curl -s -m 2 http://127.0.0.1:9/ >/dev/null 2>&1
    nsenter --net=$SBOX curl -s -m 2 http://127.0.0.1:9/ >/dev/null 2>&1
    sleep 3
    echo "$ok"
}
DOCKER_ARGS=(--privileged -v /var/run/docker/netns:/var/run/docker/netns:ro
    -v /run/netns:/run/netns:ro -v /var/run/docker.sock:/var/run/docker.sock:ro)
# in_docker NAME ARGS...: the image traces in a container; NAME.ndjson and NAME.err as for
# st_start. Prints the number of requests answered.
in_docker() {
    local name=$1 c=sthostns-$1
    shift
    docker rm -f "$c" >/dev/null 2>&1
    docker run -d --name "$c" "${DOCKER_ARGS[@]}" "$@" swarmtrace:latest run --json --duration 300s >/dev/null \
        || { echo "docker run failed" > "$OUT/$name.err"; echo 0; return; }
    if wait_for 120 sh -c "docker logs $c 2>&1 | grep -q 'swarmtrace: tracing'"; then
        step "swarmtrace traces ($name)" >&2
        traffic
    else
        echo 0
    fi
    docker stop -t 30 "$c" >/dev/null 2>&1
    docker logs "$c" > "$OUT/$name.ndjson" 2> "$OUT/$name.err"
    docker rm -f "$c" >/dev/null 2>&1
}

# a: ip netns exec, with the default interfaces.
ip netns exec sthostA "$ST" run --json --duration 300s > "$OUT/host-ns-a.ndjson" 2> "$OUT/host-ns-a.err" &
ST_PID=$!
if wait_for 120 grep -q 'swarmtrace: tracing' "$OUT/host-ns-a.err"; then
    ok_a=$(traffic)
else
    ok_a=0
fi
st_stop
ok_b=$(in_docker host-ns-b --network host --pid host)
ok_c=$(in_docker host-ns-c --pid host)
# d: the container's own PID namespace: said at start, with what to do.
docker rm -f sthostns-d >/dev/null 2>&1
docker run -d --name sthostns-d "${DOCKER_ARGS[@]}" swarmtrace:latest run --json --duration 300s >/dev/null
wait_for 60 sh -c "docker logs sthostns-d 2>&1 | grep -q 'swarmtrace: tracing\|swarmtrace: error'"
docker logs sthostns-d > /dev/null 2> "$OUT/host-ns-d.err"
docker rm -f sthostns-d >/dev/null 2>&1
ip netns del sthostA
for r in a b c d; do
    echo "--- swarmtrace stderr (host-ns-$r)"
    head -c 2000 "$OUT/host-ns-$r.err" | sed 's/^/  | /'
done

detail=$(python3 - "$OUT" "$CLIENT_IP" "$want" "$ok_a" "$ok_b" "$ok_c" "$SBOX" <<'EOF'
import json, os, sys
out, client, want, oks, sbox = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:7], sys.argv[7]
host_ino = os.stat("/proc/1/ns/net").st_ino
sbox_ino = os.stat(sbox).st_ino
fails, notes, names = [], [], {}
for run, ok in zip("abc", oks):
    err = open(f"{out}/host-ns-{run}.err").read()
    objs = []
    for line in open(f"{out}/host-ns-{run}.ndjson"):
        try:
            objs.append(json.loads(line))
        except ValueError:
            pass
    summ = [o for o in objs if o.get("type") == "summary"]
    if not summ:
        fails.append(f"{run}: no summary ({err.strip().splitlines()[-1:] or 'no stderr'})")
        continue
    watched = summ[-1].get("watched")
    answered = [h for h in objs if h.get("type") == "handshake" and (h.get("client") or "").startswith(client + ":")
                and h.get("verdict") == "answered"]
    drops = {d.get("netns"): d.get("netns_name") for d in objs
             if d.get("type") == "drop" and (d.get("dst") or "").endswith(":9")}
    names[run] = (drops.get(host_ino), drops.get(sbox_ino))
    said = "not the host's" in err
    notes.append(f"{run}: {ok}/5 requests, {len(answered)} answered, watched {','.join(watched or [])}, "
                 f"host drop named {names[run][0]}, ingress_sbox drop named {names[run][1]}, notice {'yes' if said else 'no'}")
    if watched != want:
        fails.append(f"{run}: watched {watched}, not the host's {want}")
    if ok != "5" or len(answered) < 5:
        fails.append(f"{run}: {ok}/5 requests, {len(answered)} answered handshakes of {client}")
    if names[run][0] != "host":
        fails.append(f"{run}: the host's drop (netns {host_ino}) named {names[run][0]}")
    if not names[run][1] or "ingress_sbox" not in names[run][1]:
        fails.append(f"{run}: ingress_sbox's drop (netns {sbox_ino}) named {names[run][1]}")
    if said != (run != "b"):
        fails.append(f"{run}: the start notice {'given' if said else 'missing'}")
if len(set(names.values())) > 1:
    fails.append(f"the runs name the namespaces differently: {names}")
d = open(f"{out}/host-ns-d.err").read()
notes.append(f"d: notice {'yes' if '--pid host' in d else 'no'}")
if "--pid host" not in d:
    fails.append("d: no `--pid host` notice in a container with its own PID namespace")
print(("fail " + "; ".join(fails) + " | " if fails else "pass ") + "; ".join(notes))
EOF
)
t=$(( $(date +%s) - t0 ))
case "$detail" in
    pass*) result host-ns pass "${detail#pass } (${t}s)" ;;
    *) result host-ns fail "${detail#fail } (${t}s)" ;;
esac
