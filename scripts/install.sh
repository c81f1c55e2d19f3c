#!/usr/bin/env bash
# Installs Lanyard: binaries, systemd units, sysusers/tmpfiles snippets, example policy, docs.
#   scripts/install.sh                       build release and install under /usr/local
#   PREFIX=/usr DESTDIR=/tmp/pkg scripts/install.sh          staged install (packaging)
#   scripts/install.sh --bin-dir .build/debug                install already-built binaries
# Layout (relative to $DESTDIR$PREFIX):
#   bin/lanyardd, bin/lanyardctl
#   lib/systemd/system/lanyard.service, lanyard-agent.socket, lanyard-admin.socket, lanyard-credentials.socket
#   lib/sysusers.d/lanyard.conf, lib/tmpfiles.d/lanyard.conf
#   share/lanyard/policy.example.yaml, share/doc/lanyard/{README.md,operator.md,security.md}
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
bin_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    *) echo "install.sh: unknown argument '$1' (use --bin-dir DIR, PREFIX=, DESTDIR=)" >&2; exit 2 ;;
  esac
done
if [ -z "$bin_dir" ]; then
  source scripts/lib.sh
  ensure_debs "${LANYARD_DEBS[@]}"
  swift build -c release --product lanyardd >&2
  swift build -c release --product lanyardctl >&2
  bin_dir="$(swift build -c release --show-bin-path)"
fi
root="$DESTDIR$PREFIX"
install -d "$root/bin" "$root/lib/systemd/system" "$root/lib/sysusers.d" "$root/lib/tmpfiles.d" \
  "$root/share/lanyard" "$root/share/doc/lanyard"
install -m 0755 "$bin_dir/lanyardd" "$bin_dir/lanyardctl" "$root/bin/"
sed -e "s|@BINDIR@|$PREFIX/bin|g" -e "s|@DOCDIR@|$PREFIX/share/doc/lanyard|g" systemd/lanyard.service.in > "$root/lib/systemd/system/lanyard.service"
chmod 0644 "$root/lib/systemd/system/lanyard.service"
install -m 0644 systemd/lanyard-agent.socket systemd/lanyard-admin.socket systemd/lanyard-credentials.socket "$root/lib/systemd/system/"
install -m 0644 systemd/lanyard.sysusers "$root/lib/sysusers.d/lanyard.conf"
install -m 0644 systemd/lanyard.tmpfiles "$root/lib/tmpfiles.d/lanyard.conf"
install -m 0644 examples/policy.yaml "$root/share/lanyard/policy.example.yaml"
install -m 0644 README.md docs/*.md "$root/share/doc/lanyard/"
echo "installed Lanyard under $root"
if [ -z "$DESTDIR" ]; then
  cat <<NEXT
next steps (as root):
  systemd-sysusers && systemd-tmpfiles --create
  cp $PREFIX/share/lanyard/policy.example.yaml /etc/lanyard/policy.yaml   # then edit it
  $PREFIX/bin/lanyardd keygen --out /etc/lanyard/master.key
  systemctl daemon-reload && systemctl enable --now lanyard-agent.socket lanyard-admin.socket lanyard-credentials.socket lanyard.service
NEXT
fi
