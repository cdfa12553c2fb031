#!/usr/bin/env bash
# The hot path against bare hyper, in one run (issue 12's table): `tools/call whitelist_check`
# with an HS256 JWT at the default info log level and at warn, `ping` at both, `tools/list`, the
# p50/p99 of whitelist_check over a run spanning several cache expiries with the number of
# DescribeSecurityGroupRules calls per group per cache_ttl, and the RSS of the service and of
# bare hyper holding many idle keep-alive connections. Every req/s is also given as a ratio to
# bare hyper's GET /health measured in the same run, with the same wrk settings; and the CPU
# time the server's processes spent per request in each row.
#
# Usage: bench/hotpath.sh [-d DURATION] [-c CONNECTIONS] [-t WRK_THREADS] [-w WARMUP] [--workers N]
#                         [--expiry-run DURATION] [--ttl SECONDS] [--idle N] [--smoke] [--debug]
#                         [--perf] [--allocs] [--no-build]
#   -d, --duration     wrk run per target                           (env BENCH_DURATION, default 5s)
#   -c, --connections  open connections                             (env BENCH_CONNECTIONS, default 64)
#   -t, --threads      wrk threads                                  (env BENCH_THREADS, default 1)
#   -w, --warmup       warm-up run per target, discarded            (env BENCH_WARMUP, default 1s)
#   --workers N        service workers                              (env BENCH_WORKERS, default 2)
#   --expiry-run D     the whitelist_check run spanning expiries    (default 30s)
#   --ttl S            whitelist.cache_ttl of the service, seconds  (default 5)
#   --idle N           idle keep-alive connections for the RSS row  (default 10000)
#   --smoke            a few seconds in all (CI): -d 1s -w 1s --expiry-run 3s --ttl 1 --idle 200;
#                      checks only that every row was measured, never a speed
#   --debug            build and measure the debug binaries (figures meaningless; for --smoke)
#   --perf             also record a `perf` profile of the workers during the "check (info)" row
#                      and print its top symbols (perf from Debian's linux-perf)
#   --allocs           also count the allocator calls (malloc, calloc, realloc) per request of
#                      bare hyper and of the check, ping and tools/list rows, with perf uprobes
#                      on libc: a figure that, unlike req/s, does not move with the machine's
#                      noise (needs root for `perf probe`; the probes are removed at exit)
#   --no-build         use the binaries already built
# BENCH_SERVICE and BENCH_BARE name other binaries to measure (an older build kept aside).
#
# A local moto_server (AWSWL_MOTO_SERVER, else PATH) stands in for EC2: it holds one group with
# one rule, and serves only the cache fills. The HS256 secret and the token are made for this
# run (`awswhitelist token`) in its temporary directory; nothing is kept. The Describe calls are
# counted from the service's own mcp_aws_api_calls_total on /metrics. Loopback only. wrk, moto
# and the idle clients share the machine's cores with the servers.
set -euo pipefail

DURATION=${BENCH_DURATION:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-1s}
WORKERS=${BENCH_WORKERS:-2}
EXPIRY_RUN=30s
TTL=5
IDLE=10000
SMOKE=0
PERF=0
ALLOCS=0
PROFILE=release
rest=()
while (($#)); do
    case $1 in
        --expiry-run) EXPIRY_RUN=${2:?--expiry-run needs a value}; shift ;;
        --ttl) TTL=${2:?--ttl needs a value}; shift ;;
        --idle) IDLE=${2:?--idle needs a value}; shift ;;
        --smoke) SMOKE=1 ;;
        --debug) PROFILE=debug ;;
        --perf) PERF=1 ;;
        --allocs) ALLOCS=1 ;;
        *) rest+=("$1") ;;
    esac
    shift
done
if ((SMOKE)); then
    DURATION=1s WARMUP=1s EXPIRY_RUN=3s TTL=1 IDLE=200
fi
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_args "${rest[@]}"
bench_init bench/hotpath.sh

MOTO=
IDLER=
PROBES=
cleanup_hotpath() {
    [[ -n $PROBES ]] && { perf probe -q -d 'awswl_bench:*' 2>/dev/null || true; }
    [[ -n $IDLER ]] && { kill "$IDLER" 2>/dev/null || true; wait "$IDLER" 2>/dev/null || true; }
    [[ -n $MOTO ]] && { kill "$MOTO" 2>/dev/null || true; wait "$MOTO" 2>/dev/null || true; }
    bench_cleanup
}
trap cleanup_hotpath EXIT

# Both ends of 10k connections live on this machine: one descriptor each, plus headroom.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < IDLE + 1000)); then
    echo "bench/hotpath.sh: ulimit -n is $(ulimit -n); --idle $IDLE needs more (raise the hard limit)" >&2
    exit 2
fi

# --- moto, one group, one rule -----------------------------------------------------------------
moto_bin=${AWSWL_MOTO_SERVER:-$(command -v moto_server || true)}
[[ -x $moto_bin ]] || { echo "bench/hotpath.sh: moto_server not found (AWSWL_MOTO_SERVER or PATH)" >&2; exit 1; }
moto_port=$(free_port)
"$moto_bin" -H 127.0.0.1 -p "$moto_port" >"$OUT/moto.log" 2>&1 &
MOTO=$!
wait_ready "http://127.0.0.1:$moto_port/moto-api/" "$MOTO"
ec2() { # PARAM=VALUE... → response body
    local args=(-fsS -X POST "http://127.0.0.1:$moto_port/" -H 'Content-Type: application/x-www-form-urlencoded'
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261124/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0'
        --data-urlencode Version=2016-11-15)
    local p
    for p in "$@"; do args+=(--data-urlencode "$p"); done
    curl "${args[@]}"
}
GROUP=$(ec2 Action=CreateSecurityGroup GroupName=bench GroupDescription=bench | sed -n 's:.*<groupId>\(.*\)</groupId>.*:\1:p')
[[ $GROUP == sg-* ]] || { echo "bench/hotpath.sh: moto made no group" >&2; exit 1; }
ec2 Action=AuthorizeSecurityGroupIngress GroupId="$GROUP" IpPermissions.1.IpProtocol=tcp \
    IpPermissions.1.FromPort=22 IpPermissions.1.ToPort=22 IpPermissions.1.IpRanges.1.CidrIp=198.51.100.0/24 >/dev/null

# --- the service's configuration, its secret and a token ----------------------------------------
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$OUT/jwt.secret"
chmod 600 "$OUT/jwt.secret"
AUDIENCE=https://bench.localhost/mcp
write_config() { # FILE LOG_LEVEL
    cat >"$1" <<EOF
worker_connections = $((IDLE + 1000))
keepalive = 300.0
[whitelist]
state_dir = "$OUT/state"
cache_ttl = $TTL
[aws]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:$moto_port"
[auth]
enabled = true
audience = ["$AUDIENCE"]
hs_secret_file = "$OUT/jwt.secret"
[rate_limit]
enabled = false
[log]
level = "$2"
format = "json"
EOF
}
write_config "$OUT/info.toml" info
write_config "$OUT/warn.toml" warn
clean_env=()
while IFS= read -r name; do clean_env+=(-u "$name"); done < <(compgen -e | grep '^AWSWHITELIST_' || true)
# `exec`: started in the background, the function's subshell becomes the service itself, so `$!`
# is the service's pid and `stop` reaches it (without it, the subshell died and the service lived on).
run_service() { # ARGS... (the binary's)
    exec env "${clean_env[@]}" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
        "$SERVICE" "$@"
}
TOKEN=$(run_service token --config "$OUT/info.toml" --sub bench --scope "whitelist:read whitelist:write" --ttl 2h)

# Starts the service with CONFIG; sets PID. Its log (with the access log) goes to a file.
start_hot() { # PORT CONFIG
    mkdir -p "$OUT/state"
    run_service serve --config "$2" --bind "127.0.0.1:$1" --workers "$WORKERS" --graceful-timeout 5 \
        >>"$OUT/service-$(basename "$2" .toml).log" 2>&1 &
    PID=$!
    RUNNING=$PID
    wait_ready "http://127.0.0.1:$1/health" "$PID"
    sleep 0.5
}

call_script() { # FILE BODY
    mcp_body_script "$1" "$2" "$TOKEN"
}
call_script "$OUT/check.lua" "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"whitelist_check\",\"arguments\":{\"security_group_id\":\"$GROUP\",\"ip_address\":\"203.0.113.7\",\"port\":\"22\"}}}"
call_script "$OUT/ping.lua" '{"jsonrpc":"2.0","id":1,"method":"ping"}'
call_script "$OUT/list.lua" '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'

describes() { # PORT → DescribeSecurityGroupRules calls the service made so far (all workers)
    curl -fsS "http://127.0.0.1:$1/metrics" |
        awk '/^mcp_aws_api_calls_total\{/ && /DescribeSecurityGroupRules/ { n += $NF } END { print n + 0 }'
}

# Opens N keep-alive connections that each make one GET /health and then stay idle; prints
# "open" when all are; holds them until its stdin closes.
idle_clients() { # PORT N
    python3 -c '
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
async def one(conns):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
    await r.readexactly(int(length[0].split(b":")[1]))
    conns.append((r, w))
async def main():
    conns = []
    for i in range(0, n, 500):
        await asyncio.gather(*(one(conns) for _ in range(min(500, n - i))))
    print("open", len(conns), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
' "$1" "$2"
}

# Adds the idle-connection row for the server at PORT (process tree PID): RSS before and with
# the connections, and the cost of one.
idle_row() { # NAME PORT PID
    local before after mib_before mib_after
    before=$(rss_tree_mib "$3")
    coproc IDLE_PROC { idle_clients "$2" "$IDLE"; }
    IDLER=$IDLE_PROC_PID
    local line
    read -r line <&"${IDLE_PROC[0]}" || line=
    [[ $line == "open $IDLE" ]] || FAILED+=("$1: the idle clients could not open $IDLE connections ($line)")
    sleep 1
    after=$(rss_tree_mib "$3")
    local fd=${IDLE_PROC[1]}
    exec {fd}>&-
    wait "$IDLER" 2>/dev/null || true
    IDLER=
    mib_before=${before%% *} mib_after=${after%% *}
    IDLE_ROWS+=("$(printf '%-26s %9s %9s %12s' "$1" "$mib_before" "$mib_after" \
        "$(awk -v a="$mib_after" -v b="$mib_before" -v n="$IDLE" 'BEGIN { printf "%.1f", (a - b) * 1048576 / n }')")")
}

# --- allocator calls per request (--allocs) ------------------------------------------------------
ALLOC_ROWS=()
if ((ALLOCS)); then
    libc=$(ldd "$SERVICE" | awk '/libc\.so\.6/ {print $3}')
    # Left by a run that was killed: replaced.
    perf probe -q -d 'awswl_bench:*' >/dev/null 2>&1 || true
    # Event names are global across groups: prefixed, so probes someone else named `malloc`
    # do not stop this run.
    perf probe -x "$libc" -a 'awswl_bench:awswl_malloc=malloc' -a 'awswl_bench:awswl_calloc=calloc' \
        -a 'awswl_bench:awswl_realloc=realloc' >/dev/null ||
        { echo "bench/hotpath.sh: --allocs: perf probe could not add uprobes on $libc (root needed?)" >&2; exit 2; }
    PROBES=1
fi

# Counts the allocator calls of the server's processes while wrk runs against URL, per request.
alloc_row() { # NAME URL PID [WRK_SCRIPT]
    local log="$OUT/allocs-${1//[ \/=()]/_}" wrk_args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION")
    [[ -n ${4:-} ]] && wrk_args+=(-s "$4")
    # perf counts the given processes for as long as the command (wrk) runs.
    perf stat -x, -e 'awswl_bench:*' -p "$(tree_pids "$3" | paste -sd,)" -o "$log.stat" -- wrk "${wrk_args[@]}" "$2" >"$log.wrk"
    ALLOC_ROWS+=("$(awk -F, -v name="$1" -v n="$(awk '/ requests in / {print $1}' "$log.wrk")" '
        /awswl_bench:/ { split($3, e, ":"); sub(/^awswl_/, "", e[2]); c[e[2]] = $1 }
        END { printf "%-24s %9.1f %9.1f %9.1f %9.1f", name, c["malloc"] / n, c["calloc"] / n, c["realloc"] / n,
              (c["malloc"] + c["calloc"] + c["realloc"]) / n }' "$log.stat")")
}

IDLE_ROWS=()
echo "hot path on loopback: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up)," \
    "$WORKERS workers, $CORES cores, cache_ttl ${TTL}s, $PROFILE binaries" >&2

port=$(free_port)
start_bare "$port"
run_target "bare-hyper GET /health" "http://127.0.0.1:$port/health" "$PID"
((ALLOCS)) && alloc_row "bare-hyper GET /health" "http://127.0.0.1:$port/health" "$PID"
idle_row "bare-hyper" "$port" "$PID"
stop "$PID"

port=$(free_port)
start_hot "$port" "$OUT/info.toml"
if ((PERF)); then
    # The whole machine for the warm-up and the run; the report keeps the service's processes
    # (workers are named "awswl-worker"; "exe" in builds before process titles).
    perf record -q -a -F 999 -o "$OUT/perf.data" >"$OUT/perf-record.log" 2>&1 &
    PERF_PID=$!
fi
run_target "check (info)" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/check.lua"
if ((PERF)); then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
fi
run_target "ping (info)" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/ping.lua"
run_target "tools/list (info)" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/list.lua"
if ((ALLOCS)); then
    alloc_row "check (info)" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/check.lua"
    alloc_row "ping (info)" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/ping.lua"
    alloc_row "tools/list (info)" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/list.lua"
fi
# Past every entry's life: the long run starts cold and sees an expiry every TTL.
sleep $((2 * TTL + 1))
calls_before=$(describes "$port")
saved=$DURATION
DURATION=$EXPIRY_RUN
run_target "check over $EXPIRY_RUN" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/check.lua"
DURATION=$saved
calls=$(($(describes "$port") - calls_before))
idle_row "service, $WORKERS workers" "$port" "$PID"
stop "$PID"

port=$(free_port)
start_hot "$port" "$OUT/warn.toml"
run_target "check (warn)" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/check.lua"
run_target "ping (warn)" "http://127.0.0.1:$port/mcp" "$PID" "$OUT/ping.lua"
stop "$PID"

# The ratio column: req/s over bare hyper's.
bare_rps=$(awk '{ print $(NF - 8) }' <<<"${ROWS[0]}")
for i in "${!ROWS[@]}"; do
    ROWS[i]="${ROWS[i]}  $(awk -v r="$(awk '{ print $(NF - 8) }' <<<"${ROWS[i]}")" -v b="$bare_rps" \
        'BEGIN { if (b > 0 && r + 0 > 0) printf "%.2fx", r / b; else print "?" }')"
done
ttls=$(awk -v d="${EXPIRY_RUN%s}" -v t="$TTL" 'BEGIN { printf "%.1f", d / t }')
bench_finish "Hot path, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, loopback, $CORES cores (wrk shares them), $PROFILE" \
    "(last column: req/s as a ratio to bare-hyper GET /health; all MCP rows carry the HS256 JWT)" \
    "" \
    "DescribeSecurityGroupRules during the ${EXPIRY_RUN} run: $calls for 1 group over $ttls TTLs of ${TTL}s" \
    "  = $(awk -v c="$calls" -v n="$ttls" 'BEGIN { printf "%.2f", c / n }') per group per cache_ttl per host ($WORKERS workers)" \
    "" \
    "$(printf '%-26s %9s %9s %12s' "$IDLE idle keep-alive conns" "rss_MiB" "with_conns" "B_per_conn")" \
    "${IDLE_ROWS[@]}" \
    "" \
    "CPU per request (user + system of the server's processes, over the measured run; the" \
    "kernel's loopback TCP work is charged to them too; steadier than req/s on a shared box):" \
    "$(printf '%-24s %12s' target cpu_us_per_req)" \
    "${CPU_ROWS[@]}"
if ((ALLOCS)); then
    echo
    echo "Allocator calls per request (the server's processes, perf uprobes on libc, over a $DURATION run):"
    printf '%-24s %9s %9s %9s %9s\n' target malloc calloc realloc total
    printf '%s\n' "${ALLOC_ROWS[@]}"
fi
if ((PERF)); then
    echo
    echo "perf: the service during \"check (info)\", top symbols by own time ($OUT/perf.data):"
    perf report -i "$OUT/perf.data" --comms awswl-worker,exe,awswhitelist --no-children --sort dso,symbol --percent-limit 0.7 \
        --stdio 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -45
fi
if ((SMOKE)); then
    # Only that every row was measured: never a speed.
    ((${#ROWS[@]} == 7 && ${#IDLE_ROWS[@]} == 2 && ${#CPU_ROWS[@]} == 7)) || { echo "FAILED: smoke: rows missing" >&2; exit 1; }
    echo "smoke: every row measured (figures from a ${PROFILE} build in a few seconds mean nothing)"
fi
