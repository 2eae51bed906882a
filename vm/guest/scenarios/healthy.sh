# healthy: requests through the routing mesh are answered; swarmtrace reports them answered,
# with a latency, and names no cause.
st_start healthy || { result healthy fail "swarmtrace did not start: $(tail -n3 "$OUT/healthy.err" | tr '\n' ' ')"; return 0; }
ok=0
for i in 1 2 3 4 5; do
    [ "$(http_get 8081)" = 200 ] && ok=$((ok + 1))
done
sleep 3
st_stop
st_show healthy
[ "$ok" = 5 ] || { result healthy fail "only $ok/5 requests answered through the mesh"; return 0; }
check healthy healthy --client "$CLIENT_IP" --min 5
