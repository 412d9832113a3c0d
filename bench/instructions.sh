#!/usr/bin/env bash
# User-space instructions per proxied request: the gateway against the hyper
# and reqwest proxy floors, counted by Valgrind (callgrind), not timed.
#
# On a shared virtual machine the CPU time per request that bench/run.sh
# reads moves with the scheduler: a proxy that leaves its core idle more
# often pays for more wake-ups and preemptions, so its time per request
# grows faster than its work. Instructions do not move: the same binary
# and the same requests give the same count within about 1%. This script
# puts each proxy under callgrind in front of the same nginx upstream as
# bench/run.sh (GET /api/v1/agents/bench, 1 KiB JSON), warms it up, zeroes
# the counters, drives DURATION seconds of wrk through it, dumps the
# counters and divides by the requests wrk completed. Only the proxy's own
# user-space instructions are counted (its syscalls' kernel work is the
# same for every proxy: two reads and two writes per request). A third
# floor, examples/pass_work_floor.rs, is the hyper floor with the gateway's
# own upstream client plus the part of a proxied request the gateway cannot
# leave out (request id, path checks, header hygiene and the key, the
# timeout and idle deadline, X-RateLimit-*, metrics with the overhead
# histogram), done by the gateway's own code.
#
# A second table does the same for a cache hit (HITS=1, the default):
# GET /api/v1/buckets/bench from the gateway with bench/gateway-cache.toml
# (cache and shaper on, as bench/cache.sh runs it) against the hyper floor
# answering the same bytes from memory (examples/hyper_floor.rs), and a
# second floor between them (examples/hit_work_floor.rs): the hyper floor
# plus the part of a hit the gateway cannot leave out (the path checked, the
# moka lookup, the stored answer with Age and X-Cache, the X-RateLimit-*
# headers, the request id and the metrics), done by the gateway's own code,
# and the same binary's bound (HIT_WORK=bound: less than any gateway can
# do, no path check, X-Cache, request id or metrics). After the
# warm-up every request is a hit: the upstream's request counter is read
# around the measured run, and any request that reached it stops the script.
#
# Usage: bash bench/instructions.sh     (knobs: DURATION=10 WARMUP=3 BUILD=1 HITS=1)
# Prints a markdown table and writes it to bench/out/instructions.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
BUILD=${BUILD:-1}
HITS=${HITS:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
GATEWAY_BIN=$REPO_DIR/target/release/castari-gateway
FLOOR_BIN=$REPO_DIR/target/release/examples/proxy_floor
PASS_WORK_BIN=$REPO_DIR/target/release/examples/pass_work_floor
HIT_FLOOR_BIN=$REPO_DIR/target/release/examples/hyper_floor
HIT_WORK_BIN=$REPO_DIR/target/release/examples/hit_work_floor
API_KEY=bench-key
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[instructions] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
for v in DURATION WARMUP; do
    [[ ${!v} =~ ^[0-9]+$ ]] && ((${!v} > 0)) || die "$v must be a positive whole number"
done
[[ $HITS == 0 || $HITS == 1 ]] || die "HITS must be 0 or 1"

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
install_tools valgrind

if ((BUILD)); then
    log "building the gateway and the proxy floors (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release --bin castari-gateway --example proxy_floor --example hyper_floor \
        --example pass_work_floor --example hit_work_floor) ||
        die "the gateway does not build"
fi

RUN=$(mktemp -d /tmp/castari-instructions.XXXXXX)
chmod 755 "$RUN"
PIDS=()
WRK_CMDS=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
declare -A PORT MASTER WORKER CMD

mkdir -p "$RUN/www/api/v1/agents" "$RUN/www/api/v1/buckets"
cp "$BENCH_DIR/payload.json" "$RUN/www/api/v1/agents/bench"
cp "$BENCH_DIR/payload.json" "$RUN/www/api/v1/buckets/bench"
chmod -R a+rX "$RUN/www"
# The upstream config serves the pass-through path; add the cached one (as
# bench/cache.sh does).
sed 's|location = /api/v1/agents/bench {|location /api/v1/buckets/ {\n        }\n\n        location = /api/v1/agents/bench {|' \
    "$BENCH_DIR/nginx/upstream.conf" >"$RUN/upstream-template.conf"
# The upstream on the load core: the proxy under Valgrind has a core of its own.
SERVER_CPU=$LOAD_CPU start_nginx upstream "$RUN/upstream-template.conf"
UPSTREAM=http://127.0.0.1:${PORT[upstream]}
PATH_=/api/v1/agents/bench
HIT_PATH=/api/v1/buckets/bench

# name -> command line (the port is filled in at start)
declare -A TARGET_CMD=(
    [floor_hyper]="$FLOOR_BIN hyper 127.0.0.1:@PORT@ $UPSTREAM"
    [floor_reqwest]="$FLOOR_BIN reqwest 127.0.0.1:@PORT@ $UPSTREAM"
    [pass_work]="$PASS_WORK_BIN 127.0.0.1:@PORT@ $UPSTREAM"
    [gateway]="$GATEWAY_BIN serve --config $RUN/gateway.toml --listen 127.0.0.1:@PORT@ --upstream $UPSTREAM"
    [hit_floor]="$HIT_FLOOR_BIN 127.0.0.1:@PORT@ $HIT_PATH=$BENCH_DIR/payload.json"
    [hit_work]="$HIT_WORK_BIN 127.0.0.1:@PORT@ $HIT_PATH=$BENCH_DIR/payload.json"
    [hit_bound]="$HIT_WORK_BIN 127.0.0.1:@PORT@ $HIT_PATH=$BENCH_DIR/payload.json"
    [hit_gateway]="$GATEWAY_BIN serve --config $RUN/gateway-cache.toml"
)
TARGETS=(floor_hyper floor_reqwest pass_work gateway)
((HITS)) && TARGETS+=(hit_floor hit_bound hit_work hit_gateway)
# The hit-work floor's mode (examples/hit_work_floor.rs): the bound does
# less than any gateway can.
declare -A TARGET_MODE=([hit_work]=required [hit_bound]=bound)
declare -A IR REQ

upstream_requests() { # requests the upstream nginx has served (stub_status)
    local n
    n=$(curl -s --max-time 2 "http://127.0.0.1:${PORT[upstream]}/bench-status" |
        awk 'NR == 3 { print $3 }') || true
    [[ $n =~ ^[0-9]+$ ]] || die "cannot read the upstream's request counter (got '$n')"
    echo "$n"
}

measure() { # name
    local name=$1 port pid cmd out total requests path=$PATH_ before after
    [[ $name == hit_* ]] && path=$HIT_PATH
    port=$(free_port)
    fill "$BENCH_DIR/gateway.toml" "PORT=$port" "UPSTREAM_PORT=${PORT[upstream]}" \
        "ACCESS_LOG=false" >"$RUN/gateway.toml"
    fill "$BENCH_DIR/gateway-cache.toml" "PORT=$port" "UPSTREAM_PORT=${PORT[upstream]}" \
        >"$RUN/gateway-cache.toml"
    cmd=${TARGET_CMD[$name]//@PORT@/$port}
    out=$RUN/callgrind.$name
    # shellcheck disable=SC2086
    taskset -c "$SERVER_CPU" env -u RUST_LOG TOKIO_WORKER_THREADS=1 CASTARI_API_KEY=$API_KEY \
        HIT_WORK="${TARGET_MODE[$name]:-}" \
        valgrind --tool=callgrind --callgrind-out-file="$out.%p" $cmd >"$RUN/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    CMD[$name]="${TARGET_MODE[$name]:+HIT_WORK=${TARGET_MODE[$name]} }valgrind --tool=callgrind $cmd"
    wait_http "$name" "$pid" "http://127.0.0.1:$port$path"
    taskset -c "$LOAD_CPU" wrk -t1 -c8 -d"${WARMUP}s" "http://127.0.0.1:$port$path" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    before=$(upstream_requests)
    taskset -c "$LOAD_CPU" wrk -t1 -c8 -d"${DURATION}s" "http://127.0.0.1:$port$path" >"$RUN/$name.wrk"
    after=$(upstream_requests)
    callgrind_control -d "$pid" >/dev/null
    # The status request itself is one.
    if [[ $name == hit_* ]] && ((after - before != 1)); then
        die "$name: $((after - before - 1)) measured requests reached the upstream (not all hits)"
    fi
    requests=$(awk '/requests in/ {print $1}' "$RUN/$name.wrk")
    grep -q 'Non-2xx' "$RUN/$name.wrk" && die "$name answered non-2xx under callgrind"
    # The dump after zeroing: the last file written for this pid.
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$(ls -t "$out.$pid"* | head -n1)")
    [[ -n $total && -n $requests && $requests -gt 0 ]] || die "$name: no count (see $RUN/$name.log)"
    IR[$name]=$total
    REQ[$name]=$requests
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    log "$name: $requests requests, $((total / requests)) instructions per request"
}

for t in "${TARGETS[@]}"; do measure "$t"; done

per() { echo $((IR[$1] / REQ[$1])); }                                     # target
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; } # a b

mkdir -p "$OUT_DIR"
{
    echo "## User-space instructions per proxied request (callgrind)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), git $(cd "$REPO_DIR" && git rev-parse --short HEAD)$(cd "$REPO_DIR" && git diff --quiet HEAD -- src examples Cargo.toml Cargo.lock || echo ' (+ uncommitted changes)')"
    echo "- GET $PATH_ (1 KiB), wrk -c8 for ${DURATION}s after ${WARMUP}s of warm-up, each proxy alone under Valgrind, TOKIO_WORKER_THREADS=1; the gateway with bench/gateway.toml (shaper, cache and access log off)"
    echo
    echo "| | hyper proxy floor | reqwest proxy floor | pass-work floor | gateway | pass-work floor / hyper floor | gateway / hyper floor | target |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    printf '| instructions per request | %d | %d | %d | %d | %s | %s | ≤ 1.2x |\n' "$(per floor_hyper)" \
        "$(per floor_reqwest)" "$(per pass_work)" "$(per gateway)" \
        "$(ratio "$(per pass_work)" "$(per floor_hyper)")" "$(ratio "$(per gateway)" "$(per floor_hyper)")"
    printf '| requests counted | %d | %d | %d | %d | | | |\n' "${REQ[floor_hyper]}" "${REQ[floor_reqwest]}" \
        "${REQ[pass_work]}" "${REQ[gateway]}"
    if ((HITS)); then
        echo
        echo "Cache hits: GET $HIT_PATH (1 KiB), the gateway with bench/gateway-cache.toml (cache and shaper on), the hyper floor answering from memory (examples/hyper_floor.rs), the hit-work floor (examples/hit_work_floor.rs: the hyper floor plus the part of a hit the gateway cannot leave out); no measured request reached the upstream"
        echo
        echo "| | hyper floor | hit-work bound | hit-work floor | gateway | gateway − hyper floor | hit-work floor / hyper floor | gateway / hyper floor |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        printf '| instructions per hit | %d | %d | %d | %d | %d | %s | %s |\n' "$(per hit_floor)" "$(per hit_bound)" "$(per hit_work)" \
            "$(per hit_gateway)" "$(($(per hit_gateway) - $(per hit_floor)))" \
            "$(ratio "$(per hit_work)" "$(per hit_floor)")" "$(ratio "$(per hit_gateway)" "$(per hit_floor)")"
        printf '| requests counted | %d | %d | %d | %d | | | |\n' "${REQ[hit_floor]}" "${REQ[hit_bound]}" "${REQ[hit_work]}" \
            "${REQ[hit_gateway]}"
    fi
} | tee "$OUT_DIR/instructions.md"
