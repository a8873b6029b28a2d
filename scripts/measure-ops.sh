#!/bin/sh
# measure-ops.sh [MB] - operational figures of a local 3-node cluster:
#
#   1. restart time of a node holding MB megabytes (default 1024): SIGKILL a
#      follower, start it again, time until it answers and its replica of
#      the registry has applied everything the leader committed; the same
#      with 10 MB for comparison (LMDB is the snapshot: nothing is replayed
#      beyond the applied index, so the two should be close);
#   2. snapshot transfer rate: a node far behind a compacted log receives
#      the registry as a snapshot streamed in chunks from one LMDB read
#      transaction; bytes / time from the sender's log lines, and the
#      registry's term before and after (no election may happen).
#
# Needs about 10 * MB of free disk in $TMPDIR. Not part of `make test`.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
CL="$root/scripts/cluster.sh"
CTL="$root/build/bin/khoctl"
CHK="$root/build/bin/khocheck"
MB=${1:-1024}
dir=$(mktemp -d "${TMPDIR:-/tmp}/kho-measure.XXXXXX")
export KHO_BASE_PORT=${KHO_BASE_PORT:-24000}
export KHOD_FLAGS="--map-size-mb $((MB * 6 + 2048)) --quota-mb $((MB * 5 + 1024)) --compact-entries 1000"
trap '"$CL" stop "$dir" >/dev/null 2>&1 || true; [ "${KEEP:-0}" = 1 ] && echo "kept $dir" || rm -rf "$dir"' EXIT

now() { date +%s.%N; }
ms_since() { echo "$1" | awk -v t="$(now)" '{ printf "%d", (t - $1) * 1000 }'; }
field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" | head -n 1; }

# restart_time I: SIGKILL node I, restart it, print ms until caught up.
restart_time() {
    i=$1
    want=$("$CTL" cluster status --json | tr '{' '\n' |
        grep '"registry":"demo","role":"leader"' | field commit)
    "$CL" kill "$i" "$dir"
    t0=$(now)
    "$CL" restart "$i" "$dir"
    while :; do
        got=$("$CTL" --endpoints "tcp://127.0.0.1:$((KHO_BASE_PORT + i))" \
            cluster status --json 2>/dev/null | tr '{' '\n' |
            grep '"registry":"demo"' | field applied)
        [ -n "$got" ] && [ "$got" -ge "$want" ] && break
        sleep 0.05
    done
    ms_since "$t0"
}

eval "$("$CL" start 3 "$dir" | grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS
"$CHK" load demo 10
leader=$("$CL" leader "$dir" demo)
f=$((leader % 3 + 1))
small=$(restart_time "$f")
"$CHK" load demo "$MB"
du -sh "$dir/node$f" | sed 's/^/data on disk per node: /'
big=$(restart_time "$f")
echo "restart of node $f: ${small} ms with 10 MB, ${big} ms with $((MB + 10)) MB"

term_of_demo() {
    "$CTL" cluster status --json | tr '{' '\n' |
        grep '"registry":"demo","role":"leader"' | field term
}
echo "snapshot transfer: node $f falls behind a compacted log"
term0=$(term_of_demo)
"$CL" kill "$f" "$dir"
"$CHK" write demo far- 1200 /dev/null >/dev/null
t0=$(now)
"$CL" restart "$f" "$dir"
until grep -q "installing a snapshot" "$dir/node$f.log"; do sleep 0.05; done
echo "node $f had its snapshot installed $(ms_since "$t0") ms after restart"
grep -h "sending a snapshot\|delivered to node $f" "$dir"/node*.log | tail -n 2
# Rate: from the sender's "sending" line to its "delivered" line.
grep -h "sending a snapshot.*to node $f\|delivered to node $f" \
    "$dir"/node*.log | tail -n 2 |
    sed -n 's/^\([0-9-]*T[0-9:.]*\)Z.*(\([0-9]*\) bytes).*/\1 \2/p' |
    awk '{ split($1, a, "T"); split(a[2], t, ":");
           s[NR] = t[1] * 3600 + t[2] * 60 + t[3]; b = $2 }
         END { if (NR == 2 && s[2] > s[1])
                   printf "snapshot: %.1f MB in %.2f s: %.0f MB/s\n",
                          b / 1e6, s[2] - s[1], b / 1e6 / (s[2] - s[1]) }'
echo "demo's leader term: $term0 before, $(term_of_demo) after (an" \
    "unchanged term: no election during the transfer)"
