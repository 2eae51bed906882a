# ipvs-misdirected: a client that reuses its source port during a rolling update. Service drain
# (port 8086, one task) serves with busybox httpd; on SIGTERM its task stops serving at once but
# lives on for its stop grace period (as a server that stops accepting and finishes in-flight
# work does). The client fetches once from source port 41234: IPVS in ingress_sbox keeps that
# connection's entry (TIME_WAIT, 2 minutes). `docker service update --force --update-order
# start-first` then starts a new task and shuts the old one down: Docker sets the old backend's
# weight to 0 and sends SIGTERM. swarmtrace starts during the drain (the operator arriving in
# the incident), and the client fetches again from port 41234: with conn_reuse_mode=0 (Docker's
# setting) IPVS sends the SYN where the entry points, to the draining task, which refuses it.
# These guests' kernels schedule such a SYN anew when expire_nodest_conn is 1 (Docker's
# setting; tried on 6.12: the new task answered), older kernels never do: ingress_sbox's
# expire_nodest_conn is set to 0 for the run, as those kernels behave, and restored after.
# Expect ipvs-misdirected (confirmed: weight 0 at the start of the run), charged to the client,
# naming the service, the backend, its weight and conn_reuse_mode, a confirm command that runs
# as printed, and no no-listener for that client.
# Not this cause, in the same run: the new task (weight 1) stops serving too and the second
# client's request from a fresh port, which IPVS schedules there, is refused: no-listener for
# that client, not ipvs-misdirected, although a backend of the same service drains.
SBOX=/var/run/docker/netns/ingress_sbox
sb() { nsenter --net=$SBOX "$@"; }
PORT=8086
LPORT=41234
# Service drain is created with the others (run.sh), so its task starts while they converge.
docker service inspect drain >/dev/null 2>&1 \
    || { result ipvs-misdirected fail "setup: run.sh did not create service drain"; return 0; }
nodest=$(sb cat /proc/sys/net/ipv4/vs/expire_nodest_conn)
finish() {
    [ -n "$nodest" ] && sb sysctl -qw net.ipv4.vs.expire_nodest_conn="$nodest"
    docker service rm drain >/dev/null 2>&1
}
reals() { # MARK: "ADDRESS WEIGHT" per real server of the fwmark service
    sb ipvsadm -Ln -f "$1" | awk '$1 == "->" && $2 ~ /^[0-9]/ {sub(/:.*/, "", $2); print $2, $4}'
}
mark_of() {
    local hex
    hex=$(sb iptables -t mangle -S PREROUTING | grep -w -- "--dport $PORT" | grep -o -- '--set-xmark 0x[0-9a-f]*' | head -n1 | awk '{print $2}')
    [ -n "$hex" ] && echo $((hex))
}
ready() { [ "$(http_get $PORT -m 2)" = 200 ]; }
if ! wait_for 240 task_pid drain || ! wait_for 60 ready; then
    docker service ps drain --no-trunc | head -n 5
    finish
    result ipvs-misdirected fail "setup: service drain did not answer on $PORT in 300 s"
    return 0
fi
mark=$(mark_of)
old_pid=$(task_pid drain)
old_ip=$(reals "$mark" | awk '{print $1}' | head -n1)
[ -n "$mark" ] && [ -n "$old_ip" ] || { finish; result ipvs-misdirected fail "setup: no fwmark service for $PORT in ingress_sbox"; return 0; }
echo "ipvs-misdirected: port $PORT mark $mark, the task's backend $old_ip (pid $old_pid)"
first=$(http_get $PORT --local-port $LPORT)
[ "$first" = 200 ] || { finish; result ipvs-misdirected fail "setup: the first fetch from port $LPORT got $first"; return 0; }
sb ipvsadm -Lnc | grep -F "$CLIENT_IP:$LPORT" | head -n 3
step "ipvs-misdirected: first fetch done, rolling update"
docker service update --detach --force --update-order start-first drain >/dev/null
# Draining: the old backend of weight 0 and a new one of weight 1.
drained() {
    reals "$mark" | grep -qx "$old_ip 0" && reals "$mark" | awk '$2 == 1' | grep -q .
}
if ! wait_for 120 drained; then
    reals "$mark"
    docker service ps drain --no-trunc | head -n 5
    finish
    result ipvs-misdirected fail "setup: Docker did not drain the old task (weight 0) beside a new one in 120 s"
    return 0
fi
new_ip=$(reals "$mark" | awk '$2 == 1 {print $1}' | head -n1)
echo "ipvs-misdirected: draining $old_ip (weight 0), new backend $new_ip; ingress_sbox conn_reuse_mode=$(sb cat /proc/sys/net/ipv4/vs/conn_reuse_mode)"
reals "$mark"
sb sysctl -qw net.ipv4.vs.expire_nodest_conn=0
step "ipvs-misdirected: drained, starting swarmtrace"
st_start ipvs-misdirected || { finish; result ipvs-misdirected fail "swarmtrace did not start: $(tail -n3 "$OUT/ipvs-misdirected.err" | tr '\n' ' ')"; return 0; }
# The client's socket of the first fetch must be gone (a TIME_WAIT there would fail the bind).
wait_for 60 bash -c "[ -z \"\$(ip netns exec stclient ss -Htan '( sport = :$LPORT )')\" ]" \
    || client ss -tan "( sport = :$LPORT )"
reused=$(http_get $PORT --local-port $LPORT -m 4 -S 2>"$OUT/reused.err")
echo "ipvs-misdirected: the reused port's fetch: $reused $(head -c 300 "$OUT/reused.err")"
fresh=$(http_get $PORT -m 3)
# The new task stops serving as well (its httpd killed; the task lives on with weight 1).
new_pid=$(docker ps -q --filter label=com.docker.swarm.service.name=drain | while read -r id; do
    p=$(docker inspect -f '{{.State.Pid}}' "$id")
    [ "$p" != "$old_pid" ] && echo "$p"
done | head -n1)
[ -n "$new_pid" ] && pkill -TERM -P "$new_pid" -f httpd
sleep 1
refused=$(http_get $PORT --interface $CLIENT2_IP -m 3)
sleep 2
st_stop
st_show ipvs-misdirected
sb ipvsadm -Lnc | grep -F "$CLIENT_IP:$LPORT" | head -n 3
finish
[ "$reused" != 200 ] || { result ipvs-misdirected fail "the reused port was answered ($reused): IPVS did not send it to the draining task"; return 0; }
[ "$fresh" = 200 ] || { result ipvs-misdirected fail "a fresh port was not answered by the new task ($fresh)"; return 0; }
[ "$refused" != 200 ] || { result ipvs-misdirected fail "setup: the new task still answered after its httpd was killed"; return 0; }
other=$(python3 "$VM/check.py" ipvs-misdirected "$OUT/ipvs-misdirected.ndjson" --kernel "$KTAG" \
    --client "$CLIENT2_IP" --cause no-listener --absent-for ipvs-misdirected 2>&1 | tail -n1)
case "$other" in
    pass*) echo "ipvs-misdirected, not this cause: $other" ;;
    *) result ipvs-misdirected fail "not this cause (a live backend refusing): ${other#fail }"; return 0 ;;
esac
check ipvs-misdirected ipvs-misdirected --client "$CLIENT_IP" --cause ipvs-misdirected \
    --expect "service drain publishes port $PORT through the routing mesh" \
    --expect "was sent to backend $old_ip of service FWM $mark, of weight 0 at the start of the run already" \
    --expect "net.ipv4.vs.conn_reuse_mode = 0, net.ipv4.vs.expire_nodest_conn = 0" \
    --absent-for no-listener --confirm-runs
