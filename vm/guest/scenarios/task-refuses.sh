# task-refuses (the not-this-cause case of mesh-bypassed and no-running-task): the mesh routes
# 8085 to the running task of service deaf, which listens on nothing, so the task refuses the
# SYN. Expect no-listener, charged to the real client, the refusal in the task's namespace, and
# neither mesh-bypassed nor no-running-task.
svc deaf 8085 1 /bin/busybox sleep 100000 || { result task-refuses fail "docker service create deaf failed"; return 0; }
if ! wait_for 240 task_pid deaf || ! wait_for 60 bash -c "iptables -t nat -S DOCKER-INGRESS | grep -qw -- '--dport 8085'"; then
    docker service ps deaf --no-trunc | head -n 5
    docker service rm deaf >/dev/null
    result task-refuses fail "service deaf did not get a running task and its ingress rule in 300 s"
    return 0
fi
pid=$(task_pid deaf)
# The task's backend in ingress_sbox's IPVS comes with its rule; a moment for both.
sleep 3
st_start task-refuses || { docker service rm deaf >/dev/null; result task-refuses fail "swarmtrace did not start: $(tail -n3 "$OUT/task-refuses.err" | tr '\n' ' ')"; return 0; }
code1=$(http_get 8085 -m 3)
code2=$(http_get 8085 -m 3)
sleep 2
st_stop
st_show task-refuses
check task-refuses task-refuses --client "$CLIENT_IP" --cause no-listener --task-netns "$pid" \
    --absent mesh-bypassed --absent no-running-task
docker service rm deaf >/dev/null
