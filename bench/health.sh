#!/usr/bin/env bash
# Load test of GET /health: the service next to a bare hyper server (worker/examples/bare_hyper.rs),
# all in one invocation, so the numbers are comparable.
#
# Usage: bench/health.sh [-d DURATION] [-c CONNECTIONS] [-t WRK_THREADS] [--no-build]
#   -d, --duration     wrk run per target, e.g. 10s            (env BENCH_DURATION, default 10s)
#   -c, --connections  open connections                        (env BENCH_CONNECTIONS, default 64)
#   -t, --threads      wrk threads                             (env BENCH_THREADS, default 1)
#   -w, --warmup       warm-up run per target, discarded        (env BENCH_WARMUP, default 2s)
#   --no-build         use the release binaries already built
#
# Targets, each started alone, measured, then stopped:
#   bare-hyper      one process, one current-thread runtime (the floor: hyper and nothing else)
#   service w=1     awswhitelist serve --workers 1: same single thread, plus supervisor and limits
#   service w=N     awswhitelist serve --workers $(nproc): the default shape
# wrk runs on the same machine and competes for the same cores; with w=N the workers and wrk
# share them, so w=N is not N times w=1 here. Only loopback addresses are used.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-2s}
BUILD=1
while (($#)); do
    case $1 in
        -d | --duration) DURATION=$2; shift ;;
        -c | --connections) CONNECTIONS=$2; shift ;;
        -t | --threads) THREADS=$2; shift ;;
        -w | --warmup) WARMUP=$2; shift ;;
        --no-build) BUILD=0 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "bench/health.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

CORES=$(nproc)
OUT=$(mktemp -d "${TMPDIR:-/tmp}/awswhitelist-bench.XXXXXX")
RUNNING=  # the server under test, stopped on any exit
cleanup() {
    if [[ -n $RUNNING ]]; then
        kill -TERM "$RUNNING" 2>/dev/null || true
        wait "$RUNNING" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# wrk: Debian's package.
if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt)…" >&2
    if ((EUID == 0)); then
        apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
    else
        sudo -n apt-get install -y -qq wrk
    fi
fi

if ((BUILD)); then
    echo "building release binaries (cargo build --release)…" >&2
    cargo build --release --quiet -p awswhitelist --bin awswhitelist
    cargo build --release --quiet -p worker --example bare_hyper
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
SERVICE=$TARGET_DIR/release/awswhitelist
BARE=$TARGET_DIR/release/examples/bare_hyper
for b in "$SERVICE" "$BARE"; do
    [[ -x $b ]] || { echo "missing $b (run without --no-build)" >&2; exit 1; }
done

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # URL PID
    local i
    for i in $(seq 1 200); do
        if curl -fsS -o /dev/null --max-time 1 "$1"; then return 0; fi
        kill -0 "$2" 2>/dev/null || { echo "server $2 exited before it was ready" >&2; return 1; }
        sleep 0.05
    done
    echo "server $2 not ready after 10 s" >&2
    return 1
}

# RSS of a process and all its descendants, in MiB.
rss_tree_mib() {
    local pids=("$1") i=0 kb=0 p
    while ((i < ${#pids[@]})); do
        for p in $(ps -o pid= --ppid "${pids[i]}"); do pids+=("$p"); done
        i=$((i + 1))
    done
    for p in "${pids[@]}"; do
        kb=$((kb + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    awk -v kb="$kb" -v n="${#pids[@]}" 'BEGIN { printf "%.1f (%d proc)", kb / 1024, n }'
}

# wrk latency figure ("1.23ms", "850.00us", "1.02s") → milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n
    }'
}

ROWS=()
run_target() { # NAME URL PID
    local name=$1 url=$2 pid=$3 log="$OUT/wrk-${1// /_}.txt"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$url" >/dev/null
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >"$log"
    local rps p50 p90 p99 sock non2xx errors rss
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$log")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$log")")
    p90=$(to_ms "$(awk '$1 == "90%" {print $2}' "$log")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$log")")
    sock=$(awk -F'[ ,]+' '/Socket errors:/ {print $4 + $6 + $8 + $10}' "$log")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$log")
    errors=$((${sock:-0} + ${non2xx:-0}))
    rss=$(rss_tree_mib "$pid")
    ROWS+=("$(printf '%-16s %12s %10s %10s %10s %8s  %s' "$name" "$rps" "$p50" "$p90" "$p99" "$errors" "$rss")")
}

stop() { # PID
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    RUNNING=
}

echo "GET /health on loopback: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up), $CORES cores" >&2

# 1. bare hyper
port=$(free_port)
"$BARE" "127.0.0.1:$port" >"$OUT/bare_hyper.log" 2>&1 &
pid=$!
RUNNING=$pid
wait_ready "http://127.0.0.1:$port/health" "$pid"
run_target "bare-hyper" "http://127.0.0.1:$port/health" "$pid"
stop "$pid"

# 2. and 3. the service, one worker, then one per core
for w in 1 "$CORES"; do
    port=$(free_port)
    # Only the flags configure it: no AWSWHITELIST_* variable from the caller's environment.
    unset_config=()
    while IFS= read -r name; do unset_config+=(-u "$name"); done < <(compgen -e | grep '^AWSWHITELIST_' || true)
    env "${unset_config[@]}" \
        "$SERVICE" serve --bind "127.0.0.1:$port" --workers "$w" --graceful-timeout 5 \
        --log-format json >"$OUT/service-w$w.log" 2>&1 &
    pid=$!
    RUNNING=$pid
    wait_ready "http://127.0.0.1:$port/health" "$pid"
    # Until every worker answers, a run would measure fewer workers than asked for.
    sleep 0.5
    run_target "service w=$w" "http://127.0.0.1:$port/health" "$pid"
    stop "$pid"
done

echo
echo "GET /health, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, loopback, $CORES cores (wrk shares them)"
printf '%-16s %12s %10s %10s %10s %8s  %s\n' target req/s p50_ms p90_ms p99_ms errors rss_MiB
for row in "${ROWS[@]}"; do
    echo "$row"
done
echo "bare-hyper: 1 process, 1 thread; service w=1: supervisor + 1 single-threaded worker;"
echo "service w=$CORES: supervisor + $CORES workers. errors = socket errors + non-2xx answers."
echo "rss = VmRSS summed over the process and its children after the run. wrk output: $OUT"
