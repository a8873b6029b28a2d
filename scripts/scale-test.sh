#!/bin/sh
# scale-test.sh [NODES] [REGISTRIES] [SHARDS] - many nodes, many shards on
# this one machine (issue 5's scale figures). Defaults: 63 nodes (one per
# province), 10 registries of 50 shards with 3 replicas (500 raft groups,
# 1,500 replicas). Prints:
#
#   - the time from creating the registries until every shard has a
#     leader;
#   - resident memory per node (average and largest);
#   - total CPU of the idle cluster over IDLE_S seconds (default 60);
#   - throughput of a mixed workload (khobench mixed, 50% reads) on one
#     registry for BENCH_S seconds (default 20).
#
# Not part of `make test` (it takes a few minutes and most of the machine).
# Ports: KHO_BASE_PORT (default 30000, below the ephemeral range that the
# nodes' own outgoing connections draw from): node I uses BASE+I, BASE+100+I,
# BASE+200+I. KEEP=1 keeps the data directory.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
CL="$root/scripts/cluster.sh"
CTL="$root/build/bin/khoctl"
BENCH="$root/build/bin/khobench"
NODES=${1:-63}
REGS=${2:-10}
SHARDS=${3:-50}
IDLE_S=${IDLE_S:-60}
BENCH_S=${BENCH_S:-20}
dir=$(mktemp -d "${TMPDIR:-/tmp}/kho-scale.XXXXXX")
export KHO_BASE_PORT=${KHO_BASE_PORT:-30000}
export KHO_REGISTRIES=none
export KHOD_FLAGS="${KHOD_FLAGS:---map-size-mb 512}"
trap '"$CL" stop "$dir" >/dev/null 2>&1 || true; [ "${KEEP:-0}" = 1 ] && echo "kept $dir" || rm -rf "$dir"' EXIT

now() { date +%s.%N; }
ms_since() { echo "$1" | awk -v t="$(now)" '{ printf "%d", (t - $1) * 1000 }'; }
pids() { cat "$dir"/node*.pid; }
# CPU seconds (user + system) of every node so far.
cpu_s() {
    for p in $(pids); do cat "/proc/$p/stat"; done |
        awk -v hz="$(getconf CLK_TCK)" '{ t += $14 + $15 } END { printf "%.2f", t / hz }'
}

t0=$(now)
out=$("$CL" start "$NODES" "$dir") || { echo "cluster start failed" >&2; exit 1; }
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
# Clients take at most 16 endpoints; they learn the other nodes from shard
# maps and hints.
KHO_ENDPOINTS=$(echo "$KHO_ENDPOINTS" | cut -d, -f1-8)
export KHO_ENDPOINTS
echo "$NODES nodes serving after $(ms_since "$t0") ms"

t0=$(now)
i=1
while [ "$i" -le "$REGS" ]; do
    "$CTL" --timeout 20000 registry create "reg$i" --shards "$SHARDS" >/dev/null
    i=$((i + 1))
done
echo "$REGS registries of $SHARDS shards created in $(ms_since "$t0") ms"
# Every shard has a leader: no shard list row without one.
leaderless() {
    "$CTL" --timeout 20000 shard list 2>/dev/null |
        awk 'NR > 1 && $5 == "-" { n++ } NR > 1 { t++ } END { print (t == 0 ? -1 : n + 0) }'
}
while [ "$(leaderless)" != 0 ]; do sleep 1; done
echo "every one of $((REGS * SHARDS)) shards has a leader $(ms_since "$t0") ms" \
    "after the first create"

for p in $(pids); do grep VmRSS "/proc/$p/status"; done |
    awk '{ s += $2; if ($2 > m) m = $2 } END {
        printf "resident memory per node: %.1f MiB average, %.1f MiB largest\n",
               s / NR / 1024, m / 1024 }'

c0=$(cpu_s)
sleep "$IDLE_S"
c1=$(cpu_s)
echo "$c0 $c1" | awk -v s="$IDLE_S" -v n="$NODES" '{
    printf "idle cluster: %.1f CPU seconds over %d s (%.1f%% of one core; %.2f%% per node)\n",
           $2 - $1, s, ($2 - $1) * 100 / s, ($2 - $1) * 100 / s / n }'

# Preload first (not measured), then the timed run alone.
"$BENCH" put --registry reg1 --clients 16 --total 10000 --keyspace 10000 \
    --json >/dev/null
c0=$(cpu_s)
t0=$(now)
"$BENCH" mixed --read 0.5 --registry reg1 --clients 32 --duration "$BENCH_S" \
    --keyspace 10000 --no-preload --json | sed 's/^/mixed workload: /'
secs=$(ms_since "$t0")
c1=$(cpu_s)
echo "$c0 $c1 $secs" | awk '{
    printf "cluster CPU during the workload: %.2f cores (%.1f CPU s in %.1f s)\n",
           ($2 - $1) / ($3 / 1000), $2 - $1, $3 / 1000 }'
