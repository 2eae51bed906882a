# paws: the TIME_WAIT + older TSval case behind the ingress SNAT. Client 1 makes a request from
# port 40000 to service `paws` (one replica); busybox httpd closes first, so the task keeps a
# TIME_WAIT for 10.0.0.x(ingress SNAT):40000. Its conntrack entry in ingress_sbox is removed (as
# if the NAT entry had expired), then client 2 (another LAN address) sends a SYN from port
# 40000 with an older TSval: SNAT makes it the same 4-tuple, and the TIME_WAIT rejects it (PAWS).
pid=$(task_pid paws) || { result paws fail "no running task of service paws"; return 0; }
st_start paws || { result paws fail "swarmtrace did not start: $(tail -n3 "$OUT/paws.err" | tr '\n' ' ')"; return 0; }
code=$(http_get 8083 --interface "$CLIENT_IP" --local-port 40000)
sleep 0.5
echo "task TIME_WAITs:"; nsenter -t "$pid" -n ss -tan state time-wait | sed 's/^/  /'
tw=$(nsenter -t "$pid" -n ss -tan state time-wait | grep -c ':40000')
nsenter --net=/var/run/docker/netns/ingress_sbox conntrack -D -p tcp --orig-port-src 40000 2>&1 | tail -n1
client python3 "$VM/pawssyn.py" "$CLIENT2_IP" 40000 "$HOST_IP" 8083 100000
sleep 3
st_stop
echo "task netns counters:"; nsenter -t "$pid" -n cat /proc/net/netstat | awk 'NR==1{for(i=1;i<=NF;i++)h[i]=$i} NR==2{for(i=1;i<=NF;i++) if (h[i] ~ /PAWS/) print "  " h[i] "=" $i}'
st_show paws
[ "$code" = 200 ] || { result paws fail "client 1's request was not answered ($code)"; return 0; }
[ "$tw" -ge 1 ] || { result paws fail "the task holds no TIME_WAIT for port 40000 (the server did not close first)"; return 0; }
check paws paws --client "$CLIENT2_IP" --cause paws-timestamps --task-netns "$pid" --task-service paws
