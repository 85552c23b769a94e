#!/usr/bin/env bash
# The Debian package in a clean root: a Debian 12 (bookworm) root built with debootstrap from
# Debian's packages (cached in ~/.cache/walvault/), the package installed with apt (which
# brings its dependencies and PostgreSQL 15 for the demo), then:
#   - the walvault system user, its directories and the configuration's owner and modes;
#   - the units, man pages, completions, logrotate file and example configuration in place;
#   - `walvault config check` as the walvault user on the installed configuration;
#   - a server with a password added: `config check`, `check` and the daemon (3 s, as the
#     walvault user) never print or log it, and the daemon's copy of it is 0600 walvault's;
#   - `walvault demo`: PostgreSQL archives into walvault and a second cluster recovers;
#   - purge: the logs go, the archive directory stays.
#
#   tests/package/install-test.sh [PACKAGE.deb]   (default: the newest in target/debian/)
# Needs root (debootstrap, chroot, mounts).
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '[package-test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
DEB=${1:-$(ls -t target/debian/walvault_*.deb 2>/dev/null | head -n 1)}
[[ -f $DEB ]] || fail "no package: run host-native/debian/build-deb.sh first"
[[ $EUID -eq 0 ]] || fail "needs root (debootstrap, chroot)"

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/walvault
BASE=$CACHE/debian-$SUITE-minbase.tar
mkdir -p "$CACHE"
if [[ ! -f $BASE ]]; then
  command -v debootstrap >/dev/null || {
    log "apt-get install debootstrap"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null
  }
  log "debootstrap --variant=minbase $SUITE from $MIRROR (cached in $BASE)"
  tmp=$(mktemp -d /tmp/walvault-debootstrap.XXXXXX)
  debootstrap --variant=minbase "$SUITE" "$tmp/root" "$MIRROR" >"$tmp/log" 2>&1 ||
    { tail -n 30 "$tmp/log" >&2; rm -rf "$tmp"; fail "debootstrap"; }
  tar -C "$tmp/root" -cf "$BASE.part" . && mv "$BASE.part" "$BASE"
  rm -rf "$tmp"
fi

ROOT=$(mktemp -d /tmp/walvault-chroot.XXXXXX)
cleanup() {
  for m in dev/shm dev/pts dev proc; do umount -l "$ROOT/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT
tar -C "$ROOT" -xf "$BASE"
mount -t proc proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Packages start no services in the root.
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod 755 "$ROOT/usr/sbin/policy-rc.d"
cp "$DEB" "$ROOT/tmp/walvault.deb"
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"; }

log "apt-get install ./walvault.deb postgresql-15 (in the clean root)"
in_root apt-get -o DPkg::Lock::Timeout=300 update -qq
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  /tmp/walvault.deb postgresql-15 >"$ROOT/tmp/apt.log" 2>&1 || { tail -n 40 "$ROOT/tmp/apt.log" >&2; fail "apt-get install"; }
in_root dpkg -s walvault | grep -qx 'Status: install ok installed' || fail "walvault not installed"

log "the user, directories and modes"
user=$(in_root getent passwd walvault) || fail "no walvault user"
IFS=: read -r _ _ uid _ _ home shell <<<"$user"
(( uid < 1000 )) || fail "walvault is not a system user: uid $uid"
[[ $home == /var/lib/walvault && $shell == /usr/sbin/nologin ]] || fail "walvault user: $user"
check_mode() {  # PATH MODE OWNER:GROUP
  local got; got=$(in_root stat -c '%a %U:%G' "$1")
  [[ $got == "$2 $3" ]] || fail "$1 is $got, expected $2 $3"
}
check_mode /var/lib/walvault 700 walvault:walvault
check_mode /var/log/walvault 750 walvault:adm
check_mode /etc/walvault.toml 640 root:walvault
for f in /usr/lib/systemd/system/walvault.service /usr/lib/systemd/system/walvault-serve.service \
  /etc/logrotate.d/walvault /usr/share/doc/walvault/examples/walvault.toml \
  /usr/share/man/man1/walvault.1.gz /usr/share/man/man1/walvault-daemon.1.gz \
  /usr/share/man/man1/walvault-get-wal.1.gz /usr/share/bash-completion/completions/walvault \
  /usr/share/zsh/vendor-completions/_walvault /usr/share/fish/vendor_completions.d/walvault.fish; do
  [[ -f $ROOT$f ]] || fail "missing $f"
done
grep -q '^ExecStart=/usr/bin/walvault -c /etc/walvault.toml daemon$' "$ROOT/usr/lib/systemd/system/walvault.service" ||
  fail "walvault.service does not start the daemon"
grep -q 'walvault daemon' <(zcat "$ROOT/usr/share/man/man1/walvault-daemon.1.gz") || fail "walvault-daemon(1)"
# Not enabled: with no server configured there is nothing to run yet.
[[ ! -e $ROOT/etc/systemd/system/multi-user.target.wants/walvault.service ]] || fail "enabled at install"

log "config check as the walvault user"
in_root runuser -u walvault -- walvault -c /etc/walvault.toml config check >"$ROOT/tmp/check.out" 2>&1 ||
  { cat "$ROOT/tmp/check.out" >&2; fail "config check"; }

log "a server with a password: kept out of output and the log; the daemon's copy private"
cat >>"$ROOT/etc/walvault.toml" <<'TOML'

[pg]
conninfo = "host=/nonexistent user=walvault password=pkg-test-S3cret dbname=postgres"
TOML
in_root runuser -u walvault -- walvault -c /etc/walvault.toml config check >"$ROOT/tmp/check2.out" 2>&1 ||
  { cat "$ROOT/tmp/check2.out" >&2; fail "config check with a server"; }
# No PostgreSQL there: check fails, but says so without the password.
in_root runuser -u walvault -- walvault -c /etc/walvault.toml check pg >"$ROOT/tmp/check3.out" 2>&1 || true
grep -q 'PostgreSQL' "$ROOT/tmp/check3.out" || { cat "$ROOT/tmp/check3.out" >&2; fail "check pg"; }
in_root runuser -u walvault -- timeout -s TERM 3 walvault -c /etc/walvault.toml daemon >"$ROOT/tmp/daemon.out" 2>&1 || true
grep -q 'walvault daemon stopped' "$ROOT/tmp/daemon.out" || { cat "$ROOT/tmp/daemon.out" >&2; fail "the daemon"; }
grep -q 'daemon started' "$ROOT/var/log/walvault/walvault.log" || fail "no daemon line in the log"
check_mode /var/lib/walvault/.walvault-daemon.toml 600 walvault:walvault
for f in check2.out check3.out daemon.out; do
  ! grep -q pkg-test-S3cret "$ROOT/tmp/$f" || { cat "$ROOT/tmp/$f" >&2; fail "the password is in $f"; }
done
! grep -q pkg-test-S3cret "$ROOT/var/log/walvault/walvault.log" || fail "the password is in the log"

log "walvault demo (in the clean root)"
in_root walvault demo --dir /tmp/demo >"$ROOT/tmp/demo.out" 2>&1 || { tail -n 40 "$ROOT/tmp/demo.out" >&2; fail "walvault demo"; }
grep -q 'OK: the recovered data matches the primary' "$ROOT/tmp/demo.out" || { cat "$ROOT/tmp/demo.out" >&2; fail "the demo did not compare the data"; }
tail -n 3 "$ROOT/tmp/demo.out" >&2

log "purge"
touch "$ROOT/var/lib/walvault/kept" "$ROOT/var/log/walvault/walvault.log"
in_root dpkg --purge walvault >/dev/null
[[ ! -e $ROOT/var/log/walvault ]] || fail "purge left /var/log/walvault"
[[ -e $ROOT/var/lib/walvault/kept ]] || fail "purge removed the archive directory"
[[ ! -e $ROOT/usr/bin/walvault ]] || fail "purge left /usr/bin/walvault"
log "ok: $(basename "$DEB") installs, runs its demo and purges cleanly in a clean $SUITE root"
