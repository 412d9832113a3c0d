#!/usr/bin/env bash
# The cost of cluster mode on the shaped path, beside single-process, from
# one run: the same gateway binary and config, budget always available,
# once deciding the budget in memory and once in Redis (one redis-server on
# loopback). Then how many slot decisions per second that Redis sustains
# (examples/cluster_slots.rs: the gateway's own script and client).
#
# Usage: bash bench/cluster.sh      (knobs are env vars)
#
#   DURATION=10     seconds per run
#   CONNECTIONS=16  wrk connections for the CPU runs
#   SLOT_TASKS=64   concurrent reservers for the decision-rate run
#   SERVER_CPU=0    core for the upstream, the gateway and Redis
#   LOAD_CPU=1      core for wrk and the reservers
#   BUILD=1         0: use the existing release binaries
#   OUT_DIR=bench/out
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
SLOT_TASKS=${SLOT_TASKS:-64}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BUILD=${BUILD:-1}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
GATEWAY_BIN=$REPO_DIR/target/release/castari-gateway
SLOTS_BIN=$REPO_DIR/target/release/examples/cluster_slots
API_KEY=bench-key
BENCH_PATH=/api/v1/agents/bench
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
for v in DURATION CONNECTIONS SLOT_TASKS SERVER_CPU LOAD_CPU BUILD; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
install_tools
command -v redis-server >/dev/null 2>&1 ||
    die "redis-server is missing: apt-get install -y redis-server"

if ((BUILD)); then
    log "building the gateway and examples/cluster_slots.rs (release)"
    (cd "$REPO_DIR" && cargo build --release --bin castari-gateway --example cluster_slots)
fi

RUN=$(mktemp -d /tmp/castari-bench.XXXXXX)
chmod 755 "$RUN"
PIDS=()
WRK_CMDS=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
declare -A PORT MASTER WORKER CMD

# The upstream: nginx serving the 1 KiB payload (as bench/run.sh does).
mkdir -p "$RUN/www${BENCH_PATH%/*}"
cp "$BENCH_DIR/payload.json" "$RUN/www$BENCH_PATH"
chmod -R a+rX "$RUN/www"
start_nginx upstream "$BENCH_DIR/nginx/upstream.conf"
wait_http upstream "${WORKER[upstream]}" "http://127.0.0.1:${PORT[upstream]}/healthz"

REDIS_PORT=$(free_port)
taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir "$RUN" >"$RUN/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start"

start_gateway() { # name redis-url ("" for single process)
    local name=$1 redis=$2 port pid
    port=$(free_port)
    fill "$BENCH_DIR/gateway-cluster.toml" "PORT=$port" "UPSTREAM_PORT=${PORT[upstream]}" \
        >"$RUN/$name.toml"
    if [[ -n $redis ]]; then
        printf '[cluster]\nredis_url = "%s"\nprefix = "bench"\n' "$redis" >>"$RUN/$name.toml"
    fi
    taskset -c "$SERVER_CPU" env -u RUST_LOG TOKIO_WORKER_THREADS=1 "CASTARI_API_KEY=$API_KEY" \
        "$GATEWAY_BIN" serve --config "$RUN/$name.toml" >"$RUN/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    PORT[$name]=$port
    MASTER[$name]=$pid
    wait_http "$name" "$pid" "http://127.0.0.1:$port/healthz"
    curl -sf -o /dev/null "http://127.0.0.1:$port$BENCH_PATH" || die "$name: $BENCH_PATH failed"
}

start_gateway local ""
start_gateway cluster "redis://127.0.0.1:$REDIS_PORT"

declare -A P50 P99 CPU_US REDIS_US RPS ERR
measure() { # name
    local name=$1 url out t0 t1 r0 r1 req
    url="http://127.0.0.1:${PORT[$name]}$BENCH_PATH"
    # Latency: one connection, closed loop (what one waiting tool sees).
    out=$RUN/$name-c1.txt
    wrk_run "$out" "$DURATION" -t1 -c1 -d"${DURATION}s" --latency "$url"
    read -r _ _ ERR[$name] P50[$name] P99[$name] < <(parse_wrk "$out")
    # CPU per request: many connections.
    out=$RUN/$name-cpu.txt
    t0=$(cpu_ticks "${MASTER[$name]}")
    r0=$(cpu_ticks "$REDIS_PID")
    wrk_run "$out" "$DURATION" -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url"
    t1=$(cpu_ticks "${MASTER[$name]}")
    r1=$(cpu_ticks "$REDIS_PID")
    read -r req RPS[$name] _ _ _ < <(parse_wrk "$out")
    CPU_US[$name]=$(awk -v d=$((t1 - t0)) -v n="$req" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
    REDIS_US[$name]=$(awk -v d=$((r1 - r0)) -v n="$req" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
}

log "single process (budget in memory)"
measure local
log "cluster mode (budget in Redis)"
measure cluster
log "slot decisions per second ($SLOT_TASKS reservers, ${DURATION}s)"
SLOTS=$(taskset -c "$LOAD_CPU" "$SLOTS_BIN" "redis://127.0.0.1:$REDIS_PORT" "$DURATION" "$SLOT_TASKS")

mkdir -p "$OUT_DIR"
{
    echo "| shaped path, budget available | single process | cluster mode | added |"
    echo "|---|---|---|---|"
    echo "| median latency, 1 connection (ms) | ${P50[local]} | ${P50[cluster]} | $(awk -v a="${P50[cluster]}" -v b="${P50[local]}" 'BEGIN { printf "%.3f", a - b }') |"
    echo "| p99 latency, 1 connection (ms) | ${P99[local]} | ${P99[cluster]} | $(awk -v a="${P99[cluster]}" -v b="${P99[local]}" 'BEGIN { printf "%.3f", a - b }') |"
    echo "| gateway CPU per request (µs), $CONNECTIONS connections | ${CPU_US[local]} | ${CPU_US[cluster]} | $(awk -v a="${CPU_US[cluster]}" -v b="${CPU_US[local]}" 'BEGIN { printf "%.1f", a - b }') |"
    echo "| Redis CPU per request (µs) | ${REDIS_US[local]} | ${REDIS_US[cluster]} | |"
    echo "| requests/s at $CONNECTIONS connections | ${RPS[local]} | ${RPS[cluster]} | |"
    echo "| non-2xx | ${ERR[local]} | ${ERR[cluster]} | |"
    echo
    echo "Slot decisions one Redis sustains ($SLOT_TASKS concurrent reservers, one slot each, the gateway's script): \`$SLOTS\`"
} | tee "$OUT_DIR/cluster.md"
