# no-task: service idle publishes 8084 through the routing mesh but has no task (created with
# --replicas 0, as a service scaled to 0 is). Expect no-running-task, charged to the real
# client, the verdict naming the service, its task count and a confirm command for it.
docker service create --detach --no-resolve-image --name idle --replicas 0 \
    --publish published=8084,target=80 st/task:1 /bin/busybox httpd -f -p 80 -h /www >/dev/null \
    || { result no-task fail "docker service create idle failed"; return 0; }
wait_for 30 bash -c "docker service inspect idle --format '{{json .Endpoint.Ports}}' | grep -q 8084" \
    || { docker service rm idle >/dev/null; result no-task fail "Docker did not publish 8084 for idle in 30 s"; return 0; }
st_start no-task || { docker service rm idle >/dev/null; result no-task fail "swarmtrace did not start: $(tail -n3 "$OUT/no-task.err" | tr '\n' ' ')"; return 0; }
code1=$(http_get 8084 -m 3)
code2=$(http_get 8084 -m 3)
sleep 2
st_stop
st_show no-task
docker service rm idle >/dev/null
[ "$code1$code2" = 000000 ] || { result no-task fail "a service without tasks answered ($code1 $code2)"; return 0; }
check no-task no-task --client "$CLIENT_IP" --cause no-running-task \
    --expect "service idle publishes port 8084 through the routing mesh" --expect "0 of 0 task(s) running" \
    --expect "docker service ps --no-trunc idle"
