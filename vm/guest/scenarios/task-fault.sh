# task-fault: inside the task of service `stuck`, a listener on port 80 that never accepts
# (backlog 0). The first connection fills its accept queue; later SYNs are swallowed without a
# drop event (ListenOverflows/ListenDrops rise in the task's namespace). The task sees only the
# ingress SNAT address; swarmtrace must still charge the real client.
pid=$(task_pid stuck) || { result task-fault fail "no running task of service stuck"; return 0; }
nsenter -t "$pid" -n python3 "$VM/noaccept.py" 80 60 &
LPID=$!
wait_for 10 bash -c "nsenter -t $pid -n ss -ltnH | grep -q ':80 '"
st_start task-fault || { kill $LPID; result task-fault fail "swarmtrace did not start: $(tail -n3 "$OUT/task-fault.err" | tr '\n' ' ')"; return 0; }
pids=""
for i in 1 2 3 4; do
    client curl -s -o /dev/null -m 4 "http://$HOST_IP:8082/" &
    pids="$pids $!"
    sleep 0.3
done
wait $pids
sleep 2
st_stop
kill $LPID 2>/dev/null
wait $LPID 2>/dev/null
echo "task netns counters:"; nsenter -t "$pid" -n cat /proc/net/netstat | awk 'NR==1{for(i=1;i<=NF;i++)h[i]=$i} NR==2{for(i=1;i<=NF;i++) if (h[i] ~ /Listen/) print "  " h[i] "=" $i}'
st_show task-fault
check task-fault task-fault --client "$CLIENT_IP" --cause listen-queue-full --task-netns "$pid"
