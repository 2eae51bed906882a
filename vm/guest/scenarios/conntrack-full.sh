# conntrack-full: the conntrack table of Docker's ingress_sbox namespace is full. The host's
# nf_conntrack_max (one limit, each namespace counting its own entries) is lowered to a little
# above what the host's namespace holds, and ingress_sbox's table is filled to it with
# assured entries conntrack may not evict. The SYN passes the host (its DNAT is tracked there),
# and in ingress_sbox conntrack cannot track it and drops it, as a DROP rule would
# (NETFILTER_DROP, nf_hook_slow on 5.10). Expect conntrack-full, charged to the real client,
# the drop in ingress_sbox, the verdict naming the table's fill and a confirm command that runs
# as printed. nf_conntrack_max and the table are restored at the end.
SBOX=/var/run/docker/netns/ingress_sbox
sb() { nsenter --net=$SBOX "$@"; }
MARK=0x5354
# Only entries that cannot expire or be evicted during the scenario: the earlier scenarios'
# (TIME_WAIT, unreplied) expire and free room faster than a refill under emulation (CI,
# 2026-12-04 on 6.12: the second request went through, "000 200"). ingress_sbox keeps no
# connection a later scenario needs.
sb conntrack -F > /dev/null 2>&1
old_max=$(sysctl -n net.netfilter.nf_conntrack_max)
host_count=$(sysctl -n net.netfilter.nf_conntrack_count)
sbox_count=$(sb sysctl -n net.netfilter.nf_conntrack_count)
# Room for the host's own new entries during the run (the client's SYNs are tracked there).
max=$(( (host_count > sbox_count ? host_count : sbox_count) + 64 ))
seq_no=0
# fill: inserts entries into ingress_sbox's table until it holds nf_conntrack_max (bounded).
fill() {
    local round n want i
    for round in 1 2 3 4 5; do
        n=$(sb sysctl -n net.netfilter.nf_conntrack_count)
        [ "$n" -ge "$max" ] && return 0
        want=$(( max - n + 4 ))
        : > /tmp/ct-fill
        for i in $(seq 1 "$want"); do
            seq_no=$((seq_no + 1))
            echo "-I -p udp -s 10.254.$(( seq_no / 250 )).$(( seq_no % 250 + 1 )) -d 10.254.255.254 --sport 1000 --dport 9 -t 1200 -u ASSURED -m $MARK" >> /tmp/ct-fill
        done
        # Fails at the first entry past the limit ("table full"): expected.
        sb conntrack -R /tmp/ct-fill > /dev/null 2>&1
    done
    n=$(sb sysctl -n net.netfilter.nf_conntrack_count)
    [ "$n" -ge "$max" ]
}
restore() {
    sysctl -qw net.netfilter.nf_conntrack_max="$old_max"
    sb conntrack -D -m $MARK > /dev/null 2>&1
}
echo "conntrack: max $old_max, host $host_count entries, ingress_sbox $sbox_count; lowering max to $max"
st_start conntrack-full || { result conntrack-full fail "swarmtrace did not start: $(tail -n3 "$OUT/conntrack-full.err" | tr '\n' ' ')"; return 0; }
sysctl -qw net.netfilter.nf_conntrack_max="$max"
if ! fill; then
    st_stop
    restore
    result conntrack-full fail "setup: ingress_sbox's conntrack table not filled to $max ($(sb sysctl -n net.netfilter.nf_conntrack_count) entries)"
    return 0
fi
echo "conntrack: ingress_sbox $(sb sysctl -n net.netfilter.nf_conntrack_count) of $max entries, host $(sysctl -n net.netfilter.nf_conntrack_count)"
# Entries of earlier scenarios expire meanwhile (TIME_WAIT): keep the table full.
( while :; do fill; sleep 0.3; done ) > /dev/null 2>&1 &
refill=$!
code1=$(http_get 8081 -m 3)
code2=$(http_get 8081 -m 3)
sleep 2
kill $refill 2>/dev/null
wait $refill 2>/dev/null
st_stop
sb cat /proc/net/stat/nf_conntrack > "$OUT/conntrack-full.nf_conntrack_stat"
sb conntrack -S | head -n 4
dmesg | grep 'nf_conntrack: table full' | tail -n 2
restore
st_show conntrack-full
echo "conntrack: restored max $(sysctl -n net.netfilter.nf_conntrack_max), ingress_sbox $(sb sysctl -n net.netfilter.nf_conntrack_count) entries"
[ "$code1$code2" = 000000 ] || { result conntrack-full fail "requests went through the full table ($code1 $code2)"; return 0; }
check conntrack-full conntrack-full --client "$CLIENT_IP" --cause conntrack-full --netns ingress_sbox \
    --expect "conntrack table of ingress_sbox full" --expect "nf_conntrack_max" --absent netfilter-drop \
    --confirm-runs
# The table restored, the mesh answers again (what a later scenario needs).
ok=$(http_get 8081)
[ "$ok" = 200 ] || echo "conntrack-full: after the restore the mesh answered $ok"
