# sbox-drop: a DROP rule inside Docker's own `ingress_sbox` namespace (its filter INPUT chain,
# which runs before IPVS picks a task). Expect netfilter-drop, charged to the real client, the
# drop in the namespace swarmtrace names as Docker does: `ingress_sbox`, and the verdict naming
# the rule whose counter rose there (the rule stays until swarmtrace has read the counters at
# its end, as a real one would). The not-this-cause side of ipvs-no-backend: IPVS has its
# backends, a rule dropped the SYN.
SBOX=/var/run/docker/netns/ingress_sbox
st_start sbox-drop || { result sbox-drop fail "swarmtrace did not start: $(tail -n3 "$OUT/sbox-drop.err" | tr '\n' ' ')"; return 0; }
nsenter --net=$SBOX iptables -I INPUT 1 -p tcp --dport 8081 -j DROP
code1=$(http_get 8081 -m 3)
code2=$(http_get 8081 -m 3)
sleep 2
st_stop
nsenter --net=$SBOX iptables -D INPUT -p tcp --dport 8081 -j DROP
st_show sbox-drop
[ "$code1$code2" = 000000 ] || { result sbox-drop fail "requests went through the DROP rule in ingress_sbox ($code1 $code2)"; return 0; }
check sbox-drop sbox-drop --client "$CLIENT_IP" --cause netfilter-drop --netns ingress_sbox \
    --expect="DROP or REJECT rule in ingress_sbox matched" \
    --expect="-t filter -A INPUT -p tcp -m tcp --dport 8081 -j DROP" --absent ipvs-no-backend
