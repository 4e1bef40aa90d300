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

# mount_or_use "$@": sets MNT (-m MOUNTPOINT, or a fresh emulator unmounted at exit), and
# SCRATCH, a directory for the script's own files, removed at exit whatever happens.
mount_or_use() {
  local opt OPTIND=1
  [ -x "$daxfuse" ] || "$top/scripts/setup"
  MNT="" WORK="" REGION="" DEVICES=()
  SCRATCH=$(mktemp -d /tmp/daxfuse-it-scratch.XXXXXX)
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
  rm -rf "$SCRATCH"
}

dev_size() { stat -c %s "$1"; }

# word_at DEV OFFSET: the 64-bit word at OFFSET of DEV, read through FUSE.
word_at() {
  "$python" -c "import os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(struct.unpack('<Q', os.pread(fd, 8, int(sys.argv[2])))[0])" "$1" "$2"
}

# disable_under PATTERN CMD...: CMD maps $DEV, counts at its offset 0 nonstop and prints
# "ready". The device is disabled under it: the disable must return, CMD must end as its next
# store faults (saying PATTERN, an extended regex), and what it stored before must be in the
# device once it is enabled again.
disable_under() {
  local pattern=$1 out runner status devname
  shift
  devname=$(basename "$DEV")
  out=$SCRATCH/disable_under.out
  ( st=0; "$@" >"$out" 2>&1 || st=$?; echo $st >"$out.status" ) 2>/dev/null &
  runner=$!
  for _ in $(seq 300); do grep -q ready "$out" && break; sleep 0.1; done
  grep -q ready "$out" || fail "$1 did not start: $(cat "$out")"
  check "disable-device returns while it stores" timeout 60 "$daxfuse" disable-device "$devname" -m "$MNT"
  timeout 30 tail --pid=$runner -f /dev/null || fail "it still runs 30 s after the disable: $(cat "$out")"
  wait $runner || true
  status=$(cat "$out.status")
  grep -qE "$pattern" "$out" || fail "it ended (status $status) without saying $pattern: $(cat "$out")"
  say "it ended (status $status): $(grep -m1 -E "$pattern" "$out")"
  check "enable-device" "$daxfuse" enable-device "$devname" -m "$MNT"
  check "its stores before the disable are in the device" test "$(word_at "$DEV" 0)" -ge 1000
}
