# Shared by the integration scripts: sourced, not run.
# Each script takes [-m MOUNTPOINT] (default: mount a fresh emulator in a temp dir, removed at exit),
# installs the Debian packages it needs, prints what it checks, and exits non-zero on any mismatch.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
daxfuse="$top/.venv/bin/daxfuse"
python="$top/.venv/bin/python"
name=$(basename "$0")

say() { echo "[$name] $*"; }
fail() { echo "[$name] FAIL: $*" >&2; exit 1; }
check() { say "check: $1"; shift; "$@" || fail "$*"; }

need_pkgs() {  # need_pkgs PKG...: apt-get install those not installed
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
  fi
}

# mount_or_use "daxfuse mount options" "$@": sets MNT; unmounts at exit what it mounted.
mount_or_use() {
  local opts=$1 opt OPTIND=1
  shift
  [ -x "$daxfuse" ] || "$top/scripts/setup"
  MNT=""
  while getopts "m:" opt; do
    case $opt in m) MNT=$OPTARG ;; *) fail "usage: $name [-m MOUNTPOINT]" ;; esac
  done
  if [ -n "$MNT" ]; then
    say "using $MNT"
    return
  fi
  WORK=$(mktemp -d /tmp/daxfuse-it.XXXXXX)
  MNT=$WORK/mnt
  mkdir "$MNT"
  trap 'cleanup' EXIT
  # shellcheck disable=SC2086
  "$daxfuse" mount "$MNT" $opts >/dev/null
  say "mounted a fresh emulator at $MNT ($opts)"
}

cleanup() {
  "$daxfuse" umount "$MNT" || umount -f "$MNT" || true
  rm -rf "$WORK"
}

dev_size() { stat -c %s "$1"; }
