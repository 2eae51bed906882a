# stack: what an operator deploys. The image `cargo xtask dist` assembled offline (no registry)
# is loaded into the guest's Docker, deploy/swarmtrace-stack.yml deployed with `docker stack
# deploy`; the global service must run, attach, serve metrics on :9464 and count the
# handshakes of 5 requests through the routing mesh as answered.
IMG=$IO/dist/swarmtrace-image.tar
STACK=$IO/dist/swarmtrace-stack.yml
[ -f "$IMG" ] && [ -f "$STACK" ] || { result stack fail "no image or stack file on the io disk"; return 0; }
t0=$(date +%s)
docker load -q -i "$IMG" || { result stack fail "docker load failed"; return 0; }
docker image inspect -f '{{.Os}}/{{.Architecture}} {{.Config.Entrypoint}} {{.Size}} bytes' swarmtrace:latest
t_load=$(( $(date +%s) - t0 ))
docker stack deploy --resolve-image never -c "$STACK" swarmtrace \
    || { result stack fail "docker stack deploy failed"; return 0; }
scrape() { curl -s -m 3 http://127.0.0.1:9464/metrics; }
# answered handshakes to the published port 8081, as the service counts them.
answered() {
    scrape | awk '/^swarmtrace_handshakes_total\{/ && /:8081"/ && /verdict="answered"/ {n += $NF} END {print n + 0}'
}
attached() {
    scrape | grep -Eq '^swarmtrace_interface_attached\{.*\} 1$'
}
if ! wait_for 240 attached; then
    docker service ps swarmtrace_swarmtrace --no-trunc | head -n 5
    id=$(docker ps -aq --filter label=com.docker.swarm.service.name=swarmtrace_swarmtrace | head -n1)
    [ -n "$id" ] && docker logs "$id" 2>&1 | tail -n 20
    result stack fail "the service did not serve metrics with an attached interface in 240 s"
    docker stack rm swarmtrace >/dev/null 2>&1
    return 0
fi
t_up=$(( $(date +%s) - t0 ))
step "stack: service runs and is attached (load ${t_load}s, up ${t_up}s)"
state=$(docker service ps swarmtrace_swarmtrace --format '{{.CurrentState}}' | head -n1)
before=$(answered)
ok=0
for i in 1 2 3 4 5; do
    [ "$(http_get 8081)" = 200 ] && ok=$((ok + 1))
done
# The syn-timeout (1 s) and the metrics are updated as events arrive: give it a few seconds.
wait_for 20 sh -c "[ \$(curl -s -m 3 http://127.0.0.1:9464/metrics | awk '/^swarmtrace_handshakes_total\\{/ && /:8081\"/ && /verdict=\"answered\"/ {n += \$NF} END {print n + 0}') -ge $((before + 5)) ]"
after=$(answered)
echo "--- metrics (excerpt)"
scrape | grep -E '^swarmtrace_(up|handshakes_total|interface_attached|syns_total|synacks_total|build_info)' | head -n 20 | sed 's/^/  > /'
scrape > "$OUT/stack.metrics"
id=$(docker ps -q --filter label=com.docker.swarm.service.name=swarmtrace_swarmtrace | head -n1)
[ -n "$id" ] && docker logs "$id" > "$OUT/stack.ndjson" 2> "$OUT/stack.err"
docker stack rm swarmtrace >/dev/null 2>&1
d=$((after - before))
if [ "$ok" = 5 ] && [ "$d" -ge 5 ]; then
    result stack pass "image loaded in ${t_load}s, service $state, attached after ${t_up}s; $ok/5 requests answered, metrics count $d answered handshakes to :8081"
else
    result stack fail "$ok/5 requests answered; metrics count $d answered handshakes to :8081 (before $before, after $after); service $state"
fi
