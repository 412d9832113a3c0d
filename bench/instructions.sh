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
# same for every proxy: two reads and two writes per request).
#
# Usage: bash bench/instructions.sh     (knobs: DURATION=10 WARMUP=3 BUILD=1)
# Prints a markdown table and writes it to bench/out/instructions.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
BUILD=${BUILD:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
GATEWAY_BIN=$REPO_DIR/target/release/castari-gateway
FLOOR_BIN=$REPO_DIR/target/release/examples/proxy_floor
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

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
install_tools valgrind

if ((BUILD)); then
    log "building the gateway and the proxy floors (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release --bin castari-gateway --example proxy_floor) ||
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

mkdir -p "$RUN/www/api/v1/agents"
cp "$BENCH_DIR/payload.json" "$RUN/www/api/v1/agents/bench"
chmod -R a+rX "$RUN/www"
# The upstream on the load core: the proxy under Valgrind has a core of its own.
SERVER_CPU=$LOAD_CPU start_nginx upstream "$BENCH_DIR/nginx/upstream.conf"
UPSTREAM=http://127.0.0.1:${PORT[upstream]}
PATH_=/api/v1/agents/bench

# name -> command line (the port is filled in at start)
declare -A TARGET_CMD=(
    [floor_hyper]="$FLOOR_BIN hyper 127.0.0.1:@PORT@ $UPSTREAM"
    [floor_reqwest]="$FLOOR_BIN reqwest 127.0.0.1:@PORT@ $UPSTREAM"
    [gateway]="$GATEWAY_BIN serve --config $RUN/gateway.toml --listen 127.0.0.1:@PORT@ --upstream $UPSTREAM"
)
TARGETS=(floor_hyper floor_reqwest gateway)
declare -A IR REQ

measure() { # name
    local name=$1 port pid cmd out total requests
    port=$(free_port)
    fill "$BENCH_DIR/gateway.toml" "PORT=$port" "UPSTREAM_PORT=${PORT[upstream]}" \
        "ACCESS_LOG=false" >"$RUN/gateway.toml"
    cmd=${TARGET_CMD[$name]//@PORT@/$port}
    out=$RUN/callgrind.$name
    # shellcheck disable=SC2086
    taskset -c "$SERVER_CPU" env -u RUST_LOG TOKIO_WORKER_THREADS=1 CASTARI_API_KEY=$API_KEY \
        valgrind --tool=callgrind --callgrind-out-file="$out.%p" $cmd >"$RUN/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    CMD[$name]="valgrind --tool=callgrind $cmd"
    wait_http "$name" "$pid" "http://127.0.0.1:$port$PATH_"
    taskset -c "$LOAD_CPU" wrk -t1 -c8 -d"${WARMUP}s" "http://127.0.0.1:$port$PATH_" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    taskset -c "$LOAD_CPU" wrk -t1 -c8 -d"${DURATION}s" "http://127.0.0.1:$port$PATH_" >"$RUN/$name.wrk"
    callgrind_control -d "$pid" >/dev/null
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

mkdir -p "$OUT_DIR"
{
    echo "## User-space instructions per proxied request (callgrind)"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), git $(cd "$REPO_DIR" && git rev-parse --short HEAD)$(cd "$REPO_DIR" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (+ uncommitted changes)')"
    echo "- GET $PATH_ (1 KiB), wrk -c8 for ${DURATION}s after ${WARMUP}s of warm-up, each proxy alone under Valgrind, TOKIO_WORKER_THREADS=1; the gateway with bench/gateway.toml (shaper, cache and access log off)"
    echo
    echo "| | hyper proxy floor | reqwest proxy floor | gateway | gateway / hyper floor | target |"
    echo "|---|---:|---:|---:|---:|---|"
    floor=$((IR[floor_hyper] / REQ[floor_hyper]))
    gw=$((IR[gateway] / REQ[gateway]))
    printf '| instructions per request | %d | %d | %d | %s | ≤ 1.2x |\n' "$floor" \
        "$((IR[floor_reqwest] / REQ[floor_reqwest]))" "$gw" \
        "$(awk -v a="$gw" -v b="$floor" 'BEGIN {printf "%.2fx", a / b}')"
    printf '| requests counted | %d | %d | %d | | |\n' "${REQ[floor_hyper]}" "${REQ[floor_reqwest]}" "${REQ[gateway]}"
} | tee "$OUT_DIR/instructions.md"
