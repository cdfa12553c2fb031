# shellcheck shell=bash
# Shared by the bench/*.sh scripts (sourced, not run): building the release binaries, starting and
# stopping the servers under test, driving them with wrk and parsing its output into one table.
#
# The caller sets its defaults (DURATION, CONNECTIONS, THREADS, WARMUP, and WORKERS if it takes
# --workers), calls bench_args "$@" (the options every script takes, one place) and then
# bench_init. Every server started here is stopped on exit. Only loopback addresses are used. A target whose run had
# socket errors or non-2xx answers makes bench_finish exit 1 after the table is printed.

BENCH_LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
CORES=$(nproc)
ROWS=()      # formatted table rows, in run order
CPU_ROWS=()  # CPU time per request of each row's server, in run order
FAILED=()    # "target: why" for every target that must fail the run
RUNNING=     # the server under test, stopped on any exit

# Parses the options of the calling script (its usage is its header comment): -d/--duration,
# -c/--connections, -t/--threads, -w/--warmup, --no-build, -h/--help, and --workers LIST when
# the script has set WORKERS. Sets DURATION, CONNECTIONS, THREADS, WARMUP, WORKERS and BUILD.
bench_args() { # "$@"
    local script=${BASH_SOURCE[1]} name
    name=bench/$(basename "$script")
    BUILD=1
    while (($#)); do
        case $1 in
            -d | --duration | -c | --connections | -t | --threads | -w | --warmup | --workers)
                (($# >= 2)) || { echo "$name: $1 needs a value (try --help)" >&2; exit 2; }
                ;;
        esac
        case $1 in
            -d | --duration) DURATION=$2; shift ;;
            -c | --connections) CONNECTIONS=$2; shift ;;
            -t | --threads) THREADS=$2; shift ;;
            -w | --warmup) WARMUP=$2; shift ;;
            --workers) [[ -v WORKERS ]] || { echo "$name: unknown argument $1 (try --help)" >&2; exit 2; }
                WORKERS=$2; shift ;;
            --no-build) BUILD=0 ;;
            -h | --help)
                sed -n '2,/^set -euo/p' "$script" | sed '$d; s/^# \{0,1\}//'
                exit 0
                ;;
            *) echo "$name: unknown argument $1 (try --help)" >&2; exit 2 ;;
        esac
        shift
    done
}

bench_init() { # SCRIPT_NAME
    cd "$BENCH_LIB_ROOT" || exit 1
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/awswhitelist-bench.XXXXXX")
    trap bench_cleanup EXIT
    ensure_wrk
    # PROFILE=debug (a script's --debug) measures the debug binaries: for smoke runs in CI,
    # where a release build would cost minutes; its figures mean nothing.
    local profile=${PROFILE:-release} flag=--release
    [[ $profile == debug ]] && flag=
    if ((BUILD)); then
        echo "$1: building $profile binaries (cargo build $flag)…" >&2
        # One invocation, so both see the same unified features: built apart, the example gets
        # its own feature set and its own (slow, AWS SDK-sized) copy of the dependencies.
        cargo build $flag --quiet -p awswhitelist -p worker --bin awswhitelist --example bare_hyper
    fi
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    # BENCH_SERVICE / BENCH_BARE measure other binaries (e.g. an older build kept aside).
    SERVICE=${BENCH_SERVICE:-$target_dir/$profile/awswhitelist}
    BARE=${BENCH_BARE:-$target_dir/$profile/examples/bare_hyper}
    local b
    for b in "$SERVICE" "$BARE"; do
        [[ -x $b ]] || { echo "$1: missing $b (run without --no-build)" >&2; exit 1; }
    done
}

bench_cleanup() {
    if [[ -n $RUNNING ]]; then
        kill -TERM "$RUNNING" 2>/dev/null || true
        wait "$RUNNING" 2>/dev/null || true
    fi
}

# wrk: Debian's package.
ensure_wrk() {
    command -v wrk >/dev/null && return 0
    echo "installing wrk (apt)…" >&2
    if ((EUID == 0)); then
        apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
    else
        sudo -n apt-get install -y -qq wrk
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # URL PID
    local i
    for i in $(seq 1 200); do
        if curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { echo "server $2 exited before it was ready" >&2; return 1; }
        sleep 0.05
    done
    echo "server $2 not ready after 10 s" >&2
    return 1
}

# Starts bare_hyper on PORT; sets PID.
start_bare() { # PORT
    "$BARE" "127.0.0.1:$1" >"$OUT/bare_hyper.log" 2>&1 &
    PID=$!
    RUNNING=$PID
    wait_ready "http://127.0.0.1:$1/health" "$PID"
}

# Starts `awswhitelist serve` with WORKERS workers on PORT; sets PID. Only the flags and a fresh
# state directory configure it: no AWSWHITELIST_* variable from the caller's environment. AWS is
# never called by what the benches send; IMDS is switched off so nothing probes it either.
start_service() { # PORT WORKERS
    local unset_config=() name state="$OUT/state-w$2"
    while IFS= read -r name; do unset_config+=(-u "$name"); done < <(compgen -e | grep '^AWSWHITELIST_' || true)
    mkdir -p "$state"
    # Rate limiting off: one benchmark client sends far more than a client's burst.
    env "${unset_config[@]}" AWSWHITELIST_WHITELIST__STATE_DIR="$state" AWSWHITELIST_RATE_LIMIT__ENABLED=false \
        AWS_EC2_METADATA_DISABLED=true \
        "$SERVICE" serve --bind "127.0.0.1:$1" --workers "$2" --graceful-timeout 5 \
        --log-format json >"$OUT/service-w$2.log" 2>&1 &
    PID=$!
    RUNNING=$PID
    wait_ready "http://127.0.0.1:$1/health" "$PID"
    # Until every worker answers, a run would measure fewer workers than asked for.
    sleep 0.5
}

stop() { # PID
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    RUNNING=
}

# A wrk script that POSTs one MCP JSON-RPC message the way a 2025-06-18 client does.
mcp_script() { # FILE METHOD
    mcp_body_script "$1" "$(printf '{"jsonrpc":"2.0","id":1,"method":"%s"}' "$2")"
}

# A wrk script that POSTs BODY (one JSON-RPC message) as a 2025-06-18 client does, with
# `Authorization: Bearer TOKEN` when a token is given.
mcp_body_script() { # FILE BODY [TOKEN]
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
wrk.headers["Host"] = "localhost"
EOF
    if [[ -n ${3:-} ]]; then
        echo "wrk.headers[\"Authorization\"] = \"Bearer $3\"" >>"$1"
    fi
}

# One request as wrk would send it (curl), checked before the run: HTTP 200 and, for a wrk
# script, a JSON-RPC result (a 200 carrying a JSON-RPC error would otherwise pass as success).
# Prints the body size in bytes.
probe() { # NAME URL [WRK_SCRIPT]
    local name=$1 url=$2 script=${3:-} file="$OUT/probe-${1//[ \/=]/_}.txt" args=() status
    if [[ -n $script ]]; then
        args=(-X POST --data-binary "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$script")")
        while IFS= read -r header; do args+=(-H "$header"); done < <(
            sed -n 's/^wrk.headers\["\([^"]*\)"\] = "\(.*\)"$/\1: \2/p' "$script")
    fi
    status=$(curl -sS --max-time 5 -o "$file" -w '%{http_code}' "${args[@]}" "$url") || status=000
    if [[ $status != 200 ]] || { [[ -n $script ]] && ! grep -q '"result"' "$file"; }; then
        if [[ $status != 200 ]]; then
            echo "FAILED: $name: $url answered HTTP $status, not 200:" >&2
        else
            echo "FAILED: $name: $url answered HTTP 200 without a JSON-RPC result:" >&2
        fi
        head -c 600 "$file" >&2
        echo >&2
        exit 1
    fi
    wc -c <"$file" | tr -d ' '
}

# A process and all its descendants, one pid per line.
tree_pids() { # PID
    local pids=("$1") i=0 p
    while ((i < ${#pids[@]})); do
        for p in $(ps -o pid= --ppid "${pids[i]}"); do pids+=("$p"); done
        i=$((i + 1))
    done
    printf '%s\n' "${pids[@]}"
}

# RSS of a process and all its descendants, in MiB.
rss_tree_mib() {
    local pids kb=0 p
    mapfile -t pids < <(tree_pids "$1")
    for p in "${pids[@]}"; do
        kb=$((kb + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    awk -v kb="$kb" -v n="${#pids[@]}" 'BEGIN { printf "%.1f (%d proc)", kb / 1024, n }'
}

# CPU time (user + system, clock ticks) of a process and all its descendants so far.
cpu_ticks() { # PID
    local t=0 p stat fields
    for p in $(tree_pids "$1"); do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        # Past the ")" that ends the name (a process title may hold spaces): utime, stime.
        read -r -a fields <<<"${stat##*) }"
        t=$((t + fields[11] + fields[12]))
    done
    echo "$t"
}

# wrk latency figure ("1.23ms", "850.00us", "1.02s") → milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n
    }'
}

ROW_FORMAT='%-20s %11s %9s %9s %9s %7s %7s  %s'

# Probes, warms up and measures one target, adding its row to the table.
run_target() { # NAME URL PID [WRK_SCRIPT]
    local name=$1 url=$2 pid=$3 script=${4:-} log="$OUT/wrk-${1//[ \/=]/_}.txt" bytes
    local wrk_args=(-t"$THREADS" -c"$CONNECTIONS")
    [[ -n $script ]] && wrk_args+=(-s "$script")
    bytes=$(probe "$name" "$url" "$script")
    wrk "${wrk_args[@]}" -d"$WARMUP" "$url" >/dev/null
    local ticks_before ticks_after
    ticks_before=$(cpu_ticks "$pid")
    wrk "${wrk_args[@]}" -d"$DURATION" --latency "$url" >"$log"
    ticks_after=$(cpu_ticks "$pid")
    local rps p50 p90 p99 sock non2xx errors rss
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$log")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$log")")
    p90=$(to_ms "$(awk '$1 == "90%" {print $2}' "$log")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$log")")
    sock=$(awk -F'[ ,]+' '/Socket errors:/ {print $4 + $6 + $8 + $10}' "$log")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$log")
    errors=$((${sock:-0} + ${non2xx:-0}))
    if ((errors > 0)) || [[ -z $rps ]]; then
        FAILED+=("$name: ${sock:-0} socket errors, ${non2xx:-0} non-2xx answers (wrk output: $log)")
    fi
    rss=$(rss_tree_mib "$pid")
    CPU_ROWS+=("$(awk -v name="$name" -v t="$((ticks_after - ticks_before))" -v hz="$(getconf CLK_TCK)" \
        -v n="$(awk '/ requests in / {print $1}' "$log")" \
        'BEGIN { printf "%-24s %12s", name, (n > 0 ? sprintf("%.1f", t * 1e6 / hz / n) : "?") }')")
    # shellcheck disable=SC2059
    ROWS+=("$(printf "$ROW_FORMAT" "$name" "${rps:-?}" "$p50" "$p90" "$p99" "$errors" "$bytes" "$rss")")
}

# Prints the table (TITLE first, NOTES after) and exits 1 if any target failed.
bench_finish() { # TITLE NOTE...
    echo
    echo "$1"
    shift
    # shellcheck disable=SC2059
    printf "$ROW_FORMAT\n" target req/s p50_ms p90_ms p99_ms errors body_B rss_MiB
    local row
    for row in "${ROWS[@]}"; do
        echo "$row"
    done
    for row in "$@"; do
        echo "$row"
    done
    echo "errors = socket errors + non-2xx answers; body_B = response body of one request (checked"
    echo "before the run: HTTP 200, and a JSON-RPC result for MCP); rss = VmRSS summed over the"
    echo "process and its children after the run. wrk output: $OUT"
    if ((${#FAILED[@]})); then
        echo >&2
        for row in "${FAILED[@]}"; do
            echo "FAILED: $row" >&2
        done
        exit 1
    fi
}
