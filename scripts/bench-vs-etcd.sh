#!/bin/bash
# bench-vs-etcd.sh - kho against etcd 3.4 on this machine, side by side.
#
#   scripts/bench-vs-etcd.sh [--mem1m] [--profile]     (make bench)
#
# Builds etcdload with the etcd anchor's build.sh (into build/bench/), then
# runs the same workloads - put with 1 client, put with 64, linearizable
# get with 64, serializable get with 64; 16-byte keys, 256-byte values, a
# key space of 100000 - first against a 3-node kho cluster, then against a
# 3-member etcd cluster, both with their data under build/bench/run (one
# disk), each cluster alone on the machine while it is measured. It prints
# a table: ops/s, p50/p99, server CPU per operation summed over the three
# members, resident memory per member, and each kho/etcd ratio; then the
# issue's targets, met or not. bench/README.md explains the method.
#
#   --mem1m    also load 1,000,000 keys into a fresh cluster of each and
#              compare resident memory per member (slow: etcd loads them
#              one put at a time, about 2-3 minutes)
#   --profile  also record the kho leader with `perf record` (DWARF call
#              graphs) for PROFILE_SECONDS (20) under put with 64 clients,
#              into build/bench/perf.data; the top of the report goes to
#              build/bench/perf-top.txt and stderr
#
# Environment: BENCH_DIR (default build/bench), ETCD_ANCHOR (default
# ../shared/anchors/etcd), KHO_BASE_PORT (default 9100: kho's client, peer
# and HTTP ports are 9101-9103, 9201-9203, 9301-9303, clear of etcd's
# 12379/12380, 22379/22380, 32379/32380), PUT1_TOTAL (3000), PUT64_TOTAL
# (60000), GET64_TOTAL (60000), GETSER64_TOTAL (100000), KEYSPACE
# (100000), MEM_KEYS (1000000), KHOD_FLAGS (default "--map-size-mb 8192",
# as the anchor gives etcd an 8 GiB backend quota).
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "$0")/.." && pwd)
anchor=${ETCD_ANCHOR:-$root/../shared/anchors/etcd}
out=${BENCH_DIR:-$root/build/bench}
run=$out/run
export KHO_BASE_PORT=${KHO_BASE_PORT:-9100}
export KHOD_FLAGS=${KHOD_FLAGS:---map-size-mb 8192}
export KHO_REGISTRIES=bench
PUT1_TOTAL=${PUT1_TOTAL:-3000}
PUT64_TOTAL=${PUT64_TOTAL:-60000}
GET64_TOTAL=${GET64_TOTAL:-60000}
GETSER64_TOTAL=${GETSER64_TOTAL:-100000}
KEYSPACE=${KEYSPACE:-100000}
MEM_KEYS=${MEM_KEYS:-1000000}
PROFILE_SECONDS=${PROFILE_SECONDS:-20}
SAMPLE_S=0.2

khobench=$root/build/bin/khobench
etcdload=$out/etcdload
kho_dir=$run/kho
etcd_dir=$run/etcd
etcd_eps=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379
kho_eps=tcp://127.0.0.1:$((KHO_BASE_PORT + 1)),tcp://127.0.0.1:$((KHO_BASE_PORT + 2)),tcp://127.0.0.1:$((KHO_BASE_PORT + 3))
hz=$(getconf CLK_TCK)

mem1m=0
profile=0
for a in "$@"; do
    case "$a" in
    --mem1m) mem1m=1 ;;
    --profile) profile=1 ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
        exit 2
        ;;
    esac
done

die() { echo "bench-vs-etcd: $*" >&2; exit 1; }
say() { echo "--- $*" >&2; }

# --- Clusters ------------------------------------------------------------------

kho_up=0
etcd_up=0
sampler=""

cleanup() {
    [ -z "$sampler" ] || kill "$sampler" 2>/dev/null || true
    [ "$kho_up" = 0 ] || "$root/scripts/cluster.sh" stop "$kho_dir" >/dev/null 2>&1 || true
    [ "$etcd_up" = 0 ] || "$anchor/cluster.sh" stop "$etcd_dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

kho_start() {
    for p in $((KHO_BASE_PORT + 1)) $((KHO_BASE_PORT + 101)) $((KHO_BASE_PORT + 201)); do
        port_free "$p" || die "port $p is taken (set KHO_BASE_PORT)"
    done
    rm -rf "$kho_dir"
    kho_up=1
    "$root/scripts/cluster.sh" start 3 "$kho_dir" >/dev/null
    pidfiles=("$kho_dir"/node1.pid "$kho_dir"/node2.pid "$kho_dir"/node3.pid)
}

kho_stop() {
    "$root/scripts/cluster.sh" stop "$kho_dir" >/dev/null
    kho_up=0
}

etcd_start() {
    for p in 12379 22379 32379 12380 22380 32380; do
        port_free "$p" || die "etcd port $p is taken"
    done
    etcd_up=1
    "$anchor/cluster.sh" start "$etcd_dir"
    pidfiles=("$etcd_dir"/e1.pid "$etcd_dir"/e2.pid "$etcd_dir"/e3.pid)
}

etcd_stop() {
    "$anchor/cluster.sh" stop "$etcd_dir"
    etcd_up=0
}

# --- Measuring -------------------------------------------------------------------

# user+system CPU ticks of the current members (as the anchor's cpu-of.sh
# sums them, without a process per sample).
cpu_ticks() {
    local t=0 f st
    for f in "${pidfiles[@]}"; do
        read -r -a st <"/proc/$(cat "$f")/stat"
        t=$((t + st[13] + st[14]))
    done
    echo "$t"
}

# Resident memory per member, in MB (VmRSS, mean of the members).
rss_mb() {
    local f kb=0 n=0 v
    for f in "${pidfiles[@]}"; do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$(cat "$f")/status")
        kb=$((kb + v))
        n=$((n + 1))
    done
    awk -v kb="$kb" -v n="$n" 'BEGIN { printf "%.1f", kb / n / 1024 }'
}

# The CPU ticks at time T, interpolated between the samples of FILE.
cpu_at() {
    awk -v T="$2" '
        { t[NR] = $1; c[NR] = $2 }
        END {
            if (T <= t[1]) { print c[1]; exit }
            for (i = 2; i <= NR; i++)
                if (t[i] >= T) {
                    f = (T - t[i-1]) / (t[i] - t[i-1])
                    print c[i-1] + f * (c[i] - c[i-1]); exit
                }
            print c[NR]
        }' "$1"
}

# A number field of a flat JSON line.
jnum() {
    sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p" <<<"$1"
}

# run_one SYSTEM NAME COMMAND...: runs one load, samples the members' CPU
# meanwhile, and appends "SYSTEM NAME ops p50 p99 cpu_us_per_op rss_mb ok
# errors" to $results. CPU counts only the measured window: the last
# `seconds` (from the JSON line) before the tool exited, so a preload is
# left out for both systems alike.
run_one() {
    local sys=$1 name=$2
    shift 2
    local samples=$out/cpu-$sys-$name.txt json t_end secs ok c0 c1 cpu
    : >"$samples"
    (
        while :; do
            echo "$EPOCHREALTIME $(cpu_ticks)"
            sleep "$SAMPLE_S"
        done
    ) >>"$samples" 2>/dev/null &
    sampler=$!
    say "$sys $name: $*"
    json=$("$@" | tail -n 1) || die "$sys $name failed: $json"
    t_end=$EPOCHREALTIME
    echo "$t_end $(cpu_ticks)" >>"$samples"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    sampler=""
    echo "$json" >"$out/$sys-$name.json"
    echo "    $json" >&2
    secs=$(jnum "$json" seconds)
    ok=$(jnum "$json" ok)
    sort -n "$samples" -o "$samples"
    c0=$(cpu_at "$samples" "$(awk -v a="$t_end" -v b="$secs" 'BEGIN { printf "%.6f", a - b }')")
    c1=$(cpu_at "$samples" "$t_end")
    cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v ok="$ok" \
        'BEGIN { printf "%.1f", (ok > 0 ? (b - a) / hz / ok * 1e6 : 0) }')
    echo "$sys $name $(jnum "$json" ops_per_sec) $(jnum "$json" p50_ms)" \
        "$(jnum "$json" p99_ms) $cpu $(rss_mb) $ok $(jnum "$json" errors)" >>"$results"
}

kho_load() {
    "$khobench" "$@" --endpoints "$kho_eps" --registry bench --key-size 16 \
        --val-size 256 --keyspace "$KEYSPACE" --json
}

etcd_load() {
    "$etcdload" -endpoints "$etcd_eps" -key-size 16 -val-size 256 \
        -keyspace "$KEYSPACE" "$@"
}

run_workloads() {
    local sys=$1 load=${1}_load
    run_one "$sys" put1 "$load" "${args_put1[@]}"
    run_one "$sys" put64 "$load" "${args_put64[@]}"
    run_one "$sys" get64 "$load" "${args_get64[@]}"
    run_one "$sys" getser64 "$load" "${args_getser64[@]}"
}

# --- Set-up ------------------------------------------------------------------------

[ -d "$anchor" ] || die "no etcd anchor at $anchor (set ETCD_ANCHOR)"
[ -x "$khobench" ] || die "build it first: make build/bin/khobench"
mkdir -p "$out"
if [ ! -x "$etcdload" ] || [ "$anchor/etcdload.go" -nt "$etcdload" ]; then
    say "building etcdload with $anchor/build.sh"
    "$anchor/build.sh" "$etcdload" >&2
fi
command -v etcd >/dev/null || die "etcd not installed (the anchor's build.sh installs etcd-server)"

results=$out/results.txt
: >"$results"
load1=$(cut -d' ' -f1 /proc/loadavg)
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), data on $(df -P "$out" | awk 'NR == 2 { print $1 }')"
say "machine: $machine; load average $load1 before the run"
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    say "warning: the machine is busy (load $load1): the figures will be noisy"
fi

# The same shape for both: kho gives each thread its own client (a client
# sends one request at a time); etcdload shares 8 gRPC connections (HTTP/2
# multiplexes), its default.
args_put1=(put --clients 1 --total "$PUT1_TOTAL")
args_put64=(put --clients 64 --total "$PUT64_TOTAL")
args_get64=(get --clients 64 --total "$GET64_TOTAL")
args_getser64=(getser --clients 64 --total "$GETSER64_TOTAL")

say "kho: 3 nodes, base port $KHO_BASE_PORT, data in $kho_dir, khod $KHOD_FLAGS"
kho_start
run_workloads kho
if [ "$profile" = 1 ]; then
    command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"
    leader=$("$root/scripts/cluster.sh" leader "$kho_dir" bench)
    lpid=$(cat "$kho_dir/node$leader.pid")
    say "profile: perf record on the leader (node $leader, pid $lpid) for $PROFILE_SECONDS s under put, 64 clients"
    kho_load put --clients 64 --duration $((PROFILE_SECONDS + 5)) \
        >"$out/kho-profile-load.json" &
    loadpid=$!
    sleep 2
    # DWARF unwinding: Debian's libnng and liblmdb have no frame pointers.
    perf record -F 499 --call-graph dwarf,8192 -p "$lpid" -o "$out/perf.data" \
        -- sleep "$PROFILE_SECONDS" 2>"$out/perf-record.log" >/dev/null
    wait "$loadpid" || true
    # head closes its pipe early: no pipefail here.
    (
        set +e +o pipefail
        report() {
            perf report -i "$out/perf.data" --stdio -g none "$@" 2>/dev/null |
                grep -E '^ +[0-9]'
        }
        echo "by thread:"
        report --no-children --sort comm
        echo "self time by symbol:"
        report --no-children --sort dso,symbol | head -n 25
        echo "raft thread, with callees:"
        report --comm khod --children --sort symbol | head -n 25
    ) >"$out/perf-top.txt"
    say "profile: $(cat "$out/kho-profile-load.json")"
    say "profile: top symbols (self time), $out/perf-top.txt:"
    cat "$out/perf-top.txt" >&2
fi
kho_stop

args_put1=(-op put -clients 1 -conns 1 -total "$PUT1_TOTAL")
args_put64=(-op put -clients 64 -conns 8 -total "$PUT64_TOTAL")
args_get64=(-op get -clients 64 -conns 8 -total "$GET64_TOTAL")
args_getser64=(-op getser -clients 64 -conns 8 -total "$GETSER64_TOTAL")

say "etcd: 3 members, data in $etcd_dir"
etcd_start
run_workloads etcd
etcd_stop

if [ "$mem1m" = 1 ]; then
    say "memory at $MEM_KEYS keys: fresh clusters, one after the other"
    kho_start
    # A longer bound per call: a compaction at this size stalls a group.
    KEYSPACE=$MEM_KEYS run_one kho mem1m kho_load getser --clients 64 \
        --total 1000 --timeout 30000
    kho_stop
    etcd_start
    KEYSPACE=$MEM_KEYS run_one etcd mem1m etcd_load -op getser -clients 64 \
        -conns 8 -total 1000
    etcd_stop
fi

# --- The table ---------------------------------------------------------------------

{
    echo "kho $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?') vs $(etcd --version | head -n 1) on $machine"
    echo "load average before $load1, after $(cut -d' ' -f1 /proc/loadavg); 3 members each, clients on the same machine"
    echo
} | tee "$out/table.txt"
awk -v mem1m="$mem1m" '
    { key = $1 " " $2; ops[key] = $3; p50[key] = $4; p99[key] = $5
      cpu[key] = $6; rss[key] = $7 }
    function r(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "-" }
    BEGIN {
        n = split("put1 put64 get64 getser64 mem1m", names, " ")
        label["put1"] = "put, 1 client"; label["put64"] = "put, 64 clients"
        label["get64"] = "get, 64 clients"; label["getser64"] = "get ser., 64 clients"
        label["mem1m"] = "1M keys loaded"
    }
    END {
        printf "%-21s %10s %10s %7s %15s %15s %9s %9s %7s %8s %8s %7s\n",
            "workload", "kho ops/s", "etcd ops/s", "ratio", "kho p50/p99 ms",
            "etcd p50/p99 ms", "kho us/op", "etcd us/op", "ratio", "kho RSS",
            "etcd RSS", "ratio"
        for (i = 1; i <= n; i++) {
            w = names[i]; k = "kho " w; e = "etcd " w
            if (!(k in ops) || !(e in ops)) continue
            if (w == "mem1m") {
                printf "%-21s %10s %10s %7s %15s %15s %9s %9s %7s %7.1fM %7.1fM %7s\n",
                    label[w], "-", "-", "-", "-", "-", "-", "-", "-",
                    rss[k], rss[e], r(rss[k], rss[e])
                continue
            }
            printf "%-21s %10.0f %10.0f %7s %15s %15s %9.1f %9.1f %7s %7.1fM %7.1fM %7s\n",
                label[w], ops[k], ops[e], r(ops[k], ops[e]),
                sprintf("%.2f/%.2f", p50[k], p99[k]),
                sprintf("%.2f/%.2f", p50[e], p99[e]),
                cpu[k], cpu[e], r(cpu[k], cpu[e]), rss[k], rss[e], r(rss[k], rss[e])
        }
        print ""
        print "targets (kho/etcd, same run):"
        t("put, 64 clients: ops/s >= 5x", ops["kho put64"] >= 5 * ops["etcd put64"], r(ops["kho put64"], ops["etcd put64"]))
        t("put, 64 clients: p99 <= etcd", p99["kho put64"] <= p99["etcd put64"], sprintf("%.2f vs %.2f ms", p99["kho put64"], p99["etcd put64"]))
        t("put, 1 client: p50 <= 0.5x", p50["kho put1"] <= 0.5 * p50["etcd put1"], r(p50["kho put1"], p50["etcd put1"]))
        t("linearizable get, 64: ops/s >= 5x", ops["kho get64"] >= 5 * ops["etcd get64"], r(ops["kho get64"], ops["etcd get64"]))
        t("serializable get, 64: ops/s >= 5x", ops["kho getser64"] >= 5 * ops["etcd getser64"], r(ops["kho getser64"], ops["etcd getser64"]))
        t("server CPU per put (64 clients) <= 0.2x", cpu["kho put64"] <= 0.2 * cpu["etcd put64"], r(cpu["kho put64"], cpu["etcd put64"]))
        if (mem1m)
            t("RSS per member at 1M keys <= 0.5x", rss["kho mem1m"] <= 0.5 * rss["etcd mem1m"], r(rss["kho mem1m"], rss["etcd mem1m"]))
        else
            printf "  %-42s %-8s %s\n", "RSS per member at 1M keys <= 0.5x", "not run", "(--mem1m)"
    }
    function t(what, ok, got) { printf "  %-42s %-8s %s\n", what, ok ? "met" : "NOT met", got }
' "$results" | tee -a "$out/table.txt"
