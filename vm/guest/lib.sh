# Shared helpers of the guest scripts (sourced by run.sh and the scenarios). Bash.
# Every wait here is bounded.

T_START=$(cut -d' ' -f1 /proc/uptime)

# step NAME: a timestamped progress line on the console (seconds since boot).
step() { echo "ST-STEP t=$(cut -d' ' -f1 /proc/uptime)s $*"; }

# result SCENARIO STATUS DETAIL...: the line the harness parses. STATUS is pass, fail or skip.
result() {
    local scen=$1 st=$2
    shift 2
    # In a mutant's run (run.sh sets MUTANT) the result is SCENARIO@MUTANT's.
    case "$scen" in *@*) ;; *) scen=$scen${MUTANT:+@$MUTANT} ;; esac
    local line="SWARMTRACE-RESULT kernel=$KTAG scenario=$scen status=$st detail=$*"
    echo "$line"
    echo "$line" >> "$OUT/results.txt"
}

# wait_for SECONDS CMD...: runs CMD every 0.5 s until it succeeds or SECONDS pass.
wait_for() {
    local limit=$1
    shift
    local end=$(( $(date +%s) + limit ))
    while [ "$(date +%s)" -lt "$end" ]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    return 1
}

# The LAN: a client namespace behind lan0, as a machine on the host's network would be.
HOST_IP=192.168.100.1
CLIENT_IP=192.168.100.2
CLIENT2_IP=192.168.100.3
client() { ip netns exec stclient "$@"; }

# http_get PORT [curl args...]: one request through the routing mesh from the client.
http_get() {
    local port=$1
    shift
    client curl -s -o /dev/null -w '%{http_code}' -m 5 "$@" "http://$HOST_IP:$port/"
}

# task_pid SERVICE: the pid of the (first) running task container of a service.
task_pid() {
    local id
    id=$(docker ps -q --filter "label=com.docker.swarm.service.name=$1" | head -n1)
    [ -n "$id" ] || return 1
    docker inspect -f '{{.State.Pid}}' "$id"
}

# st_start NAME ARGS...: starts `swarmtrace run --json` in the background, output in
# $OUT/NAME.ndjson and $OUT/NAME.err, and waits until it traces (or died/timed out).
ST_PID=
st_start() {
    local name=$1
    shift
    "$ST" run --json --duration 300s --iface lan0 --iface docker_gwbridge "$@" \
        > "$OUT/$name.ndjson" 2> "$OUT/$name.err" &
    ST_PID=$!
    local end=$(( $(date +%s) + 120 ))
    while [ "$(date +%s)" -lt "$end" ]; do
        if grep -q 'swarmtrace: tracing' "$OUT/$name.err"; then
            step "swarmtrace traces ($name)"
            return 0
        fi
        if ! kill -0 "$ST_PID" 2>/dev/null; then
            wait "$ST_PID"
            echo "swarmtrace exited with status $? before tracing; its stderr:"
            sed 's/^/  | /' "$OUT/$name.err"
            ST_PID=
            if [ ! -e "$OUT/verbose-start.err" ]; then
                # Once per boot: the same start with -vv, for the full verifier log.
                timeout 60 "$ST" -vv run --json --duration 1s --iface lan0 --iface docker_gwbridge \
                    > /dev/null 2> "$OUT/verbose-start.err"
                echo "swarmtrace -vv: $(wc -l < "$OUT/verbose-start.err") lines in out/verbose-start.err"
            fi
            return 1
        fi
        sleep 0.5
    done
    echo "swarmtrace did not start tracing within 120 s; its stderr:"
    sed 's/^/  | /' "$OUT/$name.err"
    st_stop
    return 1
}

# st_stop: SIGTERM (swarmtrace prints its summary), bounded wait, then SIGKILL.
st_stop() {
    [ -n "$ST_PID" ] || return 0
    kill -TERM "$ST_PID" 2>/dev/null
    local i
    for i in $(seq 1 60); do
        kill -0 "$ST_PID" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$ST_PID" 2>/dev/null; then
        echo "swarmtrace ignored SIGTERM for 30 s: killed"
        kill -KILL "$ST_PID" 2>/dev/null
    fi
    wait "$ST_PID" 2>/dev/null
    ST_RC=$?
    ST_PID=
}

# st_show NAME: the run's stderr and NDJSON on the console (bounded), for the harness log.
st_show() {
    echo "--- swarmtrace stderr ($1)"
    head -c 4000 "$OUT/$1.err" | sed 's/^/  | /'
    echo "--- swarmtrace NDJSON ($1, $(wc -l < "$OUT/$1.ndjson") lines)"
    head -c 12000 "$OUT/$1.ndjson" | sed 's/^/  > /'
    echo "---"
}

# check SCENARIO NAME [args]: evaluates the NDJSON of a run, prints the result line.
check() {
    local scen=$1 name=$2
    shift 2
    local line
    line=$(python3 "$VM/check.py" "$scen" "$OUT/$name.ndjson" --kernel "$KTAG" "$@" 2>&1 | tail -n1)
    case "$line" in
        pass*) result "$scen" pass "${line#pass }" ;;
        *) result "$scen" fail "${line#fail }" ;;
    esac
}
