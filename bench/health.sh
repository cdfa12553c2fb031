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
# share them, so w=N is not N times w=1 here. Only loopback addresses are used. Any socket error or
# non-2xx answer makes the script exit 1 after the table. MCP endpoints: bench/mcp.sh.
set -euo pipefail

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-2s}
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_args "$@"
bench_init bench/health.sh

echo "GET /health on loopback: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up), $CORES cores" >&2

# 1. bare hyper
port=$(free_port)
start_bare "$port"
run_target "bare-hyper" "http://127.0.0.1:$port/health" "$PID"
stop "$PID"

# 2. and 3. the service, one worker, then one per core
for w in 1 "$CORES"; do
    port=$(free_port)
    start_service "$port" "$w"
    run_target "service w=$w" "http://127.0.0.1:$port/health" "$PID"
    stop "$PID"
done

bench_finish "GET /health, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, loopback, $CORES cores (wrk shares them)" \
    "bare-hyper: 1 process, 1 thread; service w=1: supervisor + 1 single-threaded worker;" \
    "service w=$CORES: supervisor + $CORES workers."
