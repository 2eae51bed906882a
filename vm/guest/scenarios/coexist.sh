# coexist: a `run` (the daemon) and a `capture` (an operator, during an incident) on the same
# interfaces. On 5.10 and 6.1 the classifiers are netlink filters on clsact: the capture must
# neither remove the run's filters when it starts nor the qdisc when it ends. Expect the run to
# count every request made before, during and after the capture, its filters and the qdisc to
# stay, and nothing of either to be left once both have ended. (6.12 uses TCX links: the same
# requests, without the tc checks.)
CAPERR=$OUT/coexist-capture.err
qdisc0=$(tc qdisc show dev lan0 | grep -c clsact)
st_start coexist || { result coexist fail "swarmtrace did not start: $(tail -n3 "$OUT/coexist.err" | tr '\n' ' ')"; return 0; }
ins() { tc filter show dev lan0 ingress | grep -c 'swarmtrace_in'; }
before=$(ins)
netlink=0
[ "$before" -ge 1 ] && netlink=1
ok=0
req3() {
    local i
    for i in 1 2 3; do
        [ "$(http_get 8081)" = 200 ] && ok=$((ok + 1))
    done
}
req3
"$ST" capture --duration 12s --iface lan0 --iface docker_gwbridge -o /tmp/coexist-capture.tar.gz \
    > /dev/null 2> "$CAPERR" &
CAP=$!
if ! wait_for 120 grep -q 'swarmtrace: tracing' "$CAPERR"; then
    kill -KILL "$CAP" 2>/dev/null
    st_stop
    result coexist fail "the capture did not start: $(tail -n3 "$CAPERR" | tr '\n' ' ')"
    return 0
fi
step "capture traces beside the run"
req3
during=$(ins)
for _ in $(seq 1 120); do kill -0 "$CAP" 2>/dev/null || break; sleep 0.5; done
kill -KILL "$CAP" 2>/dev/null
wait "$CAP"
caprc=$?
step "capture ended (status $caprc)"
after=$(ins)
qdisc_after=$(tc qdisc show dev lan0 | grep -c clsact)
req3
sleep 2
st_stop
left=$(for d in lan0 docker_gwbridge; do for dir in ingress egress; do tc filter show dev $d $dir; done; done | grep -c 'swarmtrace_')
qdisc_left=$(tc qdisc show dev lan0 | grep -c clsact)
st_show coexist
echo "--- capture stderr"
head -c 3000 "$CAPERR" | tr '\r' '\n' | sed 's/^/  | /'
rm -f /tmp/coexist-capture.tar.gz
facts="netlink=$netlink filters(before/during/after/left)=$before/$during/$after/$left clsact(after capture/left)=$qdisc_after/$qdisc_left capture=$caprc answered=$ok/9"
[ "$ok" = 9 ] || { result coexist fail "only $ok/9 requests answered through the mesh; $facts"; return 0; }
[ "$caprc" = 0 ] || { result coexist fail "the capture failed (status $caprc): $(tail -n2 "$CAPERR" | tr '\r\n' '  '); $facts"; return 0; }
if [ "$netlink" = 1 ]; then
    [ "$during" = $((before + 1)) ] || { result coexist fail "the capture did not add its filter beside the run's; $facts"; return 0; }
    [ "$after" = "$before" ] || { result coexist fail "the run's filters did not survive the capture; $facts"; return 0; }
    [ "$qdisc_after" -ge 1 ] || { result coexist fail "the capture removed the clsact qdisc under the run; $facts"; return 0; }
    grep -q 'another swarmtrace instance' "$CAPERR" || { result coexist fail "the capture did not say another instance is attached; $facts"; return 0; }
fi
[ "$left" = 0 ] || { result coexist fail "swarmtrace filters left after both ended; $facts"; return 0; }
[ "$qdisc_left" = "$qdisc0" ] || { result coexist fail "clsact qdisc left after both ended; $facts"; return 0; }
# The run counted every request: before, during and after the capture.
line=$(python3 "$VM/check.py" healthy "$OUT/coexist.ndjson" --kernel "$KTAG" --client "$CLIENT_IP" --min 9 2>&1 | tail -n1)
case "$line" in
    pass*) result coexist pass "$facts; run: ${line#pass }" ;;
    *) result coexist fail "the run missed requests; $facts; run: ${line#fail }" ;;
esac
