#!/bin/sh
# health.sh - the HTTP endpoints and `khoctl cluster health`, with real
# processes: three khod nodes on loopback started by scripts/cluster.sh
# (each with --http-listen), probed with curl.
#
# Proves: /health is 200 "ok"; /ready is 200 on every node of a healthy
# cluster; /metrics is Prometheus text (every sample line is
# `name{labels} value`, every name has the kho_ prefix and a # TYPE line,
# histograms end in a +Inf bucket equal to their _count) with the raft
# gauges of every group, the store, the peers and the client requests just
# made; an unknown path is 404; `khoctl cluster health` exits 0 and
# `cluster status` shows every replica's lag. With two of the three nodes
# paused (SIGSTOP), `cluster health` exits 3 and /ready on the third node
# turns 503 naming the groups without a leader; resumed, the cluster is
# healthy and ready again.
#
# Ports: KHO_BASE_PORT (default: 25000 + a per-run offset, at most BASE+203
# in use); data in a fresh
# temporary directory. KHOD (e.g. an ASan build) is honoured through
# cluster.sh. Every process is cleaned up on exit.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
CL="$root/scripts/cluster.sh"
CTL="$root/build/bin/khoctl"
dir=$(mktemp -d "${TMPDIR:-/tmp}/kho-health.XXXXXX")
# Below 32768, where Linux starts picking ephemeral ports for outgoing
# connections, so no dialer's own port can take one of ours.
export KHO_BASE_PORT=${KHO_BASE_PORT:-$((20000 + ($$ % 10) * 300))}
# How long a paused majority may take to show (election timeouts are
# 150-300 ms; the rest is slack for a loaded machine or an ASan build).
WAIT_S=15

cleanup() {
    "$CL" resume 2 "$dir" >/dev/null 2>&1 || true
    "$CL" resume 3 "$dir" >/dev/null 2>&1 || true
    "$CL" stop "$dir" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
. "$root/tests/integration/lib/common.sh"


command -v curl >/dev/null 2>&1 ||
    fail "curl is missing (scripts/install-deps.sh installs it)"

# http URL: prints the status code, the body goes to $dir/body.
http() {
    curl -s -o "$dir/body" -w '%{http_code}' --max-time 5 "$1" || echo 000
}
# expect_http CODE URL
expect_http() {
    got=$(http "$2")
    [ "$got" = "$1" ] || fail "GET $2: $got, want $1: $(cat "$dir/body")"
}
# wait_for CMD...: retries CMD until it succeeds, for WAIT_S seconds.
wait_for() {
    t=0
    until "$@" >/dev/null 2>&1; do
        t=$((t + 1))
        [ "$t" -le $((WAIT_S * 5)) ] || return 1
        sleep 0.2
    done
}
ready_is() { [ "$(http "$2")" = "$1" ]; }
health_exits() {
    rc=0
    "$CTL" --timeout 1000 cluster health >"$dir/health.out" \
        2>"$dir/health.err" || rc=$?
    [ "$rc" = "$1" ]
}
# The meta group unhealthy in node 1's view (not merely nodes unreachable).
meta_unhealthy() {
    health_exits 3 && grep -q 'group 0 ((meta)): ' "$dir/health.err" &&
        grep -q 'no node reports leading it\|voters active' "$dir/health.err"
}

out=$(KHO_REGISTRIES=citizens,licences "$CL" start 3 "$dir") ||
    fail "cluster start"
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
eval "$(echo "$out" | grep '^KHO_HTTP=')"
export KHO_ENDPOINTS
[ -n "${KHO_HTTP:-}" ] || fail "cluster.sh start printed no KHO_HTTP="
h1=$(echo "$KHO_HTTP" | cut -d, -f1)
h2=$(echo "$KHO_HTTP" | cut -d, -f2)
h3=$(echo "$KHO_HTTP" | cut -d, -f3)
[ "$h1" = "http://127.0.0.1:$((KHO_BASE_PORT + 201))" ] ||
    fail "KHO_HTTP=$KHO_HTTP: node 1 not on BASE+201"

step "/health, /ready and an unknown path on every node"
for h in "$h1" "$h2" "$h3"; do
    expect_http 200 "$h/health"
    [ "$(cat "$dir/body")" = ok ] || fail "$h/health body: $(cat "$dir/body")"
    wait_for ready_is 200 "$h/ready" || fail "$h/ready: $(cat "$dir/body")"
    expect_http 404 "$h/nosuch"
done

step "client requests show in /metrics"
"$CTL" put citizens 001 '{"name":"A"}' >/dev/null 2>&1 || fail "put"
"$CTL" get citizens 001 >/dev/null || fail "get"
"$CTL" get citizens nokey >/dev/null 2>&1 && fail "get nokey succeeded"
# The requests went to the groups' leaders: sum over every node.
for h in "$h1" "$h2" "$h3"; do
    expect_http 200 "$h/metrics"
    cp "$dir/body" "$dir/metrics.$(echo "$h" | sed 's/.*://')"
done
cat "$dir"/metrics.* >"$dir/all"

step "/metrics is well-formed Prometheus text"
for f in "$dir"/metrics.*; do
    awk '
    /^# TYPE / { typed[$3] = $4; next }
    /^# HELP / { next }
    /^#/ { print FILENAME ": stray comment: " $0; bad = 1; next }
    {
        if ($0 !~ /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*\})? [-+]?([0-9.eE+-]+|Inf|NaN)$/) {
            print FILENAME ": bad sample: " $0; bad = 1; next
        }
        name = $0; sub(/[{ ].*/, "", name)
        if (name !~ /^kho_/) { print FILENAME ": no kho_ prefix: " name; bad = 1 }
        base = name; sub(/_(bucket|sum|count)$/, "", base)
        if (!(name in typed) && !(base in typed)) {
            print FILENAME ": no # TYPE for " name; bad = 1
        }
        if (name ~ /_bucket$/ && $0 ~ /le="\+Inf"/) {
            key = $0; sub(/ [^ ]*$/, "", key); sub(/_bucket/, "", key)
            sub(/,?le="\+Inf"/, "", key); sub(/\{\}$/, "", key)
            inf[key] = $NF
        }
        if (name ~ /_count$/) {
            key = $0; sub(/ [^ ]*$/, "", key); sub(/_count/, "", key)
            count[key] = $NF
        }
        samples++
    }
    END {
        for (k in count) {
            if (inf[k] != count[k]) {
                print FILENAME ": " k ": +Inf bucket " inf[k] " != count " count[k]
                bad = 1
            }
        }
        if (samples < 50) { print FILENAME ": only " samples " samples"; bad = 1 }
        exit bad
    }' "$f" >&2 || fail "malformed metrics in $f"
done
for m in kho_raft_term kho_raft_commit_index kho_raft_applied_index \
    kho_raft_last_index kho_raft_is_leader kho_raft_leader_changes_total \
    kho_proposals_total kho_entries_applied_total \
    kho_store_commit_duration_seconds_bucket kho_apply_duration_seconds_count \
    kho_store_used_bytes kho_store_map_bytes kho_peer_connected \
    kho_peer_frames_sent_total kho_peer_frames_received_total \
    kho_peer_frames_dropped_total kho_request_duration_seconds_bucket; do
    grep -q "^$m[{ ]" "$dir/metrics.$((KHO_BASE_PORT + 201))" ||
        fail "node 1 has no $m"
done
for r in '(meta)' citizens licences; do
    grep -q "^kho_raft_term{group=\"[0-9]*\",registry=\"$r\"}" "$dir/all" ||
        fail "no kho_raft_term for $r"
done
[ "$(grep -c '^kho_raft_is_leader{group="0",registry="(meta)"} 1' \
    "$dir/all")" = 1 ] || fail "not exactly one meta leader in the metrics"
grep -q '^kho_peer_connected{peer="2"} 1' \
    "$dir/metrics.$((KHO_BASE_PORT + 201))" || fail "node 1 not linked to 2"
grep -q '^kho_requests_total{op="put",err="KHO_OK"} [1-9]' "$dir/all" ||
    fail "no put counted"
grep -q '^kho_requests_total{op="get",err="KHO_ENOTFOUND"} [1-9]' \
    "$dir/all" || fail "no failed get counted"
grep -q '^kho_request_duration_seconds_count{op="get"} [1-9]' "$dir/all" ||
    fail "no get latency"

step "khoctl cluster health: healthy; cluster status shows replica lag"
wait_for health_exits 0 ||
    fail "cluster health: $(cat "$dir/health.out" "$dir/health.err")"
for r in '(meta)' citizens licences; do
    grep -q "$r .* yes" "$dir/health.out" ||
        fail "health table lacks $r: $(cat "$dir/health.out")"
done
"$CTL" cluster health --json >"$dir/out" || fail "cluster health --json"
grep -q '"healthy": *true' "$dir/out" || fail "health json: $(cat "$dir/out")"
"$CTL" cluster status --json >"$dir/out" || fail "cluster status --json"
grep -q '"replicas": *\[{' "$dir/out" || fail "no replicas: $(cat "$dir/out")"
grep -q '"lag": *[0-9]' "$dir/out" || fail "no lag: $(cat "$dir/out")"
"$CTL" cluster status >"$dir/out" || fail "cluster status"
grep -q 'MATCH *LAG *ACTIVE' "$dir/out" || fail "no replica table: $(cat "$dir/out")"

step "two of three nodes paused: unhealthy, node 1 not ready"
"$CL" pause 2 "$dir"
"$CL" pause 3 "$dir"
wait_for meta_unhealthy ||
    fail "cluster health with a paused majority: $(cat "$dir/health.err")"
grep -q 'no node reports leading it\|voters active' "$dir/health.err" ||
    fail "no reason on stderr: $(cat "$dir/health.err")"
wait_for ready_is 503 "$h1/ready" || fail "$h1/ready stayed $(http "$h1/ready")"
http "$h1/ready" >/dev/null
grep -q 'group 0 ((meta)): \(no leader known\|leader hearing\)' "$dir/body" ||
    fail "/ready body: $(cat "$dir/body")"
expect_http 200 "$h1/health"

step "resumed: healthy and ready again"
"$CL" resume 2 "$dir"
"$CL" resume 3 "$dir"
wait_for health_exits 0 ||
    fail "cluster health after resume: $(cat "$dir/health.err")"
for h in "$h1" "$h2" "$h3"; do
    wait_for ready_is 200 "$h/ready" || fail "$h/ready: $(cat "$dir/body")"
done

step "clean stop"
"$CL" stop "$dir"
if grep -l 'Sanitizer\|runtime error' "$dir"/node*.log >&2; then
    fail "sanitizer report in the node logs above"
fi
for f in "$dir"/node*.log; do
    grep -q 'stopped cleanly' "$f" || fail "$f: no clean stop"
done

echo "PASS: tests/integration/health.sh"
