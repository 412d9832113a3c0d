#!/usr/bin/env bash
# Soak: the gateway (release build, keys mode, cache, shaper, retries and
# breaker on) in front of the simulator with faults on (errors, dropped
# connections, stalled bodies, jitter), under mixed traffic from wrk for
# DURATION seconds. Every SAMPLE seconds it records the gateway's RSS, open
# file descriptors, cache bytes and requests answered; at the end it prints
# a table, the error counts by status, and whether RSS stayed flat once the
# cache was full (RSS_GROWTH_MAX percent from the first sample with a full
# cache, or from a quarter of the run if later, to the end). Loopback only;
# bounded in time.
#
# Usage: bash bench/soak.sh      (knobs are env vars)
#
#   DURATION=600 SAMPLE=10 CONNECTIONS=16 ERROR_RATE=0.02 DROP_RATE=0.005
#   STALL_RATE=0.002 RSS_GROWTH_MAX=10 BUILD=1 SERVER_CPU=0 LOAD_CPU=1
#   GATEWAY_BIN=target/release/castari-gateway OUT_DIR=bench/out
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-10}
CONNECTIONS=${CONNECTIONS:-16}
ERROR_RATE=${ERROR_RATE:-0.02}
DROP_RATE=${DROP_RATE:-0.005}
STALL_RATE=${STALL_RATE:-0.002}
RSS_GROWTH_MAX=${RSS_GROWTH_MAX:-10}
BUILD=${BUILD:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
GATEWAY_BIN=${GATEWAY_BIN:-$REPO_DIR/target/release/castari-gateway}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}
API_KEY=soak-upstream-key
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[soak] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for v in DURATION SAMPLE CONNECTIONS RSS_GROWTH_MAX SERVER_CPU LOAD_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((DURATION >= SAMPLE && SAMPLE > 0 && CONNECTIONS > 0)) || die "need DURATION >= SAMPLE > 0"

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
declare -a PIDS=() WRK_CMDS=()
declare -A PORT=() MASTER=() WORKER=() CMD=()

install_tools
if ((BUILD)); then
    log "building the gateway (cargo build --release --bin castari-gateway)"
    (cd "$REPO_DIR" && cargo build --release --bin castari-gateway) || die "the gateway does not build"
fi
[[ -x $GATEWAY_BIN ]] || die "no gateway binary at $GATEWAY_BIN"

RUN=$(mktemp -d /tmp/castari-soak.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The simulator: generous limits, faults on.
sim_port=$(free_port)
taskset -c "$SERVER_CPU" "$GATEWAY_BIN" sim --listen "127.0.0.1:$sim_port" --api-key "$API_KEY" \
    --crud-limit 1000000/60s --invoke-limit 1000000/60s --sync-deploy >"$RUN/sim.log" 2>&1 &
PIDS+=("$!")
wait_http sim "$!" "http://127.0.0.1:$sim_port/_sim/stats"

# The gateway, and a local key for the load.
gw_port=$(free_port)
fill "$BENCH_DIR/gateway-soak.toml" "PORT=$gw_port" "UPSTREAM_PORT=$sim_port" "RUN=$RUN" >"$RUN/gateway.toml"
SOAK_KEY=$("$GATEWAY_BIN" keys --config "$RUN/gateway.toml" create --name soak --role admin 2>/dev/null)
export SOAK_KEY
CASTARI_API_KEY=$API_KEY taskset -c "$SERVER_CPU" "$GATEWAY_BIN" serve --config "$RUN/gateway.toml" \
    >"$RUN/gateway.log" 2>&1 &
GW=$!
PIDS+=("$GW")
wait_http gateway "$GW" "http://127.0.0.1:$gw_port/healthz"
base="http://127.0.0.1:$gw_port"
for slug in soak-a soak-b soak-c; do
    curl -sf -o /dev/null -H "Authorization: Bearer $SOAK_KEY" -H 'Content-Type: application/json' \
        -d "{\"name\":\"$slug\",\"slug\":\"$slug\",\"source_type\":\"git\",\"git_repo_url\":\"https://example.invalid/r\"}" \
        "$base/api/v1/agents" || die "cannot create $slug"
    curl -sf -o /dev/null -X POST -H "Authorization: Bearer $SOAK_KEY" "$base/api/v1/agents/$slug/deploy" ||
        die "cannot deploy $slug"
done
curl -sf -o /dev/null -H 'Content-Type: application/json' "http://127.0.0.1:$sim_port/_sim/faults" \
    -d "{\"jitter_ms\": 5, \"error_rate\": $ERROR_RATE, \"error_statuses\": [500, 502, 503], \"drop_rate\": $DROP_RATE, \"stall_rate\": $STALL_RATE, \"stall_ms\": 300}" ||
    die "cannot set the simulator's faults"

metric() { # name -> the sum of every series of that metric
    curl -s --max-time 5 "$base/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%.0f\n", s }'
}
sample() { # elapsed -> one CSV line
    local fds
    fds=$(find "/proc/$GW/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    printf '%s,%s,%s,%s,%s\n' "$1" "$(rss_kib "$GW")" "$fds" \
        "$(metric castari_gateway_cache_bytes)" "$(metric castari_gateway_requests_total)"
}

log "soaking for ${DURATION}s: $CONNECTIONS connections, faults error=$ERROR_RATE drop=$DROP_RATE stall=$STALL_RATE"
echo "elapsed_s,rss_kib,fds,cache_bytes,requests" >"$RUN/samples.csv"
sample 0 >>"$RUN/samples.csv"
timeout --kill-after=10 $((DURATION + 30)) taskset -c "$LOAD_CPU" \
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s "$BENCH_DIR/soak.lua" "$base" >"$RUN/wrk.out" 2>&1 &
LOAD=$!
PIDS+=("$LOAD")
started=$(date +%s)
while alive "$LOAD"; do
    sleep "$SAMPLE"
    alive "$GW" || die "the gateway died during the soak"
    sample $(($(date +%s) - started)) >>"$RUN/samples.csv"
done
wait "$LOAD" || die "wrk failed: $(tail -n 3 "$RUN/wrk.out")"
sample $(($(date +%s) - started)) >>"$RUN/samples.csv"

mkdir -p "$OUT_DIR"
report=$OUT_DIR/soak-results.md
python3 - "$RUN/samples.csv" "$RSS_GROWTH_MAX" "$base/metrics" "$RUN/wrk.out" >"$report" <<'PY'
import csv, re, sys, urllib.request
rows = list(csv.DictReader(open(sys.argv[1])))
growth_max = float(sys.argv[2])
metrics = urllib.request.urlopen(sys.argv[3], timeout=5).read().decode()
wrk = open(sys.argv[4]).read()
cap = 8388608
# The baseline: the first sample with the cache full (80% of max_bytes), or
# a quarter of the run if that is later (the SQLite page caches and the
# allocator's arenas warm up too).
quarter = int(rows[-1]["elapsed_s"]) / 4
full = next((r for r in rows if int(r["cache_bytes"]) >= 0.8 * cap and int(r["elapsed_s"]) >= quarter), None)
print("| elapsed s | RSS MiB | fds | cache MiB | requests |")
print("|---:|---:|---:|---:|---:|")
step = max(1, len(rows) // 12)
for r in rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else []):
    print(f'| {r["elapsed_s"]} | {int(r["rss_kib"])/1024:.1f} | {r["fds"]} | {int(r["cache_bytes"])/1048576:.1f} | {r["requests"]} |')
end = rows[-1]
print()
print(f'RSS start {int(rows[0]["rss_kib"])/1024:.1f} MiB, end {int(end["rss_kib"])/1024:.1f} MiB, '
      f'max {max(int(r["rss_kib"]) for r in rows)/1024:.1f} MiB; fds start {rows[0]["fds"]}, end {end["fds"]}, '
      f'max {max(int(r["fds"]) for r in rows)}')
statuses = {}
for line in metrics.splitlines():
    m = re.match(r'castari_gateway_requests_total\{.*status="(\d+)".*\} (\d+)', line)
    if m:
        statuses[m[1]] = statuses.get(m[1], 0) + int(m[2])
print("answers by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
for name in ("upstream_retries_total", "retry_budget_exhausted_total", "circuit_opened_total", "cache_evictions_total"):
    total = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("castari_gateway_" + name))
    print(f"{name}: {total:.0f}")
m = re.search(r"Requests/sec:\s+([\d.]+)", wrk)
errors = re.search(r"Socket errors:.*", wrk)
print(f'wrk: {m[1] if m else "?"} req/s; {errors[0] if errors else "no socket errors"}')
if full is None:
    print("RSS flat once the cache is full: the cache never filled (raise DURATION)")
    sys.exit(0)
start = int(full["rss_kib"]); grow = (int(end["rss_kib"]) - start) * 100 / start
verdict = "yes" if grow <= growth_max else "NO"
print(f'RSS flat once the cache is full: {verdict} ({start/1024:.1f} MiB at {full["elapsed_s"]} s, '
      f'{int(end["rss_kib"])/1024:.1f} MiB at the end, {grow:+.1f}%, limit +{growth_max:.0f}%)')
PY
cat "$report"
log "report written to $report"
grep -q 'RSS flat once the cache is full: NO' "$report" && die "RSS grew after the cache was full"
exit 0
