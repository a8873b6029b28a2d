# common.sh - what the integration scripts share, sourced by them once they
# have set $dir (their scratch directory: node logs are $dir/node*.log, or
# $dir/*/node*.log for scripts that run several clusters).

# fail MESSAGE: says why, shows the end of every node's log, exits 1.
fail() {
    echo "FAIL: $*" >&2
    for f in "$dir"/node*.log "$dir"/*/node*.log; do
        [ -f "$f" ] || continue
        echo "--- $f" >&2
        tail -n 15 "$f" >&2
    done
    exit 1
}

step() { echo "--- $*"; }

# until_ok SECONDS WHAT CMD...: retries CMD every 0.2 s; fails with WHAT
# when SECONDS pass.
until_ok() {
    t=$(($1 * 5))
    what=$2
    shift 2
    while ! "$@" >/dev/null 2>&1; do
        t=$((t - 1))
        [ "$t" -gt 0 ] || fail "timed out: $what"
        sleep 0.2
    done
}

# stop_checked CLUSTER_DIR: stops a cluster.sh cluster; fails on a sanitizer
# report (KHOD may be an ASan+UBSan build) or a node that did not stop
# cleanly.
stop_checked() {
    "$root/scripts/cluster.sh" stop "$1"
    if grep -l 'Sanitizer\|runtime error' "$1"/node*.log >&2; then
        fail "sanitizer report in the node logs above"
    fi
    for f in "$1"/node*.log; do
        grep -q 'stopped cleanly' "$f" || fail "$f: no clean stop"
    done
}
