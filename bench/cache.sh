#!/usr/bin/env bash
# Cache-hit benchmark: castari-gateway vs nginx proxy_cache vs HAProxy's
# cache, side by side, from one run.
#
# One nginx serves two static JSON bodies (1 KiB and 20 KiB) as the
# upstream. nginx (proxy_cache), HAProxy (cache) and the gateway (its
# defaults, cache and shaper on) sit in front of it; each is primed so that
# every measured request is a hit, and the upstream's request counter is read
# around each run to prove it. Servers are pinned to one core, wrk to the
# other. For each body size: saturated throughput and latency (wrk -c64),
# latency at a fixed request rate, and CPU per request; the direct upstream
# at the same rate is the baseline for "added latency". A fifth column,
# "hyper floor" (examples/hyper_floor.rs), is the gateway's own server stack
# answering the same bytes from memory with nothing else: what is left
# between it and the gateway is the gateway's per-hit work. With
# FLOOR_BIN=target/release/examples/hit_work_floor that column is the
# hit-work floor instead: the hyper floor plus the part of a hit the gateway
# cannot leave out, done by the gateway's own code (the most the gateway
# could reach if the rest of a hit cost nothing); HIT_WORK=bound makes it
# less than any gateway can do (examples/hit_work_floor.rs). Prints a
# markdown table and writes it to bench/out/cache-results.md. See
# bench/README.md.
#
# Usage: bash bench/cache.sh           (no arguments; knobs are env vars)
#
#   ROUNDS=3 DURATION=5 WARMUP=1 CONNECTIONS=64          (throughput runs)
#   LAT_ROUNDS=7 LAT_DURATION=5 RATE=5000 RATE_CONNECTIONS=50 (fixed-rate runs)
#   SERVER_CPU=0 LOAD_CPU=1 BUILD=1 OUT_DIR=bench/out
#   GATEWAY_BIN=target/release/castari-gateway
#   PAGES=0   operator pages held open on the gateway (curl reading /admin/events)
#   FLOOR_BIN=target/release/examples/hyper_floor  (relative to the repository)
#   WORK_FLOORS=0   1: two more columns, the hit-work floor and its bound
#                   (examples/hit_work_floor.rs, HIT_WORK=required and bound)
#
# Every target is measured ROUNDS times at saturation and LAT_ROUNDS times
# at the fixed rate, the targets taking turns, and the table shows the
# median of each figure: on a shared virtual machine single runs of the same
# target differ by up to a third, and a single fixed-rate p99 by up to 50x
# (in nine 3-second rounds the direct upstream's own p99 ranged from 0.39
# to 18 ms: the machine stalls now and then). The p99 row also counts the
# rounds in which the gateway's p99 was at or below both peers' in the same
# round.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
LAT_ROUNDS=${LAT_ROUNDS:-7}
LAT_DURATION=${LAT_DURATION:-5}
WARMUP=${WARMUP:-1}
RATE=${RATE:-5000}
CONNECTIONS=${CONNECTIONS:-64}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-50}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BUILD=${BUILD:-1}
GATEWAY_BIN=${GATEWAY_BIN:-$REPO_DIR/target/release/castari-gateway}
FLOOR_BIN=${FLOOR_BIN:-$REPO_DIR/target/release/examples/hyper_floor}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
PAGES=${PAGES:-0}
WORK_FLOORS=${WORK_FLOORS:-0}
WORK_FLOOR_BIN=$REPO_DIR/target/release/examples/hit_work_floor
PAGE_PIDS=()

API_KEY=bench-key
CLK_TCK=$(getconf CLK_TCK)
# Cacheable Castari routes (GET /buckets/{slug}), one per body size.
declare -A SIZE_PATH=([1k]=/api/v1/buckets/bench [20k]=/api/v1/buckets/bench20)
declare -A SIZE_FILE=([1k]=$BENCH_DIR/payload.json [20k]=$BENCH_DIR/payload-20k.json)
SIZES=(1k 20k)
TARGETS=(upstream nginx haproxy gateway floor)
WORK_TARGETS=(required bound)

log() { printf '[cache-bench] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for v in ROUNDS DURATION LAT_ROUNDS LAT_DURATION WARMUP RATE CONNECTIONS RATE_CONNECTIONS SERVER_CPU LOAD_CPU PAGES; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((ROUNDS > 0 && LAT_ROUNDS > 0 && RATE > 0 && DURATION > 0 && LAT_DURATION > 0 && CONNECTIONS > 0 && RATE_CONNECTIONS > 0)) ||
    die "ROUNDS, LAT_ROUNDS, RATE, DURATION, LAT_DURATION, CONNECTIONS and RATE_CONNECTIONS must be positive"

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

install_tools haproxy
NPROC=$(nproc)
((SERVER_CPU < NPROC && LOAD_CPU < NPROC)) ||
    die "SERVER_CPU=$SERVER_CPU / LOAD_CPU=$LOAD_CPU: this machine has $NPROC cores"

if ((BUILD)); then
    log "building the gateway and the hit floors (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release --bin castari-gateway --example hyper_floor \
        --example hit_work_floor) ||
        die "the gateway does not build"
fi
[[ -x $GATEWAY_BIN ]] || die "no gateway binary at $GATEWAY_BIN"
[[ $FLOOR_BIN == /* ]] || FLOOR_BIN=$REPO_DIR/$FLOOR_BIN
[[ -x $FLOOR_BIN ]] || die "no floor binary at $FLOOR_BIN"
[[ $WORK_FLOORS == 0 || $WORK_FLOORS == 1 ]] || die "WORK_FLOORS must be 0 or 1"
if ((WORK_FLOORS)); then
    [[ -x $WORK_FLOOR_BIN ]] || die "no hit-work floor binary at $WORK_FLOOR_BIN"
    TARGETS+=("${WORK_TARGETS[@]}")
fi
# The floor column's name: which floor FLOOR_BIN is (HIT_WORK=bound, passed
# on in the environment, makes the hit-work floor its lower bound).
case $(basename "$FLOOR_BIN") in
hit_work_floor) FLOOR_LABEL="hit-work floor${HIT_WORK:+ ($HIT_WORK)}" ;;
*)
    [[ -z ${HIT_WORK:-} ]] || die "HIT_WORK is for FLOOR_BIN=…/hit_work_floor (or use WORK_FLOORS=1)"
    FLOOR_LABEL="hyper floor"
    ;;
esac

RUN=$(mktemp -d /tmp/castari-cache-bench.XXXXXX)
chmod 755 "$RUN"
PIDS=()
WRK_CMDS=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
declare -A PORT MASTER WORKER CMD

start_haproxy() {
    local port pid
    port=$(free_port)
    fill "$BENCH_DIR/haproxy/cache.cfg" "RUN=$RUN" "PORT=$port" "API_KEY=$API_KEY" \
        "UPSTREAM_PORT=${PORT[upstream]}" >"$RUN/haproxy.cfg"
    haproxy -c -q -f "$RUN/haproxy.cfg" || die "haproxy rejects its config"
    CMD[haproxy]="taskset -c $SERVER_CPU haproxy -db -f $RUN/haproxy.cfg"
    taskset -c "$SERVER_CPU" haproxy -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    PORT[haproxy]=$port
    MASTER[haproxy]=$pid
    WORKER[haproxy]=$pid
}

start_gateway() {
    local port pid
    port=$(free_port)
    fill "$BENCH_DIR/gateway-cache.toml" "PORT=$port" "UPSTREAM_PORT=${PORT[upstream]}" >"$RUN/gateway.toml"
    local cmd=(taskset -c "$SERVER_CPU" env -u RUST_LOG TOKIO_WORKER_THREADS=1
        "CASTARI_API_KEY=$API_KEY" "$GATEWAY_BIN" serve --config "$RUN/gateway.toml")
    CMD[gateway]="${cmd[*]}"
    "${cmd[@]}" >"$RUN/gateway.log" 2>"$RUN/gateway.err" &
    pid=$!
    PIDS+=("$pid")
    PORT[gateway]=$port
    MASTER[gateway]=$pid
    WORKER[gateway]=$pid
    wait_http "gateway" "$pid" "http://127.0.0.1:$port/healthz"
}

start_floor() { # [name binary mode]: the floor column, or a work floor
    local name=${1:-floor} bin=${2:-$FLOOR_BIN} mode=${3:-${HIT_WORK:-}} port pid
    port=$(free_port)
    local cmd=(taskset -c "$SERVER_CPU" env -u HIT_WORK TOKIO_WORKER_THREADS=1
        ${mode:+"HIT_WORK=$mode"} "$bin" "127.0.0.1:$port"
        "${SIZE_PATH[1k]}=${SIZE_FILE[1k]}" "${SIZE_PATH[20k]}=${SIZE_FILE[20k]}")
    CMD[$name]="${cmd[*]}"
    "${cmd[@]}" >"$RUN/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    PORT[$name]=$port
    MASTER[$name]=$pid
    WORKER[$name]=$pid
    wait_http "$name" "$pid" "http://127.0.0.1:$port/healthz"
}

upstream_requests() { # requests the upstream nginx has served (stub_status)
    curl -s --max-time 2 "http://127.0.0.1:${PORT[upstream]}/bench-status" |
        awk 'NR == 3 { print $3 }'
}

# Same body as the upstream file; primes the cache (two requests), then
# checks that a third request does not reach the upstream.
prime_and_check() { # target size
    local name=$1 size=$2 url before after
    url="http://127.0.0.1:${PORT[$name]}${SIZE_PATH[$size]}"
    curl -s -o /dev/null --max-time 5 "$url" || die "$name: request failed"
    curl -s -o /dev/null --max-time 5 "$url" || die "$name: request failed"
    before=$(upstream_requests)
    curl -s -o "$RUN/check.body" --max-time 5 "$url" || die "$name: request failed"
    after=$(upstream_requests)
    cmp -s "$RUN/check.body" "${SIZE_FILE[$size]}" || die "$name: $size body differs from the upstream's"
    if [[ $name != upstream ]] && ((after - before != 1)); then # the status request itself is one
        die "$name: a primed $size request still reached the upstream ($((after - before - 1)))"
    fi
}

declare -A RPS SAT_P50 SAT_P99 CPU UPREQ FR_P50 FR_P99 FR_RPS ERR FR_ERR P99_WINS

measure_throughput() { # target size round
    local name=$1 size=$2 round=$3 url key req rps err p50 p99 t0 t1 u0 u1 args
    key="$name/$size/$round"
    url="http://127.0.0.1:${PORT[$name]}${SIZE_PATH[$size]}"
    log "throughput: $key (${WARMUP}s warm-up, ${DURATION}s measured)"
    ((WARMUP > 0)) && wrk_run "$RUN/warmup.txt" "$WARMUP" -t1 "-c$CONNECTIONS" "-d${WARMUP}s" "$url"
    args=(-t1 "-c$CONNECTIONS" "-d${DURATION}s" --latency "$url")
    record_cmd "taskset -c $LOAD_CPU wrk ${args[*]}"
    u0=$(upstream_requests)
    t0=$(cpu_ticks "${WORKER[$name]}")
    wrk_run "$OUT_DIR/raw/cache-throughput-${name}-${size}-${round}.txt" "$DURATION" "${args[@]}"
    t1=$(cpu_ticks "${WORKER[$name]}")
    u1=$(upstream_requests)
    read -r req rps err p50 p99 < <(parse_wrk "$OUT_DIR/raw/cache-throughput-${name}-${size}-${round}.txt")
    ((req > 0)) || die "$key: wrk completed no request"
    RPS[$key]=$rps
    SAT_P50[$key]=$p50
    SAT_P99[$key]=$p99
    ERR[$key]=$err
    CPU[$key]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$req" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
    UPREQ[$key]=$((u1 - u0 - 1))
    log "  $rps req/s, p99 $p99 ms, ${CPU[$key]} us CPU/request, upstream saw ${UPREQ[$key]}"
}

measure_rate() { # target size round
    local name=$1 size=$2 round=$3 url key req rps err p50 p99 args
    key="$name/$size/$round"
    url="http://127.0.0.1:${PORT[$name]}${SIZE_PATH[$size]}"
    log "latency at $RATE req/s: $key (${LAT_DURATION}s)"
    args=(-t1 "-c$RATE_CONNECTIONS" "-d${LAT_DURATION}s" --latency
        -s "$BENCH_DIR/fixed-rate.lua" "$url" -- "$RATE" 1 "$RATE_CONNECTIONS")
    record_cmd "taskset -c $LOAD_CPU wrk ${args[*]}"
    wrk_run "$OUT_DIR/raw/cache-rate-${name}-${size}-${round}.txt" "$LAT_DURATION" "${args[@]}"
    read -r req rps err p50 p99 < <(parse_wrk "$OUT_DIR/raw/cache-rate-${name}-${size}-${round}.txt")
    FR_RPS[$key]=$rps
    FR_P50[$key]=$p50
    FR_P99[$key]=$p99
    FR_ERR[$key]=$err
    log "  achieved $rps req/s, p50 $p50 ms, p99 $p99 ms"
}

mkdir -p "$OUT_DIR/raw" "$RUN/www/api/v1/buckets"
rm -f "$OUT_DIR"/raw/cache-*.txt
cp "${SIZE_FILE[1k]}" "$RUN/www${SIZE_PATH[1k]}"
cp "${SIZE_FILE[20k]}" "$RUN/www${SIZE_PATH[20k]}"
chmod -R a+rX "$RUN/www"
# The upstream config serves the 1 KiB pass-through path; add the cache paths.
sed 's|location = /api/v1/agents/bench {|location /api/v1/buckets/ {\n        }\n\n        location = /api/v1/agents/bench {|' \
    "$BENCH_DIR/nginx/upstream.conf" >"$RUN/upstream-template.conf"

BUSY=$(busy_pct)
((BUSY > 10)) && log "warning: the machine was ${BUSY}% busy before the run; numbers will be noisy"
log "starting upstream nginx, nginx proxy_cache, haproxy cache, gateway"
start_nginx upstream "$RUN/upstream-template.conf"
wait_http "upstream" "${WORKER[upstream]}" "http://127.0.0.1:${PORT[upstream]}/healthz"
start_nginx nginx "$BENCH_DIR/nginx/cache.conf" "UPSTREAM_PORT=${PORT[upstream]}"
wait_http "nginx" "${WORKER[nginx]}" "http://127.0.0.1:${PORT[nginx]}${SIZE_PATH[1k]}"
start_haproxy
wait_http "haproxy" "${WORKER[haproxy]}" "http://127.0.0.1:${PORT[haproxy]}${SIZE_PATH[1k]}"
start_gateway
start_floor
if ((WORK_FLOORS)); then
    for t in "${WORK_TARGETS[@]}"; do start_floor "$t" "$WORK_FLOOR_BIN" "$t"; done
fi
open_pages "${PORT[gateway]}" "$PAGES"

for size in "${SIZES[@]}"; do
    for t in "${TARGETS[@]}"; do prime_and_check "$t" "$size"; done
done
log "every proxy answers from its cache with the upstream's bytes"
for ((round = 1; round <= ROUNDS; round++)); do
    log "throughput round $round of $ROUNDS"
    for size in "${SIZES[@]}"; do
        for t in "${TARGETS[@]}"; do measure_throughput "$t" "$size" "$round"; done
    done
done
for ((round = 1; round <= LAT_ROUNDS; round++)); do
    log "fixed-rate round $round of $LAT_ROUNDS"
    for size in "${SIZES[@]}"; do
        for t in "${TARGETS[@]}"; do measure_rate "$t" "$size" "$round"; done
    done
done

# The median over the rounds of each figure, as METRIC[target/size].
median_of() { # values...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for metric in RPS SAT_P50 SAT_P99 CPU FR_P50 FR_P99 FR_RPS; do
    declare -n m=$metric
    rounds=$ROUNDS
    [[ $metric == FR_* ]] && rounds=$LAT_ROUNDS
    for size in "${SIZES[@]}"; do
        for t in "${TARGETS[@]}"; do
            values=()
            for ((round = 1; round <= rounds; round++)); do values+=("${m[$t/$size/$round]}"); done
            m[$t/$size]=$(median_of "${values[@]}")
        done
    done
    unset -n m
done
for size in "${SIZES[@]}"; do # totals over the rounds
    for t in "${TARGETS[@]}"; do
        ERR[$t/$size]=0
        UPREQ[$t/$size]=0
        for ((round = 1; round <= ROUNDS; round++)); do
            ERR[$t/$size]=$((ERR[$t/$size] + ERR[$t/$size/$round]))
            UPREQ[$t/$size]=$((UPREQ[$t/$size] + UPREQ[$t/$size/$round]))
        done
        for ((round = 1; round <= LAT_ROUNDS; round++)); do
            ERR[$t/$size]=$((ERR[$t/$size] + FR_ERR[$t/$size/$round]))
        done
    done
    UPREQ[upstream/$size]=–
    # Rounds in which the gateway's p99 was at or below both peers' p99 of
    # the same round: the runs of one round are the closest in time.
    P99_WINS[$size]=0
    for ((round = 1; round <= LAT_ROUNDS; round++)); do
        k=$size/$round
        if awk -v g="${FR_P99[gateway/$k]}" -v n="${FR_P99[nginx/$k]}" -v h="${FR_P99[haproxy/$k]}" \
            'BEGIN { exit !(g + 0 <= n + 0 && g + 0 <= h + 0) }'; then
            P99_WINS[$size]=$((P99_WINS[$size] + 1))
        fi
    done
done

# ---------------------------------------------------------------- report

best_peer() { # size metric-array higher|lower -> the better of nginx and haproxy
    local size=$1 how=$3 a b
    local -n m=$2
    a=${m[nginx/$size]}
    b=${m[haproxy/$size]}
    awk -v a="$a" -v b="$b" -v h="$how" 'BEGIN { if (h == "higher") print (a > b) ? a : b; else print (a < b) ? a : b }'
}
verdict() { # a op b (op: ge or le), numbers
    awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN {
        ok = (op == "ge") ? (a + 0 >= b + 0) : (a + 0 <= b + 0)
        print ok ? "PASS" : "FAIL" }'
}

# One cell per work floor (none without WORK_FLOORS=1): `cells FN` prints
# FN's figure for each (FN reads `size` from the caller).
cells() {
    ((WORK_FLOORS)) || return 0
    local t
    for t in "${WORK_TARGETS[@]}"; do printf ' %s |' "$("$1" "$t")"; done
}
rps_cell() { echo "${RPS[$1/$size]}"; }
sat_cell() { echo "${SAT_P50[$1/$size]} / ${SAT_P99[$1/$size]}"; }
fr_cell() { echo "${FR_P50[$1/$size]} / ${FR_P99[$1/$size]}"; }
added_cell() { awk -v a="${FR_P50[$1/$size]}" -v u="${FR_P50[upstream/$size]}" 'BEGIN { printf "%.3f", a - u }'; }
cpu_cell() { echo "${CPU[$1/$size]}"; }
upreq_cell() { echo "${UPREQ[$1/$size]}"; }
err_cell() { echo "${ERR[$1/$size]}"; }
# Hits per second as a multiple of the best peer's.
ratio_cell() { awk -v a="${RPS[$1/$size]}" -v b="$best_rps" 'BEGIN { printf "%.2fx", a / b }'; }

table() {
    local size peer_rps peer_p99 added best_rps head="" rule=""
    if ((WORK_FLOORS)); then
        head=" hit-work floor | hit-work bound |"
        rule="---:|---:|"
    fi
    echo "| body | metric | direct upstream | nginx proxy_cache | HAProxy cache | castari-gateway | target | result | $FLOOR_LABEL |$head"
    echo "|---|---|---:|---:|---:|---:|---|---|---:|$rule"
    for size in "${SIZES[@]}"; do
        best_rps=$(best_peer "$size" RPS higher | awk '{ print $1 }')
        # Issue 21's target: 1.1x the best peer's hits per second.
        peer_rps=$(best_peer "$size" RPS higher | awk '{ printf "%.0f", $1 * 1.1 }')
        peer_p99=$(best_peer "$size" FR_P99 lower)
        added=$(awk -v g="${FR_P50[gateway/$size]}" -v u="${FR_P50[upstream/$size]}" 'BEGIN { printf "%.3f", g - u }')
        echo "| $size | hit throughput, req/s (wrk -c$CONNECTIONS) | ${RPS[upstream/$size]} | ${RPS[nginx/$size]} | ${RPS[haproxy/$size]} | ${RPS[gateway/$size]} | ≥ 1.1x best peer ($peer_rps) | $(verdict "${RPS[gateway/$size]}" ge "$peer_rps") | ${RPS[floor/$size]} |$(cells rps_cell)"
        echo "| $size | hit throughput ÷ the best peer's | | | | $(ratio_cell gateway) | | | $(ratio_cell floor) |$(cells ratio_cell)"
        echo "| $size | p50 / p99 at saturation, ms | ${SAT_P50[upstream/$size]} / ${SAT_P99[upstream/$size]} | ${SAT_P50[nginx/$size]} / ${SAT_P99[nginx/$size]} | ${SAT_P50[haproxy/$size]} / ${SAT_P99[haproxy/$size]} | ${SAT_P50[gateway/$size]} / ${SAT_P99[gateway/$size]} | | | ${SAT_P50[floor/$size]} / ${SAT_P99[floor/$size]} |$(cells sat_cell)"
        echo "| $size | p50 / p99 at $RATE req/s, ms | ${FR_P50[upstream/$size]} / ${FR_P99[upstream/$size]} | ${FR_P50[nginx/$size]} / ${FR_P99[nginx/$size]} | ${FR_P50[haproxy/$size]} / ${FR_P99[haproxy/$size]} | ${FR_P50[gateway/$size]} / ${FR_P99[gateway/$size]} | p99 ≤ best peer ($peer_p99); gateway ≤ both peers in ${P99_WINS[$size]} of $LAT_ROUNDS rounds | $(verdict "${FR_P99[gateway/$size]}" le "$peer_p99") | ${FR_P50[floor/$size]} / ${FR_P99[floor/$size]} |$(cells fr_cell)"
        echo "| $size | median added latency at $RATE req/s vs direct, ms | 0 | $(awk -v a="${FR_P50[nginx/$size]}" -v u="${FR_P50[upstream/$size]}" 'BEGIN { printf "%.3f", a - u }') | $(awk -v a="${FR_P50[haproxy/$size]}" -v u="${FR_P50[upstream/$size]}" 'BEGIN { printf "%.3f", a - u }') | $added | ≤ 0.05 | $(verdict "$added" le 0.05) | $(awk -v a="${FR_P50[floor/$size]}" -v u="${FR_P50[upstream/$size]}" 'BEGIN { printf "%.3f", a - u }') |$(cells added_cell)"
        echo "| $size | CPU per request, µs | ${CPU[upstream/$size]} | ${CPU[nginx/$size]} | ${CPU[haproxy/$size]} | ${CPU[gateway/$size]} | | | ${CPU[floor/$size]} |$(cells cpu_cell)"
        echo "| $size | upstream requests during the throughput runs | ${UPREQ[upstream/$size]} | ${UPREQ[nginx/$size]} | ${UPREQ[haproxy/$size]} | ${UPREQ[gateway/$size]} | 0 | | ${UPREQ[floor/$size]} |$(cells upreq_cell)"
        echo "| $size | errors (non-2xx + socket), all runs | ${ERR[upstream/$size]} | ${ERR[nginx/$size]} | ${ERR[haproxy/$size]} | ${ERR[gateway/$size]} | 0 | | ${ERR[floor/$size]} |$(cells err_cell)"
    done
}

REPORT=$(
    echo "## Cache hits: castari-gateway vs nginx proxy_cache vs HAProxy cache"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $NPROC cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); busy before the run: ${BUSY}%; operator pages open on the gateway: $PAGES"
    echo "- $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>&1 | head -n 1), wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), gateway $("$GATEWAY_BIN" --version 2>/dev/null || echo '?') at git $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "- servers pinned to core $SERVER_CPU (HAProxy nbthread 1, nginx 1 worker, gateway and $FLOOR_LABEL TOKIO_WORKER_THREADS=1), wrk to core $LOAD_CPU"
    echo "- GET ${SIZE_PATH[1k]} (1024-byte JSON) and ${SIZE_PATH[20k]} (20480-byte JSON), every measured request a hit"
    echo "- medians over the rounds (targets take turns): $ROUNDS throughput rounds of ${DURATION}s after ${WARMUP}s warm-up, $LAT_ROUNDS fixed-rate rounds of ${LAT_DURATION}s"
    echo
    table
    echo
    echo '```'
    for t in "${TARGETS[@]}"; do echo "${CMD[$t]}"; done
    printf '%s\n' "${WRK_CMDS[@]}"
    echo '```'
)
printf '%s\n' "$REPORT" >"$OUT_DIR/cache-results.md"
echo
printf '%s\n' "$REPORT"
log "written to $OUT_DIR/cache-results.md"
