# sbox-drop: a DROP rule inside Docker's own `ingress_sbox` namespace (its filter INPUT chain,
# which runs before IPVS picks a task). Expect netfilter-drop, charged to the real client, the
# drop in the namespace swarmtrace names as Docker does: `ingress_sbox`.
SBOX=/var/run/docker/netns/ingress_sbox
st_start sbox-drop || { result sbox-drop fail "swarmtrace did not start: $(tail -n3 "$OUT/sbox-drop.err" | tr '\n' ' ')"; return 0; }
nsenter --net=$SBOX iptables -I INPUT 1 -p tcp --dport 8081 -j DROP
code1=$(http_get 8081 -m 3)
code2=$(http_get 8081 -m 3)
nsenter --net=$SBOX iptables -D INPUT -p tcp --dport 8081 -j DROP
sleep 2
st_stop
st_show sbox-drop
[ "$code1$code2" = 000000 ] || { result sbox-drop fail "requests went through the DROP rule in ingress_sbox ($code1 $code2)"; return 0; }
check sbox-drop sbox-drop --client "$CLIENT_IP" --cause netfilter-drop --netns ingress_sbox
