#!/bin/bash
# Captures the kernel facts swarmtrace reads, as the unit-test fixtures in tests/fixtures/linux-X.Y/:
# kfree_skb.format, vmlinux.btf.gz, kallsyms.excerpt, netstat, snmp, osrelease.
set -u
dir=$1
mkdir -p "$dir"
uname -r > "$dir/osrelease"
for t in /sys/kernel/tracing /sys/kernel/debug/tracing; do
    if [ -r "$t/events/skb/kfree_skb/format" ]; then
        cat "$t/events/skb/kfree_skb/format" > "$dir/kfree_skb.format"
        break
    fi
done
gzip -9n < /sys/kernel/btf/vmlinux > "$dir/vmlinux.btf.gz"
cat /proc/net/netstat > "$dir/netstat"
cat /proc/net/snmp > "$dir/snmp"
# The symbols swarmtrace names drops by need their modules loaded (nft_do_chain: nf_tables).
modprobe -a nf_tables nft_compat 2>/dev/null
# kallsyms: 12 lines around _stext and around each symbol a drop is named by,
# in kallsyms' own order (module symbols keep their [module] tag).
awk '
    BEGIN {
        n = split("tcp_v4_rcv tcp_v6_rcv tcp_drop nft_do_chain ip_rcv_finish_core " \
                  "tcp_timewait_state_process kfree_skb kfree_skb_reason kfree_skb_list_reason " \
                  "tcp_conn_request tcp_rcv_state_process ipt_do_table nf_hook_slow " \
                  "neigh_invalidate ip_vs_in __neigh_event_send _stext", w, " ")
        for (i = 1; i <= n; i++) want[w[i]] = 1
    }
    { line[NR] = $0; if ($3 in want) hit[NR] = 1 }
    END {
        for (h in hit) for (j = h - 12; j <= h + 12; j++) if (j >= 1 && j <= NR) keep[j] = 1
        for (i = 1; i <= NR; i++) if (i in keep) print line[i]
    }' /proc/kallsyms > "$dir/kallsyms.excerpt"
echo "fixtures: $(cd "$dir" && for f in *; do printf '%s=%s ' "$f" "$(stat -c %s "$f")"; done)"
grep -E ' (tcp_drop|tcp_v4_rcv|nft_do_chain|ip_rcv_finish_core|tcp_timewait_state_process)($|[[:space:]])' \
    "$dir/kallsyms.excerpt" | sed 's/^/  kallsyms: /'
if grep -q 'field:[^;]*reason' "$dir/kfree_skb.format"; then
    grep -o 'field:[^;]*reason[^;]*;' "$dir/kfree_skb.format" | sed 's/^/  kfree_skb: /'
else
    echo "  kfree_skb: no reason field"
fi
grep -q ' tcp_drop$' /proc/kallsyms && echo "  kallsyms: tcp_drop exists" || echo "  kallsyms: no tcp_drop symbol"
