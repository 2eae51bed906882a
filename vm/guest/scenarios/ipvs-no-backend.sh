# ipvs-no-backend: IPVS in Docker's ingress_sbox loses the backends of service web (port 8081,
# two running tasks) while Docker keeps the tasks running, as moby's stale-backend bugs do: the
# real servers of the port's fwmark service are deleted with ipvsadm. A new SYN then finds no
# destination: IPVS answers it with an ICMP port unreachable and drops it (ip_vs_leave, NF_DROP),
# which the kernel reports as a rule's drop (NETFILTER_DROP, nf_hook_slow on 5.10). No DROP rule
# is involved. Expect ipvs-no-backend, not netfilter-drop, charged to the real client, the drop
# in ingress_sbox, the verdict naming the service, its running tasks, the fwmark and the
# namespace, and a confirm command that runs as printed. The real servers are put back after.
SBOX=/var/run/docker/netns/ingress_sbox
sb() { nsenter --net=$SBOX "$@"; }
hex=$(sb iptables -t mangle -S PREROUTING | grep -w -- '--dport 8081' | grep -o -- '--set-xmark 0x[0-9a-f]*' | head -n1 | awk '{print $2}')
[ -n "$hex" ] || { result ipvs-no-backend fail "setup: no mangle PREROUTING mark for 8081 in ingress_sbox"; return 0; }
mark=$((hex))
reals=$(sb ipvsadm -Ln -f "$mark" | awk '$1 == "->" && $2 ~ /^[0-9]/ {print $2}')
[ -n "$reals" ] || { result ipvs-no-backend fail "setup: IPVS service FWM $mark has no real server to remove"; return 0; }
echo "ipvs: port 8081 marked $mark ($hex), real servers $(echo $reals)"
restore() {
    local r
    for r in $reals; do
        sb ipvsadm -a -f "$mark" -r "$r" -m -w 1 2>/dev/null
    done
}
st_start ipvs-no-backend || { result ipvs-no-backend fail "swarmtrace did not start: $(tail -n3 "$OUT/ipvs-no-backend.err" | tr '\n' ' ')"; return 0; }
for r in $reals; do
    sb ipvsadm -d -f "$mark" -r "$r"
done
sb ipvsadm -Ln -f "$mark"
code1=$(http_get 8081 -m 3)
code2=$(http_get 8081 -m 3)
sleep 2
st_stop
restore
sb ipvsadm -Ln -f "$mark"
st_show ipvs-no-backend
[ "$code1$code2" = 000000 ] || { result ipvs-no-backend fail "requests went through IPVS without backends ($code1 $code2)"; return 0; }
check ipvs-no-backend ipvs-no-backend --client "$CLIENT_IP" --cause ipvs-no-backend --netns ingress_sbox \
    --expect "service web publishes port 8081 through the routing mesh" --expect "2 of 2 task(s) running" \
    --expect "IPVS in ingress_sbox: port 8081 is marked $mark ($hex)" --expect "service FWM $mark had no destination" \
    --expect "no DROP or REJECT rule's packet counter rose in ingress_sbox" \
    --expect "docker service update --force web" --absent netfilter-drop --confirm-runs
# The real servers back, the mesh answers again (what a later scenario needs).
ok=$(http_get 8081)
[ "$ok" = 200 ] || echo "ipvs-no-backend: after the restore the mesh answered $ok"
