#!/bin/sh
# member.sh - operating a cluster with real processes: a node far behind
# catches up by snapshot; the cluster grows 3 -> 5 and shrinks 5 -> 3 under
# a running write load (the meta leader is the first node removed) with no
# acknowledged write lost; leadership moves on request and drains off a
# node.
#
# Logs are compacted every 200 entries (--compact-entries) so that
# snapshots are exercised. Ports: KHO_BASE_PORT (default 28000 + offset).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
CL="$root/scripts/cluster.sh"
CTL="$root/build/bin/khoctl"
CHK="$root/build/bin/khocheck"
dir=$(mktemp -d "${TMPDIR:-/tmp}/kho-mem.XXXXXX")
export KHO_BASE_PORT=${KHO_BASE_PORT:-$((17000 + ($$ % 10) * 300))}
B=$KHO_BASE_PORT
url() { echo "tcp://127.0.0.1:$((B + $1))"; }
writer=""

cleanup() {
    [ -n "$writer" ] && kill "$writer" 2>/dev/null || true
    "$CL" stop "$dir" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM
. "$root/tests/integration/lib/common.sh"

conf_is() { [ "$("$CHK" conf "$1")" = "$2" ]; }

out=$(KHOD_FLAGS="--compact-entries 200" "$CL" start 3 "$dir") ||
    fail "cluster start"
eval "$(echo "$out" | grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS
acked="$dir/acked"
group=$("$CTL" registry describe demo --json |
    sed -n 's/.*"group": *\([0-9]*\).*/\1/p')
[ -n "$group" ] || fail "no group id for demo"

step "a node far behind catches up by snapshot"
"$CL" kill 3 "$dir"
"$CHK" write demo s- 600 "$acked" >/dev/null || fail "writes with node 3 down"
"$CL" restart 3 "$dir"
# Node 3's own replica (a read through node 3 could be redirected to a
# replica elsewhere while node 3 does not host demo yet).
applied_3() {
    "$CTL" --endpoints "$(url 3)" cluster status --json 2>/dev/null |
        tr '{' '\n' | grep '"registry":"demo","role"' |
        sed -n 's/.*"applied":\([0-9]*\).*/\1/p'
}
caught_up_3() {
    a=$(applied_3)
    [ -n "$a" ] && [ "$a" -ge 600 ]
}
until_ok 20 "node 3 catching up" caught_up_3
[ "$("$CTL" --endpoints "$(url 3)" get demo s-599 --serializable)" = val-s-599 ] ||
    fail "node 3's replica lacks s-599"
if ! grep -q "installing a snapshot" "$dir/node3.log"; then
    grep -h "compacted\|snapshot\|restart\|serving" "$dir"/node*.log >&2
    fail "node 3 caught up without a snapshot"
fi

step "grow 3 -> 5 under a write load"
all="$(url 1),$(url 2),$(url 3),$(url 4),$(url 5)"
KHO_ENDPOINTS=$all "$CHK" write demo g- 3000 "$acked" >"$dir/writer.out" &
writer=$!
[ "$("$CL" grow "$dir")" = 4 ] || fail "grow to 4"
[ "$("$CL" grow "$dir")" = 5 ] || fail "grow to 5"
export KHO_ENDPOINTS=$all
until_ok 20 "5 voters in the meta group" \
    conf_is 0 "1:voter 2:voter 3:voter 4:voter 5:voter"

step "shrink 5 -> 3 under the write load, the meta leader first"
first=$("$CL" leader "$dir") || fail "no meta leader"
second=1
[ "$first" = 1 ] && second=2
for n in "$first" "$second"; do
    "$CTL" member remove "$("$CL" name "$n")" || fail "member remove $n"
done
keep=""
for n in 1 2 3 4 5; do
    [ "$n" = "$first" ] || [ "$n" = "$second" ] || keep="$keep $n:voter"
done
keep=${keep# }
until_ok 30 "meta group down to $keep" conf_is 0 "$keep"
until_ok 30 "demo's group off nodes $first and $second" sh -c \
    "! '$CHK' conf $group | grep -q -e '^$first:' -e ' $first:' -e '^$second:' -e ' $second:'"
wait "$writer" || fail "writer: $(cat "$dir/writer.out")"
writer=""
cat "$dir/writer.out"
"$CL" kill "$first" "$dir"
"$CL" kill "$second" "$dir"
left=""
for n in 1 2 3 4 5; do
    [ "$n" = "$first" ] || [ "$n" = "$second" ] || left="$left${left:+,}$(url "$n")"
done
export KHO_ENDPOINTS=$left
"$CHK" verify demo "$acked" || fail "acknowledged writes lost in grow/shrink"
"$CTL" member list | grep -q removed || fail "member list shows no removal"

step "leader transfer and drain"
leader=$("$CL" leader "$dir" demo) || fail "no demo leader"
target=""
for n in 1 2 3 4 5; do
    case ",$left," in *",$(url "$n"),"*) [ "$n" != "$leader" ] && target=$n ;; esac
done
"$CTL" leader transfer "$group" "$target" || fail "leader transfer"
until_ok 10 "demo led by node $target" sh -c \
    "[ \"\$('$CL' leader '$dir' demo)\" = $target ]"
"$CTL" leader transfer --drain "$target" || fail "drain"
until_ok 10 "node $target leads nothing" sh -c \
    "! '$CTL' --endpoints $(url "$target") cluster status --json | grep -q '\"role\":\"leader\"'"
"$CHK" write demo t- 50 "$acked" >/dev/null || fail "writes after the drain"
"$CHK" verify demo "$acked" >/dev/null || fail "verify after the drain"

if grep -l 'Sanitizer\|runtime error' "$dir"/node*.log >&2; then
    fail "sanitizer report in the node logs above"
fi
echo "PASS: tests/integration/member.sh ($(wc -l <"$acked") acknowledged writes verified)"
