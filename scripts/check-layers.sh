#!/bin/sh
# check-layers.sh - keeps the consensus core pure.
#
# server/raft/ must stay a deterministic state machine: no NNG, LMDB, urcu or
# protobuf, no I/O, no clock, no ambient randomness (ARCHITECTURE.md, "The
# consensus core"). This is what lets tests/sim replay any seed exactly. The
# check is a grep over the code with comments and string literals blanked
# out, so prose about clocks in a comment does not trip it.
#
# Exit 0 and "layers: ok" when clean; exit 1 naming each file:line otherwise.
# An optional argument checks another directory (used to test the checker).
set -eu

cd "$(dirname "$0")/.."
dir="${1:-server/raft}"

if [ ! -d "$dir" ]; then
    echo "layers: $dir does not exist" >&2
    exit 1
fi

files=$(find "$dir" -type f \( -name '*.c' -o -name '*.h' \) | sort)
if [ -z "$files" ]; then
    echo "layers: ok (no sources in $dir yet)"
    exit 0
fi

# Headers that bring a library the core must not depend on, or that imply
# I/O, threads or clocks.
bad_headers='nng/|nng\.h|lmdb\.h|urcu|protobuf-c|[^"<>]*\.pb-c\.h'
bad_headers="$bad_headers"'|stdio\.h|time\.h|sys/time\.h|unistd\.h|pthread\.h'
bad_headers="$bad_headers"'|threads\.h|fcntl\.h|sys/socket\.h|sys/stat\.h'
bad_headers="$bad_headers"'|sys/mman\.h|signal\.h'

# Calls that read a clock, use hidden global randomness, or do I/O.
# malloc and friends are allowed. A name preceded by a word character
# (raft_time(, prng_rand() or by . or -> (a struct member) is not a call
# of the libc function.
bad_calls='time|clock_gettime|gettimeofday|clock|rand|srand|random|srandom'
bad_calls="$bad_calls"'|rand_r|drand48|printf|fprintf|fopen|puts|fputs|perror'
bad_calls="$bad_calls"'|sleep|usleep|nanosleep|getenv'

# shellcheck disable=SC2086
BAD_HEADERS="$bad_headers" BAD_CALLS="$bad_calls" awk '
# scan(): splits one line into `code` (comments and the contents of string
# and character literals blanked) and `kept` (comments blanked, literals
# kept, for include paths). `incomment` carries a /* */ across lines.
function scan(line,    i, c, n, q, lit) {
    code = ""
    kept = ""
    n = length(line)
    i = 1
    while (i <= n) {
        c = substr(line, i, 1)
        if (incomment) {
            if (substr(line, i, 2) == "*/") { incomment = 0; i += 2 }
            else { i++ }
            code = code " "; kept = kept " "
            continue
        }
        if (substr(line, i, 2) == "/*") {
            incomment = 1; i += 2; code = code " "; kept = kept " "
            continue
        }
        if (substr(line, i, 2) == "//") { break }
        if (c == "\"" || c == sq) {
            q = c
            lit = c
            i++
            while (i <= n && substr(line, i, 1) != q) {
                if (substr(line, i, 1) == "\\") { lit = lit substr(line, i, 1); i++ }
                lit = lit substr(line, i, 1)
                i++
            }
            code = code q q
            kept = kept lit q
            i++
            continue
        }
        code = code c; kept = kept c
        i++
    }
}
BEGIN {
    sq = sprintf("%c", 39)
    bad_headers = ENVIRON["BAD_HEADERS"]
    bad_calls = ENVIRON["BAD_CALLS"]
}
FNR == 1 { incomment = 0 }
{
    scan($0)
    if (kept ~ /^[ \t]*#[ \t]*include/) {
        if (kept ~ ("[<\"/](" bad_headers ")")) {
            sub(/^[ \t]*/, "", kept)
            printf "%s:%d: forbidden include in the raft core: %s\n", FILENAME, FNR, kept
            bad = 1
        }
        next
    }
    if (match(code, "(^|[^A-Za-z0-9_.>])(" bad_calls ")[ \t]*[(]")) {
        call = substr(code, RSTART, RLENGTH)
        sub(/^[^A-Za-z_]/, "", call)
        sub(/[ \t]*[(]$/, "", call)
        printf "%s:%d: forbidden call in the raft core: %s()\n", FILENAME, FNR, call
        bad = 1
    }
}
END { exit bad }
' $files || {
    echo "layers: FAILED: $dir must do no I/O, read no clock and use no" \
        "nng/lmdb/urcu/protobuf (see ARCHITECTURE.md)" >&2
    exit 1
}

echo "layers: ok"
