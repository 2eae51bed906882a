# drop-rule: a DROP rule on the published port in the filter table's DOCKER-INGRESS chain (the
# FORWARD path of the mesh, after the DNAT to ingress_sbox). Expect netfilter-drop, charged to
# the real client, dropped in the host namespace.
st_start drop-rule || { result drop-rule fail "swarmtrace did not start: $(tail -n3 "$OUT/drop-rule.err" | tr '\n' ' ')"; return 0; }
iptables -I DOCKER-INGRESS 1 -p tcp --dport 8081 -j DROP
code1=$(http_get 8081 -m 3)
code2=$(http_get 8081 -m 3)
iptables -D DOCKER-INGRESS -p tcp --dport 8081 -j DROP
sleep 2
st_stop
st_show drop-rule
[ "$code1$code2" = 000000 ] || { result drop-rule fail "requests went through the DROP rule ($code1 $code2)"; return 0; }
check drop-rule drop-rule --client "$CLIENT_IP" --cause netfilter-drop --netns host
