#!/bin/sh
# run-demo.sh DIR - `make run`: a 3-node kho cluster in the foreground with
# a demo registry, a registry of 4 shards (licences) and a few sample
# records. Ctrl-C stops every node.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build/run}
CL="$root/scripts/cluster.sh"
CTL="$root/build/bin/khoctl"
mkdir -p "$dir"

stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping the cluster..."
    "$CL" stop "$dir" || true
    exit 0
}
trap stop INT TERM EXIT

eval "$(KHO_REGISTRIES=${KHO_REGISTRIES:-demo,licences:4} "$CL" start 3 "$dir" |
    grep '^KHO_ENDPOINTS=')"
export KHO_ENDPOINTS
"$CTL" --name hanoi-police put demo citizen/001 \
    '{"name":"Nguyen Van A","province":"hanoi"}' 2>/dev/null
"$CTL" --name hue-health put demo citizen/002 \
    '{"name":"Tran Thi B","province":"hue"}' 2>/dev/null
"$CTL" --name hanoi-transport put demo licence/77A-12345 \
    '{"holder":"citizen/001","class":"B2"}' 2>/dev/null
for plate in 29A-10001 43B-20002 51F-30003 75C-40004; do
    "$CTL" --name transport put licences "$plate" '{"class":"B2"}' 2>/dev/null
done

cat <<EOT

kho: 3 nodes running (data and logs in $dir).

  export KHO_ENDPOINTS=$KHO_ENDPOINTS
  build/bin/khoctl cluster status
  build/bin/khoctl registry list
  build/bin/khoctl get demo citizen/001
  build/bin/khoctl get demo citizen/001 --json
  build/bin/khoctl --name me put demo citizen/003 '{"name":"Le Van C"}'
  echo '{"big":"json"}' | build/bin/khoctl put demo doc/1 -
  build/bin/khoctl scan demo --prefix citizen/
  build/bin/khoctl put demo citizen/001 '{"name":"Nguyen Van A","moved":"hue"}'
  build/bin/khoctl history demo citizen/001
  printf 'cmp licence/77A-12345 version = 1\nput licence/77A-12345 renewed\n' |
      build/bin/khoctl txn demo
  build/bin/khoctl registry create land
  build/bin/khoctl shard list licences    # 4 shards: replicas and leaders
  build/bin/khoctl scan licences          # merged across the shards
  build/bin/khoctl del demo citizen/002
  scripts/cluster.sh leader $dir demo     # which node leads demo's group
  scripts/cluster.sh kill 2 $dir          # SIGKILL node 2; restart 2 $dir

EOT
"$CTL" cluster status
echo
echo "Ctrl-C stops the cluster."
while :; do sleep 3600; done
