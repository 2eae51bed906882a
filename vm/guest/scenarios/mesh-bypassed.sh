# mesh-bypassed: the host's nat DOCKER-INGRESS rule for 8081 (service web, two tasks) is
# deleted, as a flush of Docker's rules would do: the SYN never goes into ingress_sbox, and the
# listener dockerd holds on the published port in the host namespace completes the handshake
# itself (a half-open accept: the requests time out). Expect mesh-bypassed, charged to the real
# client, the verdict naming the service, its running tasks, the host namespace and the rule.
rule=$(iptables -t nat -S DOCKER-INGRESS | grep -w -- '--dport 8081' | head -n1)
[ -n "$rule" ] || { result mesh-bypassed fail "no nat DOCKER-INGRESS rule for 8081 to remove"; return 0; }
st_start mesh-bypassed || { result mesh-bypassed fail "swarmtrace did not start: $(tail -n3 "$OUT/mesh-bypassed.err" | tr '\n' ' ')"; return 0; }
# shellcheck disable=SC2086 # the rule's words, as iptables -S printed them
iptables -t nat -D ${rule#-A }
code1=$(http_get 8081 -m 3)
code2=$(http_get 8081 -m 3)
# shellcheck disable=SC2086
iptables -t nat -I ${rule#-A }
sleep 2
st_stop
st_show mesh-bypassed
[ "$code1$code2" = 000000 ] || { result mesh-bypassed fail "requests answered without the ingress rule ($code1 $code2)"; return 0; }
check mesh-bypassed mesh-bypassed --client "$CLIENT_IP" --cause mesh-bypassed \
    --expect "service web publishes port 8081 through the routing mesh" --expect "2 of 2 task(s) running" \
    --expect "in the host namespace itself" --expect "iptables -t nat -S DOCKER-INGRESS | grep -w -- '--dport 8081'"
