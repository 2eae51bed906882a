# deb: what an operator installs. `dpkg -i` of the .deb `cargo xtask dist` built, then:
# `swarmtrace --version`, `man swarmtrace`, the completions, the group, the binary
# root:swarmtrace 0750 with the file capabilities, a group member runs it and nobody else can.
DEB=$IO/dist/swarmtrace.deb
[ -f "$DEB" ] || { result deb fail "no .deb on the io disk"; return 0; }
bad=
t0=$(date +%s)
dpkg -i "$DEB" > "$OUT/deb.out" 2>&1 || { sed 's/^/  | /' "$OUT/deb.out"; result deb fail "dpkg -i failed: $(tail -n2 "$OUT/deb.out" | tr '\n' ' ')"; return 0; }
sed 's/^/  | /' "$OUT/deb.out"
t_inst=$(( $(date +%s) - t0 ))
v=$(swarmtrace --version 2>&1) || bad="$bad --version failed ($v);"
[ "$(command -v swarmtrace)" = /usr/bin/swarmtrace ] || bad="$bad not on PATH as /usr/bin/swarmtrace;"
man -P cat swarmtrace > "$OUT/deb.man" 2>&1 && grep -q 'swarmtrace' "$OUT/deb.man" \
    || bad="$bad man swarmtrace failed ($(head -c 200 "$OUT/deb.man"));"
for f in /usr/share/bash-completion/completions/swarmtrace /usr/share/zsh/vendor-completions/_swarmtrace \
         /usr/share/fish/vendor_completions.d/swarmtrace.fish; do
    grep -q swarmtrace "$f" 2>/dev/null || bad="$bad no completion $f;"
done
getent group swarmtrace > /dev/null || bad="$bad no swarmtrace group;"
own=$(stat -c '%U:%G %a' /usr/bin/swarmtrace)
[ "$own" = "root:swarmtrace 750" ] || bad="$bad binary is $own, not root:swarmtrace 750;"
caps=$(getcap /usr/bin/swarmtrace 2>&1)
for c in cap_bpf cap_perfmon cap_net_admin cap_sys_admin cap_dac_read_search cap_sys_ptrace cap_syslog cap_sys_resource =ep; do
    case "$caps" in *"$c"*) ;; *) bad="$bad capabilities lack $c: '$caps';" ;; esac
done
useradd -M -G swarmtrace stop 2>/dev/null
useradd -M stother 2>/dev/null
mem=$(runuser -u stop -- swarmtrace --version 2>&1) || bad="$bad a swarmtrace member cannot run it ($mem);"
if runuser -u stother -- swarmtrace --version > /dev/null 2>&1; then
    bad="$bad a non-member ran it;"
fi
# The member traces, without root: the programs load and attach, the summary comes.
(cd /tmp && timeout 90 runuser -u stop -- swarmtrace run --duration 3s --iface lo > "$OUT/deb.run.out" 2> "$OUT/deb.run.err")
rc=$?
sed 's/^/  member-run> /' "$OUT/deb.run.err" | head -n 12
if [ $rc != 0 ] || ! grep -q 'swarmtrace: tracing' "$OUT/deb.run.err"; then
    bad="$bad a member cannot trace (run exit $rc: $(grep -m1 error "$OUT/deb.run.err"));"
fi
if [ -z "$bad" ]; then
    result deb pass "dpkg -i in ${t_inst}s; $v; man page, 3 completions, $own, $caps; a member traces (run, no root), others cannot run it"
else
    result deb fail "$bad"
fi
