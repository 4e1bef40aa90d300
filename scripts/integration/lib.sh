# Shared by the integration scripts: sourced, not run.
# Each script takes [-m MOUNTPOINT] (default: mount a fresh emulator in a temp dir, removed at exit),
# installs the Debian packages it needs, works on a region and devices of its own (created here,
# destroyed at exit, so the devices of a mount given with -m are left as they were), prints what it
# checks, and exits non-zero on any mismatch.
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

ctl() { "$daxfuse" "$@" -m "$MNT"; }

# mount_or_use "$@": sets MNT (-m MOUNTPOINT, or a fresh emulator unmounted at exit).
mount_or_use() {
  local opt OPTIND=1
  [ -x "$daxfuse" ] || "$top/scripts/setup"
  MNT="" WORK="" REGION="" DEVICES=()
  while getopts "m:" opt; do
    case $opt in m) MNT=$OPTARG ;; *) fail "usage: $name [-m MOUNTPOINT]" ;; esac
  done
  trap 'cleanup' EXIT
  if [ -n "$MNT" ]; then
    say "using $MNT"
    return
  fi
  WORK=$(mktemp -d /tmp/daxfuse-it.XXXXXX)
  MNT=$WORK/mnt
  mkdir "$MNT"
  "$daxfuse" mount "$MNT" --size 2M >/dev/null
  say "mounted a fresh emulator at $MNT"
}

# own_region SIZE [ALIGN]: a region of the script's own (destroyed at exit); sets REGION.
own_region() {
  REGION=$(ctl create-region -s "$1" ${2:+-a "$2"})
  REGION=${REGION#region}
  say "made region $REGION ($1) for this run"
}

# own_device SIZE: configure a device of SIZE in the script's region; sets DEV to its path.
own_device() {
  local made
  made=$(ctl create-device -r "$REGION" -s "$1")
  DEVICES+=("$made")
  DEV=$MNT/dax/$made
}

cleanup() {
  if [ -n "$REGION" ]; then
    local d
    for d in "${DEVICES[@]}"; do
      ctl disable-device "$d" >/dev/null 2>&1 || true
      ctl reconfigure-device "$d" -s 0 >/dev/null 2>&1 || true
    done
    ctl destroy-region "$REGION" >/dev/null || say "could not destroy region $REGION"
  fi
  if [ -n "$WORK" ]; then
    "$daxfuse" umount "$MNT" || umount -f "$MNT" || true
    rm -rf "$WORK"
  fi
}

dev_size() { stat -c %s "$1"; }
