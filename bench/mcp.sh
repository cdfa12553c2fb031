#!/usr/bin/env bash
# Load test of MCP on POST /mcp (`ping`, `tools/list`) beside GET /health and a bare hyper server
# (worker/examples/bare_hyper.rs), all in one invocation, so the numbers are comparable.
#
# Usage: bench/mcp.sh [-d DURATION] [-c CONNECTIONS] [-t WRK_THREADS] [-w WARMUP] [--workers "1 2"]
#                     [--no-build]
#   -d, --duration     wrk run per target, e.g. 30s            (env BENCH_DURATION, default 5s)
#   -c, --connections  open connections                        (env BENCH_CONNECTIONS, default 64)
#   -t, --threads      wrk threads                             (env BENCH_THREADS, default 1)
#   -w, --warmup       warm-up run per target, discarded        (env BENCH_WARMUP, default 1s)
#   --workers LIST     service worker counts, one instance each (env BENCH_WORKERS, default "1 $(nproc)")
#   --no-build         use the release binaries already built
#
# Targets, each measured alone:
#   bare-hyper GET     one process, one current-thread runtime, GET /health (the floor)
#   w=N /health        awswhitelist serve --workers N, GET /health
#   w=N ping           the same instance, POST /mcp {"jsonrpc":"2.0","id":1,"method":"ping"}
#   w=N tools/list     the same instance, POST /mcp {"jsonrpc":"2.0","id":1,"method":"tools/list"}
# MCP requests carry what a 2025-06-18 client sends: Content-Type and Accept application/json,
# MCP-Protocol-Version: 2025-06-18, Host: localhost. No session, no initialize: the service is
# stateless, every request stands alone. Neither method calls AWS (no credentials needed).
# Each target is probed once with curl first (HTTP 200 and a JSON-RPC result, else it stops);
# any socket error or non-2xx answer during a run makes the script exit 1 after the table.
# wrk runs on the same machine and competes for the same cores. Only loopback addresses are used.
set -euo pipefail

DURATION=${BENCH_DURATION:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-1s}
WORKERS=${BENCH_WORKERS:-"1 $(nproc)"}
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_args "$@"
bench_init bench/mcp.sh

mcp_script "$OUT/ping.lua" ping
mcp_script "$OUT/tools_list.lua" tools/list

echo "MCP and /health on loopback: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up)," \
    "workers: $WORKERS, $CORES cores" >&2

port=$(free_port)
start_bare "$port"
run_target "bare-hyper GET" "http://127.0.0.1:$port/health" "$PID"
stop "$PID"

for w in $WORKERS; do
    port=$(free_port)
    start_service "$port" "$w"
    run_target "w=$w /health" "http://127.0.0.1:$port/health" "$PID"
    run_target "w=$w ping" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/ping.lua"
    run_target "w=$w tools/list" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/tools_list.lua"
    stop "$PID"
done

bench_finish "MCP beside /health, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, loopback, $CORES cores (wrk shares them)" \
    "bare-hyper: 1 process, 1 thread, GET; w=N: supervisor + N single-threaded workers, one instance" \
    "per N serving its three targets in turn (rss grows across them)."
