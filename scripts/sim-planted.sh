#!/bin/sh
# sim-planted.sh - proves the simulator catches real Raft bugs.
#
# A simulator that never fails proves nothing. The planted build
# (-DKHO_PLANTED_BUGS) can switch on one known Raft bug at a time (see enum
# raft_planted_bug in server/raft/raft.h); for each one, a sweep of
# PLANTED_SEEDS seeds must end with khosim exiting non-zero and printing
#
#   VIOLATION seed=S ...
#
# This script reports which seed caught each bug, and fails if any bug went
# unnoticed. Run it through `make sim-planted`, which builds the binary.
#
# Environment: KHOSIM (default build/planted/bin/khosim), PLANTED_SEEDS
# (default 3000), PLANTED_BUGS (default "1 2 3 4").
set -u

cd "$(dirname "$0")/.." || exit 1
KHOSIM="${KHOSIM:-build/planted/bin/khosim}"
PLANTED_SEEDS="${PLANTED_SEEDS:-3000}"
PLANTED_BUGS="${PLANTED_BUGS:-1 2 3 4}"
LOG_DIR="${LOG_DIR:-build/planted/logs}"

if [ ! -x "$KHOSIM" ]; then
    echo "sim-planted: $KHOSIM is not built (make build/planted/bin/khosim)" >&2
    exit 1
fi
mkdir -p "$LOG_DIR"

missed=""
for n in $PLANTED_BUGS; do
    log="$LOG_DIR/bug-$n.log"
    "$KHOSIM" --planted-bug "$n" --seeds "$PLANTED_SEEDS" >"$log" 2>&1
    rc=$?
    line=$(grep -m 1 'VIOLATION seed=' "$log")
    if [ "$rc" -ne 0 ] && [ -n "$line" ]; then
        seed=$(printf '%s\n' "$line" |
            sed -n 's/.*VIOLATION seed=\([0-9][0-9]*\).*/\1/p')
        case "$line" in
        *invariant=*)
            inv=$(printf '%s\n' "$line" |
                sed 's/.*invariant=\([^ ,:;]*\).*/\1/')
            ;;
        *)
            inv=$(printf '%s\n' "$line" |
                sed 's/.*VIOLATION seed=[0-9]*[ ,:;]*\([^ ,:;]*\).*/\1/')
            ;;
        esac
        echo "planted bug $n: caught by seed ${seed:-?} (invariant ${inv:-?})"
        continue
    fi
    missed="$missed $n"
    if [ "$rc" -eq 0 ]; then
        echo "planted bug $n: NOT caught: no violation in $PLANTED_SEEDS seeds"
    else
        echo "planted bug $n: NOT caught: khosim exited $rc without a" \
            "'VIOLATION seed=' line; last lines of $log:"
        tail -n 5 "$log" | sed 's/^/    /'
    fi
done

if [ -n "$missed" ]; then
    echo "sim-planted: FAILED: bug(s)$missed not caught; logs in $LOG_DIR" >&2
    exit 1
fi
echo "sim-planted: ok: every planted bug was caught"
