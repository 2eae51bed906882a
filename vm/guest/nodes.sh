#!/bin/bash
# One of two guests forming a two-node Swarm (`cargo xtask vm-test --scenario nodes-...`),
# sourced by run.sh when /io/config sets NODE=1 or 2. The guests share one virtual LAN (a QEMU
# socket, eth0): node 1 (192.168.200.1) is the manager and has the clients' network (stclient
# behind lan0, as in run.sh); node 2 (192.168.200.2) is a worker and runs every task. A service
# published on the routing mesh is reached on node 1 and served on node 2, over the ingress
# overlay (VXLAN, UDP 4789). Each phase (a scenario) runs `swarmtrace run --json` on both nodes
# at once; the harness joins both nodes' NDJSON afterwards (`swarmtrace join`).
#
# The nodes coordinate over the LAN with busybox httpd: each serves /tmp/ctl on port 8000
# (node 1: `token`, `phase`; node 2: `status`). Every wait is bounded.

N1=192.168.200.1
N2=192.168.200.2
ME=192.168.200.$NODE
CTL=/tmp/ctl
mkdir -p $CTL
hostname "node$NODE"

nodes_fail() {
    local s
    for s in $SCENARIOS; do result "$s" fail "setup (node $NODE): $*"; done
    echo "failed" > $CTL/status
    echo "failed" > $CTL/phase
    # The other node reads `failed` within a second or two.
    sleep 5
    [ -n "${DOCKERD_PID:-}" ] && kill -TERM "$DOCKERD_PID" 2>/dev/null && sleep 3
    exit 0
}
# A file the other node serves; nothing (not busybox's 404 page) while it has none.
get() { curl -sf -m 3 "http://$1:8000/$2"; }
# await SECONDS IP FILE VALUE: until the other node's FILE says VALUE (or says failed).
await() {
    local end=$(( $(date +%s) + $1 )) v
    while [ "$(date +%s)" -lt "$end" ]; do
        v=$(get "$2" "$3")
        [ "$v" = "$4" ] && return 0
        [ "$v" = failed ] && return 2
        sleep 1
    done
    return 1
}

step "node $NODE: loading modules"
modprobe -a virtio_net overlay bridge br_netfilter veth vxlan ip_vs ip_vs_rr xt_ipvs iptable_nat \
    iptable_filter iptable_mangle xt_MASQUERADE xt_addrtype xt_conntrack xt_mark nf_nat \
    nf_conntrack_netlink sch_ingress cls_bpf 2>&1 | head -n 20
wait_for 20 ip link show eth0 || nodes_fail "no eth0 (virtio-net)"
ip addr add "$ME/24" dev eth0
ip link set eth0 up
busybox httpd -p "$ME:8000" -h $CTL

if [ "$NODE" = 1 ]; then
    ip netns add stclient
    ip link add lan0 type veth peer name lan0c
    ip link set lan0c netns stclient
    ip addr add $HOST_IP/24 dev lan0
    ip link set lan0 up
    client ip addr add $CLIENT_IP/24 dev lan0c
    client ip addr add $CLIENT2_IP/24 dev lan0c
    client ip link set lan0c up
    client ip link set lo up
    client ip route add default via $HOST_IP
    client sysctl -qw net.ipv4.tcp_timestamps=2
else
    ip route add default via $N1
fi
OTHER=$([ "$NODE" = 1 ] && echo $N2 || echo $N1)
if ! wait_for 60 busybox ping -c1 -W1 "$OTHER"; then
    ip -br addr; ip -s link show eth0; ip neigh
    nodes_fail "the other node ($OTHER) does not answer on the LAN in 60 s"
fi
step "node $NODE: LAN up"

dockerd --data-root /var/lib/docker --iptables=true > "$OUT/dockerd.log" 2>&1 &
DOCKERD_PID=$!
wait_for 120 docker info || nodes_fail "dockerd did not come up in 120 s"
mkdir -p /tmp/task/bin /tmp/task/www
cp /bin/busybox /tmp/task/bin/busybox
echo "hello from node $NODE" > /tmp/task/www/index.html
tar -C /tmp/task -c . | docker import - st/task:1 >/dev/null || nodes_fail "docker import failed"
step "node $NODE: dockerd ready"

HTTPD=(/bin/busybox httpd -f -p 80 -h /www)
if [ "$NODE" = 1 ]; then
    docker swarm init --advertise-addr $N1 >/dev/null || nodes_fail "docker swarm init failed"
    docker swarm join-token -q worker > $CTL/token
    wait_for 300 sh -c "docker node ls --format '{{.Hostname}} {{.Status}}' | grep -q '^node2 Ready'" \
        || nodes_fail "node 2 did not join in 300 s"
    step "node 1: node 2 joined"
    for s in web:8081 paws:8083; do
        docker service create --detach --no-resolve-image --name "${s%:*}" --replicas 1 \
            --constraint node.hostname==node2 --publish "published=${s#*:},target=80" \
            st/task:1 "${HTTPD[@]}" >/dev/null || nodes_fail "service ${s%:*}"
    done
    if ! wait_for 540 sh -c "ip netns exec stclient curl -s -o /dev/null -m 5 http://$HOST_IP:8081/ && ip netns exec stclient curl -s -o /dev/null -m 5 http://$HOST_IP:8083/"; then
        docker service ps web paws --no-trunc | head
        nodes_fail "the mesh did not answer from node 2's tasks in 540 s"
    fi
    step "node 1: the mesh answers from node 2's tasks"
    for s in $SCENARIOS; do
        step "node 1: phase $s"
        echo "trace-$s" > $CTL/phase
        await 180 $N2 status "tracing-$s"
        rc=$?
        [ $rc = 0 ] || { result "$s" fail "node 2 did not start tracing ($rc)"; continue; }
        # nodes-overlay: also eth0, where the VXLAN datagrams leave (the default-route
        # interface a real node watches by default; this guest has no default route).
        st_start "$s" --node node1 $([ "$s" = nodes-overlay ] && echo --iface eth0) \
            || { result "$s" fail "swarmtrace did not start on node 1"; continue; }
        case "$s" in
            nodes-healthy)
                ok=0
                for _ in 1 2 3 4 5; do
                    [ "$(http_get 8081)" = 200 ] && ok=$((ok + 1))
                done
                sleep 2
                ;;
            nodes-paws)
                code=$(http_get 8083 --interface "$CLIENT_IP" --local-port 40000)
                sleep 0.5
                nsenter --net=/var/run/docker/netns/ingress_sbox conntrack -D -p tcp --orig-port-src 40000 2>&1 | tail -n1
                client python3 "$VM/pawssyn.py" "$CLIENT2_IP" 40000 "$HOST_IP" 8083 100000
                sleep 3
                ;;
            nodes-overlay)
                # Node 2 drops UDP 4789 (INPUT) for this phase: the SYN and its retransmissions
                # go into the ingress overlay towards node 2 and nothing comes back.
                code=$(http_get 8081 --local-port 40100)
                sleep 2
                ;;
        esac
        st_stop
        echo "stop-$s" > $CTL/phase
        await 120 $N2 status "stopped-$s"
        st_show "$s"
        case "$s" in
            nodes-healthy)
                if [ "$ok" = 5 ]; then
                    line=$(python3 "$VM/check.py" healthy "$OUT/$s.ndjson" --kernel "$KTAG" --client "$CLIENT_IP" --min 5 2>&1 | tail -n1)
                    case "$line" in
                        pass*) result "$s" pass "node 1: ${line#pass }" ;;
                        *) result "$s" fail "node 1: ${line#fail }" ;;
                    esac
                else
                    result "$s" fail "$ok of 5 requests answered through node 2"
                fi
                ;;
            nodes-paws)
                if [ "$code" != 200 ]; then
                    result "$s" fail "client 1's request was not answered ($code)"
                elif grep '"type":"handshake"' "$OUT/$s.ndjson" | grep -q "\"client\":\"$CLIENT2_IP:40000\""; then
                    result "$s" pass "node 1 saw client 2's SYN"
                else
                    result "$s" fail "node 1 did not see client 2's SYN on lan0"
                fi
                ;;
            nodes-overlay)
                if [ "$code" = 200 ]; then
                    result "$s" fail "answered although node 2 drops UDP 4789"
                else
                    line=$(python3 "$VM/check.py" overlay "$OUT/$s.ndjson" --kernel "$KTAG" --client "$CLIENT_IP" \
                        --cause overlay-unreachable --expect "$N2" --expect "VXLAN" --expect "UDP 4789" \
                        --expect "tcpdump -ni eth0 -c 20 'udp port 4789 and host $N2'" --absent netfilter-drop 2>&1 | tail -n1)
                    case "$line" in
                        pass*) result "$s" pass "node 1: ${line#pass }" ;;
                        *) result "$s" fail "node 1: ${line#fail }" ;;
                    esac
                fi
                ;;
        esac
    done
    echo "done" > $CTL/phase
else
    token=""
    end=$(( $(date +%s) + 300 ))
    while [ -z "$token" ] && [ "$(date +%s)" -lt "$end" ]; do
        token=$(get $N1 token | tr -dc 'A-Za-z0-9-')
        case "$token" in SWMTKN-*) ;; *) token=""; sleep 2 ;; esac
        [ "$(get $N1 phase)" = failed ] && nodes_fail "node 1 failed before the swarm was formed"
    done
    [ -n "$token" ] || nodes_fail "no join token from node 1 in 300 s"
    docker swarm join --token "$token" --advertise-addr $N2 $N1:2377 >/dev/null \
        || nodes_fail "docker swarm join failed"
    step "node 2: joined the swarm"
    # Follow node 1's phases until it is done (bounded).
    end=$(( $(date +%s) + 1200 ))
    while [ "$(date +%s)" -lt "$end" ]; do
        phase=$(get $N1 phase)
        case "$phase" in
            trace-*)
                s=${phase#trace-}
                [ "$(cat $CTL/status 2>/dev/null)" = "tracing-$s" ] && { sleep 1; continue; }
                "$ST" run --json --duration 300s --node node2 --iface docker_gwbridge \
                    > "$OUT/$s.ndjson" 2> "$OUT/$s.err" &
                ST_PID=$!
                wait_for 120 grep -q 'swarmtrace: tracing' "$OUT/$s.err"
                # nodes-overlay: the overlay from node 1 blocked here for the phase.
                [ "$s" = nodes-overlay ] && iptables -I INPUT -p udp --dport 4789 -j DROP
                step "node 2: tracing $s"
                echo "tracing-$s" > $CTL/status
                ;;
            stop-*)
                s=${phase#stop-}
                [ "$(cat $CTL/status 2>/dev/null)" = "stopped-$s" ] && { sleep 1; continue; }
                st_stop
                [ "$s" = nodes-overlay ] && iptables -D INPUT -p udp --dport 4789 -j DROP
                st_show "$s"
                echo "stopped-$s" > $CTL/status
                ;;
            done | failed) break ;;
        esac
        sleep 1
    done
fi

step "node $NODE: cleaning up"
[ "$NODE" = 2 ] && sleep 5
docker swarm leave --force >/dev/null 2>&1
kill -TERM $DOCKERD_PID 2>/dev/null
for _ in $(seq 1 40); do kill -0 $DOCKERD_PID 2>/dev/null || break; sleep 0.5; done
step "node $NODE: done"
