#!/usr/bin/env bash
# castari-gateway vs nginx, side by side, from one run.
#
# One nginx serves a static 1 KiB JSON as the upstream. nginx (a plain
# reverse proxy with upstream keepalive) and the gateway both sit in front
# of it. Servers are pinned to one core, wrk to the other. Measures
# pass-through throughput, server CPU per request, latency at a fixed
# request rate, and the gateway's RSS; prints a markdown table and writes
# it to bench/out/results.md. See bench/README.md.
#
# Usage: bash bench/run.sh            (no arguments; knobs are env vars)
#
#   DURATION=10          seconds per throughput run
#   LAT_DURATION=10      seconds per fixed-rate latency run
#   WARMUP=2             seconds of unmeasured load before each throughput run
#   RATE=5000            requests/s for the latency runs
#   CONNECTIONS=64       wrk connections for the throughput runs
#   RATE_CONNECTIONS=50  wrk connections for the latency runs
#   C1_DURATION=10       seconds per concurrency-1 run (one connection, closed loop)
#   SERVER_CPU=0         core for upstream, nginx, the floors and the gateway
#   LOAD_CPU=1           core for wrk
#   GATEWAY=1            0: nginx only (when the gateway does not build)
#   FLOORS=1             0: without the two proxy floors (examples/proxy_floor.rs)
#   BUILD=1              0: use the existing target/release binary
#   GATEWAY_BIN=...      gateway binary (default target/release/castari-gateway)
#   OUT_DIR=bench/out    where results.md and the raw wrk outputs go
#   PAGES=0              operator pages held open on the gateway during the
#                          runs (curl reading /admin/events), e.g. PAGES=20
#   MAX_OTHER=5          % of the servers' core other work may take during a
#   RETRIES=2              run; a run above it is repeated up to RETRIES times
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

DURATION=${DURATION:-10}
LAT_DURATION=${LAT_DURATION:-10}
WARMUP=${WARMUP:-2}
RATE=${RATE:-5000}
CONNECTIONS=${CONNECTIONS:-64}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-50}
C1_DURATION=${C1_DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
GATEWAY=${GATEWAY:-1}
FLOORS=${FLOORS:-1}
BUILD=${BUILD:-1}
GATEWAY_BIN=${GATEWAY_BIN:-$REPO_DIR/target/release/castari-gateway}
FLOOR_BIN=$REPO_DIR/target/release/examples/proxy_floor
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
PAGES=${PAGES:-0}
PAGE_PIDS=()
MAX_OTHER=${MAX_OTHER:-5}
RETRIES=${RETRIES:-2}

API_KEY=bench-key
BENCH_PATH=/api/v1/agents/bench
WHOAMI_PATH=/api/v1/bench/whoami
PAYLOAD=$BENCH_DIR/payload.json
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for v in DURATION LAT_DURATION C1_DURATION WARMUP RATE CONNECTIONS RATE_CONNECTIONS SERVER_CPU LOAD_CPU MAX_OTHER RETRIES GATEWAY FLOORS BUILD PAGES; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((RATE > 0 && RATE_CONNECTIONS > 0 && CONNECTIONS > 0 && DURATION > 0 && LAT_DURATION > 0)) ||
    die "RATE, CONNECTIONS, RATE_CONNECTIONS, DURATION and LAT_DURATION must be positive"

# ---------------------------------------------------------------- tools

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

install_tools
NPROC=$(nproc)
((SERVER_CPU < NPROC && LOAD_CPU < NPROC)) ||
    die "SERVER_CPU=$SERVER_CPU / LOAD_CPU=$LOAD_CPU: this machine has $NPROC cores"
((SERVER_CPU != LOAD_CPU)) || log "warning: servers and load generator share core $SERVER_CPU"

# ---------------------------------------------------------------- build

if ((GATEWAY)); then
    if ((BUILD)); then
        log "building the gateway (cargo build --release --bin castari-gateway)"
        (cd "$REPO_DIR" && cargo build --release --bin castari-gateway) ||
            die "the gateway does not build; GATEWAY=0 runs the nginx half alone"
    fi
    [[ -x $GATEWAY_BIN ]] || die "no gateway binary at $GATEWAY_BIN"
fi
if ((FLOORS)); then
    if ((BUILD)); then
        log "building the proxy floors (cargo build --release --example proxy_floor)"
        (cd "$REPO_DIR" && cargo build --release --example proxy_floor) ||
            die "examples/proxy_floor.rs does not build; FLOORS=0 runs without it"
    fi
    [[ -x $FLOOR_BIN ]] || die "no proxy floor binary at $FLOOR_BIN"
fi

# ---------------------------------------------------------------- processes

RUN=$(mktemp -d /tmp/castari-bench.XXXXXX)
chmod 755 "$RUN" # nginx workers may run as an unprivileged user
PIDS=()          # every process this script started (and nginx workers)

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

declare -A PORT MASTER WORKER CMD

# Starts a one-process server on core SERVER_CPU, records it as NAME and
# waits until http://127.0.0.1:PORT/healthz answers.
start_server() { # name port stdout-file command...
    local name=$1 port=$2 stdout=$3 pid
    shift 3
    local cmd=(taskset -c "$SERVER_CPU" "$@")
    CMD[$name]="${cmd[*]} >$stdout"
    "${cmd[@]}" >"$stdout" 2>"$RUN/$name.err" &
    pid=$!
    PIDS+=("$pid")
    PORT[$name]=$port
    MASTER[$name]=$pid
    WORKER[$name]=$pid
    wait_http "$name" "$pid" "http://127.0.0.1:$port/healthz"
}

start_gateway() { # name access_log(true|false) stdout-file
    local name=$1 access_log=$2 stdout=$3 port
    port=$(free_port)
    fill "$BENCH_DIR/gateway.toml" "PORT=$port" "UPSTREAM_PORT=${PORT[upstream]}" \
        "ACCESS_LOG=$access_log" >"$RUN/$name.toml"
    start_server "$name" "$port" "$stdout" env -u RUST_LOG TOKIO_WORKER_THREADS=1 \
        "CASTARI_API_KEY=$API_KEY" "$GATEWAY_BIN" serve --config "$RUN/$name.toml" \
        --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:${PORT[upstream]}"
}

start_floor() { # name client(hyper|reqwest)
    local name=$1 client=$2 port
    port=$(free_port)
    start_server "$name" "$port" /dev/null env TOKIO_WORKER_THREADS=1 "$FLOOR_BIN" "$client" \
        "127.0.0.1:$port" "http://127.0.0.1:${PORT[upstream]}"
}

# Checks that a target answers the benchmark request as the upstream does
# and, for a proxy, that the upstream saw the injected key.
check_target() { # name
    local name=$1 url out
    url="http://127.0.0.1:${PORT[$name]}"
    out=$(curl -s -o "$RUN/check-$name.body" -w '%{http_code} %{content_type}' --max-time 5 \
        "$url$BENCH_PATH") || die "$name: request failed"
    [[ $out == "200 application/json"* ]] || die "$name: GET $BENCH_PATH answered '$out'"
    cmp -s "$RUN/check-$name.body" "$PAYLOAD" || die "$name: body differs from payload.json"
    if [[ $name != upstream ]]; then
        out=$(curl -s --max-time 5 "$url$WHOAMI_PATH") || die "$name: whoami failed"
        [[ $out == "Bearer $API_KEY" ]] ||
            die "$name: upstream saw Authorization '$out', not 'Bearer $API_KEY'"
    fi
}

# ---------------------------------------------------------------- wrk

WRK_CMDS=()

declare -A TP_RPS TP_CPU TP_UPCPU TP_ERR TP_UPCONN TP_CSW TP_OTHER FR_RPS FR_P50 FR_P99 FR_ERR FR_OTHER
declare -A C1_P50 C1_P99 C1_ERR C1_OTHER

upstream_accepts() { # connections the upstream accepted so far (stub_status)
    curl -s --max-time 2 "http://127.0.0.1:${PORT[upstream]}/bench-status" |
        awk 'NR == 3 { print $1 }'
}

throughput_once() { # key (target name)
    local key=$1 url server up t0 t1 u0 u1 a0 a1 c0 c1 k0 k1 ours req rps err
    url="http://127.0.0.1:${PORT[$key]}$BENCH_PATH"
    server=${WORKER[$key]}
    up=${WORKER[upstream]}
    log "throughput: $key (${WARMUP}s warm-up, ${DURATION}s measured)"
    if ((WARMUP > 0)); then
        wrk_run "$RUN/warmup-$key.txt" "$WARMUP" -t1 "-c$CONNECTIONS" "-d${WARMUP}s" "$url"
    fi
    local args=(-t1 "-c$CONNECTIONS" "-d${DURATION}s" --latency "$url")
    record_cmd "taskset -c $LOAD_CPU wrk ${args[*]}    # throughput, $key"
    a0=$(upstream_accepts)
    c0=$(ctx_switches "$server")
    ours=("$server")
    if [[ $key != upstream ]]; then ours+=("$up"); fi
    k0=$(core_snapshot "$SERVER_CPU" "${ours[@]}")
    t0=$(cpu_ticks "$server")
    u0=$(cpu_ticks "$up")
    wrk_run "$OUT_DIR/raw/throughput-$key.txt" "$DURATION" "${args[@]}"
    t1=$(cpu_ticks "$server")
    u1=$(cpu_ticks "$up")
    k1=$(core_snapshot "$SERVER_CPU" "${ours[@]}")
    c1=$(ctx_switches "$server")
    a1=$(upstream_accepts)
    # minus one: the status request's own connection
    TP_UPCONN[$key]=$((a1 - a0 - 1))
    read -r req rps err _ _ < <(parse_wrk "$OUT_DIR/raw/throughput-$key.txt")
    ((req > 0)) || die "$key: wrk completed no request"
    TP_RPS[$key]=$rps
    TP_OTHER[$key]=$(other_pct "$k0" "$k1")
    TP_CSW[$key]=$(awk -v d=$((c1 - c0)) -v n="$req" 'BEGIN { printf "%.2f", d / n }')
    TP_ERR[$key]=$err
    TP_CPU[$key]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    if [[ $key != upstream ]]; then
        TP_UPCPU[$key]=$(awk -v d=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    fi
    log "  $rps req/s, ${TP_CPU[$key]} us CPU/request, $err errors"
}

fixed_rate_once() { # key
    local key=$1 url req rps err p50 p99 k0 k1 ours
    url="http://127.0.0.1:${PORT[$key]}$BENCH_PATH"
    log "latency at $RATE req/s: $key (${LAT_DURATION}s)"
    local args=(-t1 "-c$RATE_CONNECTIONS" "-d${LAT_DURATION}s" --latency
        -s "$BENCH_DIR/fixed-rate.lua" "$url" -- "$RATE" 1 "$RATE_CONNECTIONS")
    record_cmd "taskset -c $LOAD_CPU wrk ${args[*]}    # fixed rate, $key"
    ours=("${WORKER[$key]}")
    if [[ $key != upstream ]]; then ours+=("${WORKER[upstream]}"); fi
    k0=$(core_snapshot "$SERVER_CPU" "${ours[@]}")
    wrk_run "$OUT_DIR/raw/fixed-rate-$key.txt" "$LAT_DURATION" "${args[@]}"
    k1=$(core_snapshot "$SERVER_CPU" "${ours[@]}")
    FR_OTHER[$key]=$(other_pct "$k0" "$k1")
    read -r req rps err p50 p99 < <(parse_wrk "$OUT_DIR/raw/fixed-rate-$key.txt")
    ((req > 0)) || die "$key: wrk completed no request"
    FR_RPS[$key]=$rps
    FR_ERR[$key]=$err
    FR_P50[$key]=$p50
    FR_P99[$key]=$p99
    log "  achieved $rps req/s, p50 $p50 ms, p99 $p99 ms, $err errors"
}

# One connection, one request at a time: the method published gateway
# comparisons use for added latency (agentgateway, TensorZero).
c1_once() { # key
    local key=$1 url req rps err p50 p99 k0 k1 ours
    url="http://127.0.0.1:${PORT[$key]}$BENCH_PATH"
    log "concurrency 1: $key (${C1_DURATION}s)"
    local args=(-t1 -c1 "-d${C1_DURATION}s" --latency "$url")
    record_cmd "taskset -c $LOAD_CPU wrk ${args[*]}    # concurrency 1, $key"
    ours=("${WORKER[$key]}")
    if [[ $key != upstream ]]; then ours+=("${WORKER[upstream]}"); fi
    k0=$(core_snapshot "$SERVER_CPU" "${ours[@]}")
    wrk_run "$OUT_DIR/raw/c1-$key.txt" "$C1_DURATION" "${args[@]}"
    k1=$(core_snapshot "$SERVER_CPU" "${ours[@]}")
    C1_OTHER[$key]=$(other_pct "$k0" "$k1")
    read -r req rps err p50 p99 < <(parse_wrk "$OUT_DIR/raw/c1-$key.txt")
    ((req > 0)) || die "$key: wrk completed no request"
    C1_ERR[$key]=$err
    C1_P50[$key]=$p50
    C1_P99[$key]=$p99
    log "  $rps req/s, p50 $p50 ms, p99 $p99 ms, $err errors"
}

# Repeats a run whose servers' core was shared with other work (another
# build, a test suite) beyond MAX_OTHER %, up to RETRIES more times.
REPEATS=()
retry_if_disturbed() { # once-function result-array key
    local fn=$1 key=$3 attempt
    local -n other=$2
    for ((attempt = 0; ; attempt++)); do
        "$fn" "$key"
        ((${other[$key]} <= MAX_OTHER)) && return 0
        if ((attempt >= RETRIES)); then
            log "  warning: ${other[$key]}% of the servers' core went to other work; kept as is"
            return 0
        fi
        log "  ${other[$key]}% of the servers' core went to other work; running it again in 5 s"
        REPEATS+=("${fn%_once} $key (${other[$key]}%);")
        sleep 5
    done
}
throughput() { retry_if_disturbed throughput_once TP_OTHER "$1"; }
fixed_rate() { retry_if_disturbed fixed_rate_once FR_OTHER "$1"; }
c1() { retry_if_disturbed c1_once C1_OTHER "$1"; }

# ---------------------------------------------------------------- run

mkdir -p "$OUT_DIR/raw"
rm -f "$OUT_DIR"/raw/*.txt
mkdir -p "$RUN/www${BENCH_PATH%/*}"
cp "$PAYLOAD" "$RUN/www$BENCH_PATH"
chmod -R a+rX "$RUN/www"

BUSY=$(busy_pct)
((BUSY > 10)) && log "warning: the machine was ${BUSY}% busy before the run; numbers will be noisy"

log "starting upstream nginx"
start_nginx upstream "$BENCH_DIR/nginx/upstream.conf"
wait_http "upstream" "${WORKER[upstream]}" "http://127.0.0.1:${PORT[upstream]}/healthz"
log "starting nginx proxy"
start_nginx nginx "$BENCH_DIR/nginx/proxy.conf" "UPSTREAM_PORT=${PORT[upstream]}"
wait_http "nginx proxy" "${WORKER[nginx]}" "http://127.0.0.1:${PORT[nginx]}$BENCH_PATH"

TARGETS=(upstream nginx)
declare -A RSS_IDLE RSS_LOADED
if ((FLOORS)); then
    log "starting the proxy floors (hyper client, reqwest client)"
    start_floor floor_hyper hyper
    start_floor floor_reqwest reqwest
    TARGETS+=(floor_hyper floor_reqwest)
fi
if ((GATEWAY)); then
    log "starting gateway (access log off)"
    start_gateway gateway false "$RUN/gateway.log"
    open_pages "${PORT[gateway]}" "$PAGES"
    log "starting gateway (access log on, stdout to /dev/null)"
    start_gateway gateway_log true /dev/null
    TARGETS+=(gateway gateway_log)
fi

proc_rss_kib() { # name: master + worker for nginx, the process for the gateway
    local name=$1 total
    total=$(rss_kib "${WORKER[$name]}")
    if [[ ${MASTER[$name]} != "${WORKER[$name]}" ]]; then
        total=$((total + $(rss_kib "${MASTER[$name]}")))
    fi
    echo "$total"
}

sleep 1
for t in "${TARGETS[@]}"; do RSS_IDLE[$t]=$(proc_rss_kib "$t"); done
for t in "${TARGETS[@]}"; do check_target "$t"; done
log "all targets answer $BENCH_PATH with payload.json; proxies inject the key"

for t in "${TARGETS[@]}"; do throughput "$t"; done
for t in upstream nginx floor_hyper floor_reqwest gateway; do
    if [[ -n ${PORT[$t]:-} ]]; then fixed_rate "$t"; fi
done
for t in upstream nginx floor_hyper floor_reqwest gateway; do
    if [[ -n ${PORT[$t]:-} ]]; then c1 "$t"; fi
done
for t in "${TARGETS[@]}"; do RSS_LOADED[$t]=$(proc_rss_kib "$t"); done

AFFINITY=()
for t in "${TARGETS[@]}"; do
    AFFINITY+=("$t: $(taskset -cp "${WORKER[$t]}" 2>/dev/null | sed 's/.*: //')")
done

# ---------------------------------------------------------------- report

num() { # printf format, value ("" or "-" prints an en dash)
    # shellcheck disable=SC2059 # the format is always a literal from this file
    if [[ -z ${2:-} || $2 == - ]]; then printf '–'; else LC_ALL=C printf "$1" "$2"; fi
}
ratio() { # a b -> "a/b x"
    if [[ -z ${1:-} || -z ${2:-} ]]; then printf '–'; else awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) printf "–"; else printf "%.2fx", a / b }'; fi
}
mib() {
    if [[ -n ${1:-} ]]; then awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; fi
}
sub_ms() {
    if [[ -n ${1:-} && -n ${2:-} ]]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; fi
}
per_core() {
    if [[ -n ${1:-} ]]; then awk -v c="$1" 'BEGIN { if (c > 0) printf "%.0f", 1e6 / c }'; fi
}
pf() {
    if [[ $1 == 1 ]]; then printf 'PASS'; else printf 'FAIL'; fi
}

# Columns of the table, in order; a target that did not run prints dashes.
COLUMNS=(upstream nginx floor_hyper floor_reqwest gateway gateway_log)
declare -A FR_ADD FR_ADD99 C1_ADD99 TP_NORM
for t in nginx floor_hyper floor_reqwest gateway gateway_log; do
    if [[ -n ${TP_CPU[$t]:-} && -n ${TP_UPCPU[$t]:-} ]]; then
        TP_NORM[$t]=$(awk -v c="${TP_CPU[$t]}" -v u="${TP_UPCPU[$t]}" 'BEGIN { if (u > 0) printf "%.2f", c / u }')
    fi
done
for t in nginx floor_hyper floor_reqwest gateway; do
    FR_ADD[$t]=$(sub_ms "${FR_P50[$t]:-}" "${FR_P50[upstream]:-}")
    FR_ADD99[$t]=$(sub_ms "${FR_P99[$t]:-}" "${FR_P99[upstream]:-}")
    C1_ADD99[$t]=$(sub_ms "${C1_P99[$t]:-}" "${C1_P99[upstream]:-}")
done
ADD_NGINX=${FR_ADD[nginx]}
ADD_GW=${FR_ADD[gateway]}
TP_RATIO=
PASS_CPU=
PASS_LAT=
PASS_LAT99=
PASS_RSS=
if ((GATEWAY)); then
    TP_RATIO=$(awk -v a="${TP_RPS[gateway]}" -v b="${TP_RPS[nginx]}" 'BEGIN { printf "%.2f", a / b }')
    PASS_LAT=$(pf "$(awk -v g="$ADD_GW" -v n="$ADD_NGINX" 'BEGIN { print (g <= n) ? 1 : 0 }')")
    PASS_LAT99=$(pf "$(awk -v g="${FR_ADD99[gateway]}" -v n="${FR_ADD99[nginx]}" 'BEGIN { print (g <= n) ? 1 : 0 }')")
    PASS_RSS=$(pf "$(awk -v k="${RSS_IDLE[gateway]}" 'BEGIN { print (k < 20 * 1024) ? 1 : 0 }')")
    if [[ -n ${TP_CPU[floor_hyper]:-} ]]; then
        PASS_CPU=$(pf "$(awk -v g="${TP_CPU[gateway]}" -v f="${TP_CPU[floor_hyper]}" 'BEGIN { print (g <= 1.2 * f) ? 1 : 0 }')")
    fi
fi
ADD_RATIO=
if [[ -n $ADD_GW ]]; then
    ADD_RATIO=$(awk -v a="$ADD_GW" -v b="$ADD_NGINX" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "–" }')
fi

row() { # metric, one cell per column, ratio, target, result
    local c out="|"
    for c in "$@"; do out+=" ${c:-–} |"; done
    printf '%s\n' "$out"
}

# One row: a metric, a value per column from an associative array, then
# the ratio, target and result cells.
metric() { # label format(printf, or "raw", or "mib", or "core") array ratio target result
    local label=$1 format=$2 ratio=$4 target=$5 result=$6 t v cells=()
    local -n values=$3
    for t in "${COLUMNS[@]}"; do
        v=${values[$t]:-}
        case $format in
        raw) cells+=("$v") ;;
        mib) cells+=("$(mib "$v")") ;;
        core) cells+=("$(per_core "$v")") ;;
        *) cells+=("$(num "$format" "$v")") ;;
        esac
    done
    row "$label" "${cells[@]}" "$ratio" "$target" "$result"
}

table() {
    echo "| metric | upstream direct | nginx | hyper proxy floor | reqwest proxy floor | gateway | gateway + access log | gateway / nginx | target | result |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
    metric "throughput, req/s (wrk -t1 -c$CONNECTIONS, ${DURATION} s)" %.0f TP_RPS \
        "$(ratio "${TP_RPS[gateway]:-}" "${TP_RPS[nginx]:-}")" "" ""
    metric "server CPU per request, µs (user+sys)" %.1f TP_CPU \
        "$(ratio "${TP_CPU[gateway]:-}" "${TP_CPU[nginx]:-}")" "≤ 1.2x hyper floor ($(ratio "${TP_CPU[gateway]:-}" "${TP_CPU[floor_hyper]:-}"))" "$PASS_CPU"
    metric "CPU per request ÷ the upstream nginx's in the same run" %.2f TP_NORM \
        "$(ratio "${TP_NORM[gateway]:-}" "${TP_NORM[nginx]:-}")" "≤ 1.2x hyper floor ($(ratio "${TP_NORM[gateway]:-}" "${TP_NORM[floor_hyper]:-}"))" ""
    metric "implied req/s per full core (1e6 / CPU per request)" core TP_CPU "" "" ""
    metric "server context switches per request" %.2f TP_CSW "" "" ""
    metric "upstream nginx CPU per request in the same run, µs" %.1f TP_UPCPU "" "" ""
    metric "connections the upstream accepted during the run" raw TP_UPCONN "" "" ""
    metric "other load on the servers' core during the throughput run, %" raw TP_OTHER "" "≈ 0" ""
    metric "throughput run errors (non-2xx + socket)" raw TP_ERR "" "0" ""
    metric "fixed rate: achieved req/s (asked $RATE, -c$RATE_CONNECTIONS, ${LAT_DURATION} s)" %.0f FR_RPS "" "" ""
    metric "fixed rate: p50 latency, ms" %.3f FR_P50 "" "" ""
    metric "fixed rate: p99 latency, ms" %.3f FR_P99 "" "" ""
    metric "fixed rate: added median latency (p50 − direct p50), ms" %.3f FR_ADD \
        "$ADD_RATIO" "≤ nginx" "$PASS_LAT"
    metric "fixed rate: added p99 latency (p99 − direct p99), ms" %.3f FR_ADD99 \
        "$(ratio "${FR_ADD99[gateway]:-}" "${FR_ADD99[nginx]:-}")" "≤ nginx" "$PASS_LAT99"
    metric "concurrency 1: p50 latency, ms (wrk -t1 -c1, ${C1_DURATION} s)" %.3f C1_P50 "" "" ""
    metric "concurrency 1: p99 latency, ms" %.3f C1_P99 "" "" ""
    metric "concurrency 1: added p99 (p99 − direct p99), ms" %.3f C1_ADD99 \
        "$(ratio "${C1_ADD99[gateway]:-}" "${C1_ADD99[nginx]:-}")" "" ""
    metric "other load on the servers' core during the concurrency-1 run, %" raw C1_OTHER "" "≈ 0" ""
    metric "other load on the servers' core during the fixed-rate run, %" raw FR_OTHER "" "≈ 0" ""
    metric "fixed rate errors (non-2xx + socket)" raw FR_ERR "" "0" ""
    metric "RSS idle after start, MiB (nginx: master + worker)" mib RSS_IDLE "" "gateway < 20 MiB" "$PASS_RSS"
    metric "RSS after the load runs, MiB" mib RSS_LOADED "" "" ""
}

facts() {
    local model kernel nginx_v wrk_v gw_v rev
    model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    kernel=$(uname -sr)
    nginx_v=$(nginx -v 2>&1 | sed 's/^nginx version: //')
    wrk_v=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }')
    gw_v=–
    ((GATEWAY)) && gw_v=$("$GATEWAY_BIN" --version 2>/dev/null || echo '?')
    rev=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo 'no commit')
    [[ -n $(git -C "$REPO_DIR" status --porcelain 2>/dev/null | head -n 1) ]] && rev+=" (+ uncommitted changes)"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $NPROC cores, ${model:-unknown CPU}, $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $kernel"
    echo "- machine busy before the run: ${BUSY}% of all cores"
    echo "- operator pages open on the gateway: $PAGES"
    if ((${#REPEATS[@]} > 0)); then
        echo "- runs repeated because other work took > ${MAX_OTHER}% of the servers' core: ${REPEATS[*]}"
    fi
    echo "- nginx $nginx_v, wrk $wrk_v, gateway: $gw_v, git $rev"
    echo "- servers (upstream nginx, nginx proxy, proxy floors, gateway) pinned to core $SERVER_CPU, wrk to core $LOAD_CPU"
    echo "- request: GET $BENCH_PATH, 1024-byte application/json body (bench/payload.json)"
    echo "- every proxy adds \`Authorization: Bearer $API_KEY\` upstream and keeps upstream connections alive"
    if ((FLOORS)); then
        echo "- proxy floors: examples/proxy_floor.rs, the gateway's hyper server and only a proxy's least work, with hyper-util's pooled client or with reqwest"
    fi
}

commands() {
    local t
    echo '```'
    echo "# servers (core $SERVER_CPU); configs are bench/nginx/upstream.conf, bench/nginx/proxy.conf"
    echo "# and bench/gateway.toml with their @...@ placeholders filled in"
    for t in "${TARGETS[@]}"; do echo "${CMD[$t]}"; done
    echo "# load (core $LOAD_CPU); warm-up runs of ${WARMUP}s without --latency precede each throughput run"
    printf '%s\n' "${WRK_CMDS[@]}"
    echo "# CPU affinity as measured: ${AFFINITY[*]}"
    echo '```'
}

REPORT=$(
    echo "## castari-gateway vs nginx: pass-through benchmark"
    echo
    facts
    echo
    table
    echo
    echo "CPU per request is utime+stime of the server process (nginx: its worker; gateway and floors: all threads) over the measured wrk run, divided by the requests wrk completed. The upstream nginx shares the servers' core with the proxy under test, so proxy throughput is what is left of one core after the upstream's share (the row \"upstream nginx CPU per request\")."
    echo
    echo "### How it ran"
    echo
    echo "\`bash bench/run.sh\` with DURATION=$DURATION LAT_DURATION=$LAT_DURATION WARMUP=$WARMUP RATE=$RATE CONNECTIONS=$CONNECTIONS RATE_CONNECTIONS=$RATE_CONNECTIONS GATEWAY=$GATEWAY FLOORS=$FLOORS"
    echo
    commands
)

printf '%s\n' "$REPORT" >"$OUT_DIR/results.md"
echo
printf '%s\n' "$REPORT"
echo
log "written to $OUT_DIR/results.md (raw wrk output in $OUT_DIR/raw/)"
