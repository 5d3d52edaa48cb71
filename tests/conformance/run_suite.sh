#!/bin/sh
# Run the official MCP conformance suite's server scenarios against one URL and
# print a one-line-per-scenario summary.
#
# usage: tests/conformance/run_suite.sh URL REQUIREMENTS OUTDIR [EXTRA CLI ARGS...]
#   URL           the MCP endpoint, e.g. http://127.0.0.1:8931/mcp
#   REQUIREMENTS  a frozen requirement set: 2025-11-25 or 2026-07-28
#   OUTDIR        where the CLI writes server-<scenario>-<timestamp>/checks.json
#                 (and this script the CLI's log); reusing it is fine, only this
#                 run's results are summarised
#   extra args go to the CLI, e.g. --expected-failures FILE or --timeout MS
#
# Uses the tooling installed under target/peers (see README.md next to this
# file); set WARDEN_PEERS to use another install. Exits 2 if the CLI cannot be
# run at all, otherwise with the CLI's own exit code (0 = every scored
# scenario passed).

set -u

if [ "$#" -lt 3 ]; then
    echo "usage: $0 URL REQUIREMENTS OUTDIR [EXTRA CLI ARGS...]" >&2
    exit 2
fi
url=$1
requirements=$2
outdir=$3
shift 3

root=$(cd "$(dirname "$0")/../.." && pwd)
peers=${WARDEN_PEERS:-$root/target/peers}
node=$peers/node/node_modules/.bin/node
cli=$peers/conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js
python=$peers/venv/bin/python3
[ -x "$python" ] || python=python3

for need in "$node" "$cli"; do
    if [ ! -e "$need" ]; then
        echo "run_suite.sh: missing $need (install the tooling as README.md says)" >&2
        exit 2
    fi
done

mkdir -p "$outdir" || exit 2
before=$(ls "$outdir")
log=$outdir/cli-$requirements-$(date +%Y%m%dT%H%M%S).log

"$node" "$cli" server --url "$url" --requirements "$requirements" -o "$outdir" "$@" >"$log" 2>&1
status=$?

# Result directories this run created.
new_dirs=$(ls "$outdir" | grep '^server-' | while read -r entry; do
    printf '%s\n' "$before" | grep -qxF "$entry" || printf '%s\n' "$entry"
done)

if [ -z "$new_dirs" ]; then
    echo "run_suite.sh: the conformance CLI produced no results (exit $status); its output:" >&2
    cat "$log" >&2
    [ "$status" -ne 0 ] && exit "$status"
    exit 2
fi

printf '%s\n' "$new_dirs" | "$python" -c '
import json, os, re, sys

outdir, log = sys.argv[1], sys.argv[2]
# The CLI lists scenarios that run but do not count, as "  ✓ name (reason)".
not_scored = {}
with open(log, encoding="utf-8") as f:
    in_section = False
    for line in f:
        if line.startswith("Not scored for"):
            in_section = True
        elif in_section:
            match = re.match(r"\s+\S+ (\S+) \((.+)\)$", line.rstrip())
            if not match:
                break
            not_scored[match.group(1)] = match.group(2)

rows = []
for entry in sys.stdin.read().split():
    # server-<scenario>-<timestamp>; sorting on the timestamp keeps the run order.
    scenario, stamp = re.fullmatch(r"server-(.+)-(\d{4}-\d\d-\d\dT[\d-]+Z)", entry).groups()
    with open(os.path.join(outdir, entry, "checks.json"), encoding="utf-8") as f:
        statuses = [check["status"] for check in json.load(f)]
    counts = {s: statuses.count(s) for s in ("SUCCESS", "FAILURE", "WARNING", "SKIPPED")}
    rows.append((stamp, scenario, counts))
rows.sort()

width = max(len(name) for _, name, _ in rows)
total_passed = total_failed = 0
for _, name, n in rows:
    passed, failed = n["SUCCESS"], n["FAILURE"]
    verdict = "FAIL" if failed else "pass"
    extra = "".join(f", {n[k]} {k.lower()}" for k in ("WARNING", "SKIPPED") if n[k])
    scored = f"  (not scored: {not_scored[name]})" if name in not_scored else ""
    print(f"{name:<{width}}  {verdict}  {passed} passed, {failed} failed{extra}{scored}")
    total_passed += passed
    total_failed += failed
print(f"Total: {total_passed} passed, {total_failed} failed")
' "$outdir" "$log" || exit 2

exit "$status"
