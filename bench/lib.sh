# Helpers shared by bench/run.sh and bench/cache.sh: process bookkeeping,
# CPU and memory readings, nginx start-up, wrk runs and their parsing.
# Sourced, not run. The caller defines RUN, PIDS, PORT, MASTER, WORKER, CMD,
# WRK_CMDS, SERVER_CPU, LOAD_CPU, CLK_TCK and log/die.

install_tools() {
    local pkgs=()
    command -v nginx >/dev/null 2>&1 || pkgs+=(nginx-light)
    command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
    command -v taskset >/dev/null 2>&1 || pkgs+=(util-linux)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
    local extra
    for extra in "$@"; do # more packages, named like their command
        command -v "$extra" >/dev/null 2>&1 || pkgs+=("$extra")
    done
    ((${#pkgs[@]} == 0)) && return 0
    ((EUID == 0)) || die "missing tools (${pkgs[*]}): run as root or apt-get install them"
    command -v apt-get >/dev/null 2>&1 || die "missing tools (${pkgs[*]}) and no apt-get"
    log "installing ${pkgs[*]}"
    # The nginx package's init script would start a system nginx on :80;
    # a policy-rc.d that says 101 ("not allowed") keeps it from starting.
    local policy=/usr/sbin/policy-rc.d added=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added=1
    fi
    local rc=0
    apt-get update -qq || rc=$?
    if ((rc == 0)); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" ||
            rc=$?
        if ((rc != 0)) && [[ " ${pkgs[*]} " == *" nginx-light "* ]]; then
            # Debian releases after bookworm dropped nginx-light.
            rc=0
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${pkgs[@]/nginx-light/nginx}" || rc=$?
        fi
    fi
    ((added)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get failed"
}

pid_state() { # prints the state letter of a pid, nothing if gone
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    printf '%s' "${stat%% *}"
}

alive() {
    local s
    s=$(pid_state "$1")
    [[ -n $s && $s != Z && $s != X ]]
}

cleanup() {
    local rc=$? pid i any
    set +e
    trap - INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for ((i = 0; i < 50; i++)); do
        any=0
        for pid in "${PIDS[@]}"; do alive "$pid" && any=1; done
        ((any)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do alive "$pid" && kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if ((rc != 0)); then
        local f
        for f in "$RUN"/*.log "$RUN"/*.err; do
            [[ -s $f ]] || continue
            log "---- tail of $(basename "$f")"
            tail -n 20 "$f" >&2
        done
    fi
    rm -rf "$RUN"
    exit "$rc"
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

child_pids() { # direct children of a pid
    local f
    if [[ -r /proc/$1/task/$1/children ]]; then
        cat "/proc/$1/task/$1/children"
        return
    fi
    for f in /proc/[0-9]*/stat; do
        local stat
        stat=$(cat "$f" 2>/dev/null) || continue
        stat=${stat##*) }
        read -r _ ppid _ <<<"$stat"
        if [[ $ppid == "$1" ]]; then
            f=${f#/proc/}
            echo "${f%/stat}"
        fi
    done
}

cpu_ticks() { # utime + stime of a process (all its threads), clock ticks
    local stat
    stat=$(cat "/proc/$1/stat") || die "process $1 is gone"
    stat=${stat##*) }
    # after "pid (comm) ": state is field 1, utime 12, stime 13
    awk '{ print $12 + $13 }' <<<"$stat"
}

runtime_ns() { # CPU time of a process, all threads, ns (the scheduler's own count)
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# "wall_ns idle_ns ours_ns": the clock, the idle time of a core (precise on
# tickless kernels, unlike the busy columns of /proc/stat, which are sampled
# by ticks and overcount a core that wakes often) and the CPU time of the
# given processes.
core_snapshot() { # cpu pid...
    local cpu=$1 wall idle ours=0 pid
    shift
    wall=$(date +%s%N)
    idle=$(awk -v c="cpu$cpu" -v hz="$CLK_TCK" '$1 == c { printf "%.0f", ($5 + $6) * 1e9 / hz }' /proc/stat)
    for pid in "$@"; do ours=$((ours + $(runtime_ns "$pid"))); done
    echo "$wall $idle $ours"
}

ctx_switches() { # voluntary + involuntary context switches over all threads
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

rss_kib() { # VmRSS of a process, KiB
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

http_ok() { # url -> 0 when it answers 200
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null) == 200 ]]
}

wait_http() { # name pid url
    local i
    for ((i = 0; i < 150; i++)); do
        alive "$2" || die "$1 exited during startup"
        http_ok "$3" && return 0
        sleep 0.1
    done
    die "$1 did not answer $3 within 15 s"
}

fill() { # template -> stdout, with @KEY@ replaced by the given KEY=value pairs
    local template=$1 kv args=()
    shift
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$template"
}

nginx_common() { # writes $RUN/common-http.conf once: temp paths inside the run dir, not the distribution's /var/lib/nginx
    [[ -f $RUN/common-http.conf ]] && return
    local build m
    build=$(nginx -V 2>&1)
    {
        echo "client_body_temp_path $RUN/tmp-body;"
        echo "proxy_temp_path $RUN/tmp-proxy;"
        # A module built out has no directive for its temp path.
        for m in fastcgi uwsgi scgi; do
            [[ $build == *--without-http_${m}_module* ]] || echo "${m}_temp_path $RUN/tmp-$m;"
        done
    } >"$RUN/common-http.conf"
}

start_nginx() { # name template [extra KEY=value...]
    local name=$1 template=$2 port master worker i
    shift 2
    nginx_common
    port=$(free_port)
    mkdir -p "$RUN/$name"
    fill "$template" "RUN=$RUN" "PORT=$port" "API_KEY=$API_KEY" "$@" >"$RUN/$name.conf"
    CMD[$name]="taskset -c $SERVER_CPU nginx -p $RUN/$name -e $RUN/$name-error.log -c $RUN/$name.conf"
    taskset -c "$SERVER_CPU" nginx -p "$RUN/$name" -e "$RUN/$name-error.log" \
        -c "$RUN/$name.conf" >"$RUN/$name.log" 2>&1 &
    master=$!
    PIDS+=("$master")
    worker=
    for ((i = 0; i < 100; i++)); do
        alive "$master" || die "nginx ($name) exited during startup"
        read -r worker _ < <(child_pids "$master") || true
        [[ -n $worker ]] && break
        sleep 0.1
    done
    [[ -n $worker ]] || die "nginx ($name) started no worker"
    PIDS+=("$worker")
    PORT[$name]=$port
    MASTER[$name]=$master
    WORKER[$name]=$worker
}

open_pages() { # port count: COUNT operator pages (/admin/events streams) on LOAD_CPU
    # Each is a curl reading the stream to /dev/null, as an open page
    # would, ended by cleanup (or after an hour at the latest).
    local port=$1 count=$2 i pid
    ((count > 0)) || return 0
    for ((i = 0; i < count; i++)); do
        taskset -c "$LOAD_CPU" curl -sSN --max-time 3600 \
            "http://127.0.0.1:$port/admin/events" >/dev/null 2>&1 &
        pid=$!
        PIDS+=("$pid")
        PAGE_PIDS+=("$pid")
    done
    sleep 2
    for pid in "${PAGE_PIDS[@]}"; do
        alive "$pid" || die "an operator page's stream did not stay open (port $port)"
    done
    log "$count operator pages open on the gateway (/admin/events)"
}

record_cmd() { # adds a command line to the report once
    local c
    for c in "${WRK_CMDS[@]}"; do [[ $c == "$1" ]] && return 0; done
    WRK_CMDS+=("$1")
}

wrk_run() { # outfile seconds wrk-args...
    local out=$1 secs=$2
    shift 2
    timeout --kill-after=5 $((secs + 30)) taskset -c "$LOAD_CPU" wrk "$@" >"$out" 2>&1 ||
        die "wrk failed: $(tail -n 3 "$out")"
}

# Prints "requests rps errors p50_ms p99_ms" from wrk output.
parse_wrk() {
    awk '
    function ms(v,   n, u) {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") return n / 1000
        if (u == "s") return n * 1000
        if (u == "m") return n * 60000
        if (u == "h") return n * 3600000
        return n
    }
    / requests in / { req = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { err += $NF }
    /Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%d %.2f %d %.4f %.4f\n", req, rps, err, p50, p99 }
    ' "$1"
}

# Busy time on the servers' core that was neither the server nor the
# upstream, in % of the run: other work on the machine competing with it.
other_pct() { # core_snapshot-before core_snapshot-after
    local w0 i0 o0 w1 i1 o1
    read -r w0 i0 o0 <<<"$1"
    read -r w1 i1 o1 <<<"$2"
    awk -v e=$((w1 - w0)) -v other=$((w1 - w0 - (i1 - i0) - (o1 - o0))) 'BEGIN {
        o = (e > 0) ? 100 * other / e : 0
        printf "%.0f", (o < 0) ? 0 : o }'
}

# How busy the machine is before we start (other jobs skew the numbers).
busy_pct() {
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2+$3+$4+$6+$7+$8, $2+$3+$4+$5+$6+$7+$8 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; printf "%.0f", (t > 0) ? 100 * (y[1] - x[1]) / t : 0 }'
}
