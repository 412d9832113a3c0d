#!/usr/bin/env bash
# Team workload: the same small team (4 dashboards, 2 deployers, 3 chat
# bots, 1 usage reporter; examples/team) run against the Castari simulator
# directly, through nginx set up for the job, and through the gateway, one
# after another, each for DURATION seconds in front of a fresh simulator.
# Time is scaled 10x: the simulator allows 100 requests and 10 invocations
# per 6 s (sliding windows), deploys take 2 s and invocations 0.3 s. Prints
# a markdown table with one column per target and writes it to
# bench/out/team.md (the raw JSON of each run next to it). See
# bench/README.md. Loopback only; every process is stopped on exit.
#
# Usage: bash bench/team.sh            (no arguments; knobs are env vars)
#
#   DURATION=60             seconds of measured load per target
#   DASH_INTERVAL_MS=200    dashboard refresh period (2 s real)
#   DEPLOY_DELAY_MS=2000    simulator: deploying -> active
#   INVOKE_LATENCY_MS=300   simulator: time an invocation takes
#   TARGETS="direct nginx gateway"   which columns to run, in this order
#   BUILD=1                 0: use the existing binaries
#   GATEWAY_BIN=...         gateway binary (default $CARGO_TARGET_DIR or
#                           target, then release/castari-gateway)
#   TEAM_BIN=...            load generator (default .../release/examples/team)
#   OUT_DIR=bench/out       where team.md and team-<target>.json go
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

DURATION=${DURATION:-60}
DASH_INTERVAL_MS=${DASH_INTERVAL_MS:-200}
DEPLOY_DELAY_MS=${DEPLOY_DELAY_MS:-2000}
INVOKE_LATENCY_MS=${INVOKE_LATENCY_MS:-300}
TARGETS=${TARGETS:-direct nginx gateway}
BUILD=${BUILD:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_DIR/target}
GATEWAY_BIN=${GATEWAY_BIN:-$TARGET_DIR/release/castari-gateway}
TEAM_BIN=${TEAM_BIN:-$TARGET_DIR/release/examples/team}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/out}

# The account's key: held by nginx and the gateway, and by every client of
# the direct run (a team without a proxy shares the real key). The
# simulator accepts only this key, so a local token that leaks is a 401.
API_KEY=cast_team0000_benchkey
CRUD_LIMIT=100/6s
INVOKE_LIMIT=10/6s

log() { printf '[team] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for v in DURATION DASH_INTERVAL_MS DEPLOY_DELAY_MS INVOKE_LATENCY_MS BUILD; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((DURATION > 0 && DASH_INTERVAL_MS > 0)) || die "DURATION and DASH_INTERVAL_MS must be positive"
((DURATION <= 600)) || die "DURATION must be at most 600 (seconds per target)"
read -r -a TARGET_LIST <<<"$TARGETS"
((${#TARGET_LIST[@]} > 0)) || die "TARGETS is empty"
for t in "${TARGET_LIST[@]}"; do
    [[ $t == direct || $t == nginx || $t == gateway ]] ||
        die "TARGETS: unknown target '$t' (direct, nginx, gateway)"
done

# ---------------------------------------------------------------- tools

# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

install_tools
NPROC=$(nproc)
# start_nginx pins to SERVER_CPU: here every core (nothing is pinned; this
# benchmark measures behaviour, not CPU).
SERVER_CPU="0-$((NPROC - 1))"

if ((BUILD)); then
    log "building the gateway and the load generator (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release --bin castari-gateway --example team) ||
        die "the gateway or examples/team does not build"
fi
[[ -x $GATEWAY_BIN ]] || die "no gateway binary at $GATEWAY_BIN"
[[ -x $TEAM_BIN ]] || die "no load generator at $TEAM_BIN"

# ---------------------------------------------------------------- processes

RUN=$(mktemp -d /tmp/castari-team.XXXXXX)
chmod 755 "$RUN" # nginx workers may run as an unprivileged user
PIDS=()          # every process this script started (and nginx workers)
WRK_CMDS=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
declare -A PORT MASTER WORKER CMD

# Stops every process started since PIDS had $1 entries, and forgets them.
stop_since() {
    local from=$1 pid i any
    local mine=("${PIDS[@]:from}")
    for pid in "${mine[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        any=0
        for pid in "${mine[@]}"; do alive "$pid" && any=1; done
        ((any)) || break
        sleep 0.1
    done
    for pid in "${mine[@]}"; do
        if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        wait "$pid" 2>/dev/null || true
    done
    PIDS=("${PIDS[@]:0:from}")
}

start_sim() { # name
    local name=$1 port pid
    port=$(free_port)
    local cmd=("$GATEWAY_BIN" sim --listen "127.0.0.1:$port" --api-key "$API_KEY"
        --crud-limit "$CRUD_LIMIT" --invoke-limit "$INVOKE_LIMIT" --window sliding
        --deploy-delay-ms "$DEPLOY_DELAY_MS" --invoke-latency-ms "$INVOKE_LATENCY_MS")
    CMD[sim]="${cmd[*]}"
    "${cmd[@]}" >"$RUN/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    PORT[sim]=$port
    wait_http "simulator" "$pid" "http://127.0.0.1:$port/_sim/stats"
}

start_gateway() {
    local port pid
    port=$(free_port)
    fill "$BENCH_DIR/gateway-team.toml" "PORT=$port" "UPSTREAM_PORT=${PORT[sim]}" >"$RUN/gateway.toml"
    local cmd=(env -u RUST_LOG "CASTARI_API_KEY=$API_KEY" "$GATEWAY_BIN" serve --config "$RUN/gateway.toml")
    CMD[gateway]="env CASTARI_API_KEY=... $GATEWAY_BIN serve --config gateway-team.toml"
    "${cmd[@]}" >"$RUN/gateway.log" 2>"$RUN/gateway.err" &
    pid=$!
    PIDS+=("$pid")
    PORT[gateway]=$port
    wait_http "gateway" "$pid" "http://127.0.0.1:$port/healthz"
}

run_target() { # target
    local t=$1 base from=${#PIDS[@]} extra=()
    log "$t: starting a fresh simulator"
    start_sim "sim-$t"
    case $t in
    direct)
        base="http://127.0.0.1:${PORT[sim]}"
        extra=(--shared-key "$API_KEY")
        ;;
    nginx)
        start_nginx nginx "$BENCH_DIR/nginx/team.conf" "UPSTREAM_PORT=${PORT[sim]}"
        wait_http "nginx" "${WORKER[nginx]}" "http://127.0.0.1:${PORT[nginx]}/healthz"
        base="http://127.0.0.1:${PORT[nginx]}"
        ;;
    gateway)
        start_gateway
        base="http://127.0.0.1:${PORT[gateway]}"
        ;;
    esac
    log "$t: running the team for ${DURATION}s against $base"
    # Setup (at most 60 s), the run, a 5 s grace for late answers, log fetches.
    timeout --kill-after=5 $((DURATION + 120)) "$TEAM_BIN" --target "$base" \
        --sim "http://127.0.0.1:${PORT[sim]}" --duration "$DURATION" \
        --dash-interval-ms "$DASH_INTERVAL_MS" --invoke-latency-ms "$INVOKE_LATENCY_MS" \
        --label "$t" "${extra[@]}" >"$RUN/team-$t.json" 2>"$RUN/team-$t.err" ||
        die "$t: the load generator failed: $(tail -n 3 "$RUN/team-$t.err")"
    cp "$RUN/team-$t.json" "$OUT_DIR/team-$t.json"
    stop_since "$from"
}

mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/team-*.json
STARTED=$(date +%s)
for t in "${TARGET_LIST[@]}"; do run_target "$t"; done
ELAPSED=$(($(date +%s) - STARTED))

# ---------------------------------------------------------------- report

REV=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo 'no commit')
if [[ -n $(git -C "$REPO_DIR" status --porcelain -- src 2>/dev/null | head -n 1) ]]; then
    REV+=" with uncommitted src changes"
fi
FACTS=$(
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), git $REV"
    echo "- machine: $NPROC cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "- simulator: \`${CMD[sim]}\` (port varies), one fresh per target"
    echo "- load: examples/team, ${DURATION}s per target, dashboards every ${DASH_INTERVAL_MS} ms; the targets ran one after another, ${ELAPSED}s in all"
)
python3 - "$OUT_DIR" "$FACTS" "${TARGET_LIST[@]}" >"$OUT_DIR/team.md" <<'PY'
import json, sys
out_dir, facts, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = {t: json.load(open(f"{out_dir}/team-{t}.json")) for t in targets}
names = {"direct": "simulator direct", "nginx": "nginx", "gateway": "gateway"}

def num(v, fmt="{:.0f}"):
    return "–" if v is None else fmt.format(v)

def counts(c):
    s = f'{c["ok"]} / {c["s429"]} / {c["s5xx"]}'
    return s + (f' (+{c["other"]} other)' if c["other"] else "")

def lat(c):
    return f'{num(c["p50_ms"])} / {num(c["p99_ms"])}'

def cycles(r):
    d = r["client"]["deploy"]
    s = f'{d["cycles_completed"]} / {d["cycles_started"] - d["cycles_cut"]}'
    return s + (f' (+{d["cycles_cut"]} cut by the end)' if d["cycles_cut"] else "")

def cache(r):
    c = r["client"]
    if c["dashboard_from_cache_pct"] is None:
        return "–"
    return f'{c["dashboard_from_cache_pct"]:.0f} (stale {c["dashboard_stale_pct"]:.0f})'

def sessions(r):
    s = r["upstream"]["sessions"]
    return f'{s["sessions_reordered"]} of {s["sessions_checked"]}'

def overlap(r):
    s = r["upstream"]["sessions"]
    return f'{s["turn_pairs_overlapped"]} of {s["turn_pairs"]}'

def complete(r):
    return f'{r["upstream"]["sessions"]["sessions_all_turns_upstream"]} of {r["client"]["bots"]["sessions"]}'

def jain(v, per):
    return "–" if v is None else f'{v:.2f} ({"/".join(str(x) for x in per)})'

def window(r, lane):
    u = r["upstream"]
    limit = u["crud_limit"] if lane == "crud" else u["invoke_limit"]
    return f'{u["max_window_" + lane + "_lane"]} ({u["max_window_" + lane + "_lane_admitted"]} run) / {limit}'

def goodput(r):
    c = r["client"]
    stale = c["goodput_stale_per_min"]
    return f'{c["goodput_fresh_per_min"]:.0f}' + (f' (+{stale:.0f} stale)' if stale else "")

def refusals(r):
    return f'{r["client"]["deploy"]["not_active"]} / {r["client"]["bots"]["not_active"]}'

cls = lambda r, k: r["client"]["classes"][k]
rows = [
    ("dashboard answers: 2xx / 429 / 5xx", lambda r: counts(cls(r, "dashboard"))),
    ("deployer answers: 2xx / 429 / 5xx", lambda r: counts(cls(r, "deployer"))),
    ("bot answers: 2xx / 429 / 5xx", lambda r: counts(cls(r, "bot"))),
    ("reporter answers: 2xx / 429 / 5xx", lambda r: counts(cls(r, "reporter"))),
    ("goodput: fresh 2xx per minute (+ stale 2xx)", goodput),
    ("dashboard latency p50 / p99, ms", lambda r: lat(cls(r, "dashboard"))),
    ("deployer latency p50 / p99, ms", lambda r: lat(cls(r, "deployer"))),
    ("bot latency p50 / p99, ms", lambda r: lat(cls(r, "bot"))),
    ("reporter latency p50 / p99, ms", lambda r: lat(cls(r, "reporter"))),
    ("dashboard 2xx reads from a cache, % (stale)", cache),
    ("oldest cached dashboard answer (Age), s", lambda r: num(r["client"]["dashboard_max_age_s"])),
    ("upstream requests during the run (+ setup)", lambda r: f'{r["upstream"]["requests"]} ({r["upstream"]["requests_incl_setup"]})'),
    ("upstream 429s", lambda r: str(r["upstream"]["status_429"])),
    ("most sends in any 6 s, CRUD lane (run) / limit", lambda r: window(r, "crud")),
    ("most sends in any 6 s, invoke lane (run) / limit", lambda r: window(r, "invoke")),
    ("CRUD budget used, %", lambda r: num(r["upstream"]["crud_budget_used_pct"])),
    ("invoke budget used, %", lambda r: num(r["upstream"]["invoke_budget_used_pct"])),
    ("deploy cycles completed / started", cycles),
    ("pre-action statuses shown to deployers", lambda r: str(r["client"]["deploy"]["pre_action_statuses"])),
    ("deploys never seen active (20 s)", lambda r: str(r["client"]["deploy"]["never_active"])),
    ('"Agent not active" refusals: deployers / bots', refusals),
    ("sessions whose turns ran out of order upstream", sessions),
    ("turns run before the previous turn's answer", overlap),
    ("sessions with all 3 turns run upstream", complete),
    ("Jain fairness, bots (2xx invocations each)", lambda r: jain(r["client"]["jain_bots"], r["client"]["bots"]["ok_per_bot"])),
    ("Jain fairness, dashboards (2xx reads each)", lambda r: jain(r["client"]["jain_dashboards"], r["client"]["dashboards_ok_per_client"])),
    ("requests unanswered 5 s after the end", lambda r: str(r["unfinished"])),
]
print("## Team workload (`bench/team.sh`)")
print()
print(facts)
if any(r["upstream"].get("log_gap") for r in runs.values()):
    print("- warning: the simulator's log overflowed between two fetches; window and session rows may miss requests")
print()
print("| | " + " | ".join(names[t] for t in targets) + " |")
print("|---|" + "---:|" * len(targets))
for label, f in rows:
    print(f"| {label} | " + " | ".join(f(runs[t]) for t in targets) + " |")
PY
echo
cat "$OUT_DIR/team.md"
echo
log "written to $OUT_DIR/team.md (raw results: $OUT_DIR/team-*.json); ${ELAPSED}s for the runs"
