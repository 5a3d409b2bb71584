#!/bin/sh
# Installs the Debian 12 packages exfleet needs to build and test, and only
# those that are missing. Safe to run again: it does nothing when all are there.
#
#   deploy/deps.sh            build and test packages
#   deploy/deps.sh --check    list what is missing, install nothing (exit 1 if any)
set -eu

packages="
build-essential cmake pkg-config git
libuv1-dev libssl-dev openssl
libprotobuf-c-dev protobuf-c-compiler
libcmocka-dev libsqlite3-dev sqlite3 libjansson-dev libinih-dev libh2o-dev
clang libclang-rt-14-dev
jq
curl chromium fonts-dejavu-core
gcc-mingw-w64-x86-64 wine wine64
"

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  -h|--help)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
  "") ;;
  *) echo "deps.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

if [ -z "$missing" ]; then
  echo "deps: all build and test packages are installed"
  exit 0
fi

echo "deps: missing:$missing"
[ "$check_only" = 1 ] && exit 1

if [ "$(id -u)" = 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root="sudo"
else
  echo "deps: cannot install as $(id -un): run this as root, or give this user sudo:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends$missing" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps: apt-get update"
$as_root apt-get update -qq
echo "deps: apt-get install$missing"
$as_root apt-get install -y -qq --no-install-recommends $missing
echo "deps: done"
