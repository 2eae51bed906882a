#!/bin/bash
# The guest side of `cargo xtask vm-test`, run by /sbin/st-init from the io disk (/io):
# capture the kernel fixtures, bring up Docker with a one-node swarm and services published on
# the routing mesh, run the chosen scenarios under swarmtrace, and print one
# `SWARMTRACE-RESULT kernel=K scenario=S status=pass|fail|skip detail=...` line per scenario.
# /io/config sets KTAG (e.g. 6.1), SCENARIOS (space-separated) and FIXTURES (1 to capture).
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
IO=/io
VM=$IO/vm
OUT=$IO/out
ST=$IO/bin/swarmtrace
mkdir -p "$OUT"
# shellcheck source=/dev/null
. "$IO/config"
. "$VM/lib.sh"

step "guest up: $(uname -r)"
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /sys/fs/cgroup /sys/fs/bpf /run/netns
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
hostname stguest
ip link set lo up
# What udev would make: without /dev/fd, runc's fexecve of its memfd copy fails on 5.10
# ("could not ensure we are a cloned binary: No such file or directory", then "read init-p:
# connection reset by peer"), and no container starts.
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr

echo "SWARMTRACE-KERNEL kernel=$KTAG release=$(uname -r)"

# Which block device each of / and /io is (the kernel finds the root by its partition's
# PARTUUID; a wrong disk mounted as root would have stopped before this script).
block_of() {
    local mm
    mm=$(awk -v m="$1" '$5 == m { print $3; exit }' /proc/self/mountinfo)
    [ -n "$mm" ] && basename "$(readlink -f "/sys/dev/block/$mm")"
}
ROOTDEV=$(block_of /)
IODEV=$(block_of /io)
echo "SWARMTRACE-ROOT root=$ROOTDEV io=$IODEV"
case " $SCENARIOS " in *" boot "*)
    case "$ROOTDEV:$IODEV" in
        nvme*n1p1:nvme*n1) if [ "${ROOTDEV%p1}" != "$IODEV" ]; then
                result boot pass "root=$ROOTDEV (the base image's partition) io=$IODEV"
            else
                result boot fail "root=$ROOTDEV and io=$IODEV are one disk"
            fi ;;
        *) result boot fail "root=$ROOTDEV io=$IODEV: not the base image's partition and the io disk" ;;
    esac
    SCENARIOS=$(echo " $SCENARIOS " | sed 's/ boot / /; s/^ *//; s/ *$//')
    [ -z "$SCENARIOS" ] && exit 0 ;;
esac

# One of two Swarm nodes (the harness's nodes-* scenarios): a script of its own.
if [ "${NODE:-0}" != 0 ]; then
    # shellcheck source=/dev/null
    . "$VM/nodes.sh"
    exit 0
fi

if [ "${FIXTURES:-0}" = 1 ]; then
    step "capturing fixtures"
    bash "$VM/fixtures.sh" "$OUT/fixtures" || echo "fixture capture failed"
fi

fail_all() {
    local s
    for s in $SCENARIOS; do result "$s" fail "setup: $*"; done
    exit 0
}

step "loading modules"
modprobe -a overlay bridge br_netfilter veth vxlan ip_vs ip_vs_rr xt_ipvs iptable_nat \
    iptable_filter iptable_mangle xt_MASQUERADE xt_addrtype xt_conntrack xt_mark nf_nat \
    nf_conntrack_netlink sch_ingress cls_bpf 2>&1 | head -n 20

# The namespace lab of `swarmtrace demo` (no Docker needed): every fault, on this kernel.
case " $SCENARIOS " in *" lab "*)
    step "scenario lab (swarmtrace demo all)"
    timeout 600 "$ST" demo all > "$OUT/lab.out" 2>&1
    rc=$?
    sed 's/^/  > /' "$OUT/lab.out" | grep -E '^  > (=== |swarmtrace: degraded|swarmtrace: error)'
    got=$(grep -E '^=== scenario .*: expected' "$OUT/lab.out" | sed -E 's/^=== scenario ([^:]*): expected ([^,]*), got (.*) -> (.*)$/\1=\4/' | tr '\n' ' ')
    if [ $rc = 0 ]; then result lab pass "demo all: $got"; else result lab fail "demo all exit $rc: $got"; fi
    SCENARIOS=$(echo " $SCENARIOS " | sed 's/ lab / /; s/^ *//; s/ *$//')
    ;;
esac
# The .deb (no Docker needed): dpkg -i, --version, man page, completions, group, capabilities.
case " $SCENARIOS " in *" deb "*)
    step "scenario deb"
    # shellcheck source=/dev/null
    ( . "$VM/scenarios/deb.sh" ) || result deb fail "scenario script failed (status $?)"
    SCENARIOS=$(echo " $SCENARIOS " | sed 's/ deb / /; s/^ *//; s/ *$//')
    ;;
esac
if [ -z "$SCENARIOS" ]; then
    step "done"
    exit 0
fi

step "client network"
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
ip route add default via $CLIENT_IP
# TSvals without per-connection random offsets: the paws scenario crafts an older one.
client sysctl -qw net.ipv4.tcp_timestamps=2
sysctl -qw net.ipv4.ip_forward=1

step "starting dockerd"
dockerd --data-root /var/lib/docker --iptables=true > "$OUT/dockerd.log" 2>&1 &
DOCKERD_PID=$!
wait_for 90 docker info || { tail -n 30 "$OUT/dockerd.log"; fail_all "dockerd did not come up in 90 s"; }
step "dockerd ready: $(docker version -f '{{.Server.Version}}')"

# A task image from the guest's static busybox: httpd serves /www.
mkdir -p /tmp/task/bin /tmp/task/www
cp /bin/busybox /tmp/task/bin/busybox
echo "hello from the task" > /tmp/task/www/index.html
tar -C /tmp/task -c . | docker import - st/task:1 >/dev/null || fail_all "docker import failed"

docker swarm init --advertise-addr $HOST_IP >/dev/null || fail_all "docker swarm init failed"
step "swarm initialised"

svc() { # NAME PORT REPLICAS CMD...
    local name=$1 port=$2 reps=$3
    shift 3
    docker service create --detach --no-resolve-image --name "$name" --replicas "$reps" \
        --publish "published=$port,target=80" st/task:1 "$@" >/dev/null
}
HTTPD=(/bin/busybox httpd -f -p 80 -h /www)
svc web 8081 2 "${HTTPD[@]}" || fail_all "service web"
# A scenario named SCENARIO@MUTANT (`vm-test --mutants`) runs SCENARIO with the binary
# /io/bin/swarmtrace-MUTANT: the services are those of the scenarios.
BASES=" $(for s in $SCENARIOS; do printf '%s ' "${s%%@*}"; done)"
case "$BASES" in *" task-fault "*) svc stuck 8082 1 /bin/busybox sleep 100000 ;; esac
case "$BASES" in *" paws "*) svc paws 8083 1 "${HTTPD[@]}" ;; esac
# ipvs-misdirected's service: httpd in the background of PID 1; SIGTERM stops httpd, and the
# task lives on 100 s more (a server that stops accepting at once, then finishes its work).
DRAIN_SH='trap "kill \$p" TERM; /bin/busybox httpd -f -p 80 -h /www & p=$!; wait $p; /bin/busybox sleep 100'
case "$BASES" in *" ipvs-misdirected "*)
    docker service create --detach --no-resolve-image --name drain --replicas 1 \
        --stop-grace-period 110s --publish published=8086,target=80 \
        st/task:1 /bin/busybox sh -c "$DRAIN_SH" >/dev/null ;;
esac

converged() {
    local want have
    while read -r want have; do
        [ "$want" = "$have" ] || return 1
    done < <(docker service ls --format '{{.Replicas}}' | tr '/' ' ' | awk '{print $2, $1}')
    [ "$(http_get 8081)" = 200 ]
}
if ! wait_for 360 converged; then
    docker service ls
    docker service ps web --no-trunc | head
    grep -E 'level=(error|fatal)' "$OUT/dockerd.log" | tail -n 8
    echo "--- dmesg"; dmesg | tail -n 25
    fail_all "services did not converge / mesh did not answer in 360 s"
fi
step "services converged, the mesh answers"
docker service ls
echo "--- the routing mesh as Docker made it"
iptables -t nat -S DOCKER-INGRESS
iptables -S DOCKER-INGRESS
ls /var/run/docker/netns/
nsenter --net=/var/run/docker/netns/ingress_sbox iptables -t mangle -S PREROUTING
nsenter --net=/var/run/docker/netns/ingress_sbox ipvsadm -Ln
echo "---"

for s in $SCENARIOS; do
    base=${s%%@*}
    if [ -f "$VM/scenarios/$base.sh" ]; then
        step "scenario $s"
        # A mutant's run: its binary, its own output directory, results named SCENARIO@MUTANT.
        # shellcheck source=/dev/null
        ( if [ "$base" != "$s" ]; then
              MUTANT=${s#*@}
              ST=$IO/bin/swarmtrace-$MUTANT
              OUT=$OUT/$MUTANT
              mkdir -p "$OUT"
          fi
          . "$VM/scenarios/$base.sh" ) || result "$s" fail "scenario script failed (status $?)"
    else
        result "$s" skip "no such scenario"
    fi
done

step "cleaning up"
docker swarm leave --force >/dev/null 2>&1
kill -TERM $DOCKERD_PID 2>/dev/null
for _ in $(seq 1 40); do kill -0 $DOCKERD_PID 2>/dev/null || break; sleep 0.5; done
step "done"
