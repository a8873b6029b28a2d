#!/bin/sh
# Installs the Debian packages kho needs to build, test and run, when they are
# missing. Safe to run again: it does nothing once everything is present.
set -eu

PKGS="build-essential pkg-config clang clang-format \
liblmdb-dev lmdb-utils libnng-dev libprotobuf-c-dev protobuf-c-compiler \
liburcu-dev libcmocka-dev libjansson-dev libinih-dev curl"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "install-deps: installing:$missing" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
