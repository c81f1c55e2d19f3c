#!/usr/bin/env bash
# Builds the Debian package lanyard_VERSION_amd64.deb (VERSION: lanyardVersion in
# Sources/LanyardWire/Status.swift, what `lanyardd --version` prints).
#   scripts/package-deb.sh                          release build, Swift runtime linked in
#                                                   (--static-swift-stdlib, scratch .build-release)
#   scripts/package-deb.sh --from-build .build/debug   the binaries already built (CI: no second
#                                                   compilation); their Swift runtime libraries go
#                                                   to /usr/lib/lanyard, the binaries' RUNPATH
#   --out DIR   where the .deb goes (default: the repository root)
# Layout (dpkg -c):
#   usr/bin/lanyardd, usr/bin/lanyardctl, usr/bin/lanyard-mcp
#   lib/systemd/system/lanyard.service, lanyard-{agent,admin,credentials}.socket
#   usr/lib/sysusers.d/lanyard.conf, usr/lib/tmpfiles.d/lanyard.conf
#   etc/lanyard/policy.yaml (conffile: packaging/debian/policy.yaml, empty: it starts on any host)
#   usr/share/lanyard/policy.example.yaml, usr/share/doc/lanyard/{README.md,operator.md,security.md,copyright,changelog.gz}
#   usr/share/man/man8/lanyardd.8.gz, usr/share/man/man1/{lanyardctl,lanyard-mcp}.1.gz
#   usr/lib/lanyard/*.so (--from-build only: the Swift runtime)
# Then lintian: any error fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
from_build=""
out="."
while [ $# -gt 0 ]; do
  case "$1" in
    --from-build) from_build="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "package-deb.sh: unknown argument '$1' (use --from-build DIR, --out DIR)" >&2; exit 2 ;;
  esac
done
ensure_debs "${LANYARD_DEBS[@]}" dpkg-dev lintian patchelf binutils
version="$(sed -n 's/^public let lanyardVersion = "\(.*\)"$/\1/p' Sources/LanyardWire/Status.swift)"
[ -n "$version" ] || { echo "package-deb.sh: no lanyardVersion in Sources/LanyardWire/Status.swift" >&2; exit 1; }
products=(lanyardd lanyardctl lanyard-mcp)

if [ -z "$from_build" ]; then
  for p in "${products[@]}"; do
    swift build "${LANYARD_RELEASE_BUILD[@]}" --product "$p" >&2
  done
  bin_dir="$(swift build "${LANYARD_RELEASE_BUILD[@]}" --show-bin-path)"
else
  bin_dir="$from_build"
fi
for p in "${products[@]}"; do
  [ -x "$bin_dir/$p" ] || { echo "package-deb.sh: $bin_dir/$p is missing; build it first (swift build --product $p)" >&2; exit 1; }
done

stage="$(mktemp -d /tmp/lanyard-deb.XXXXXX)"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
# Binaries, units, sysusers/tmpfiles, example policy, docs: install.sh's layout under /usr.
PREFIX=/usr DESTDIR="$root" scripts/install.sh --bin-dir "$bin_dir" >/dev/null
install -m 0755 "$bin_dir/lanyard-mcp" "$root/usr/bin/"
# Debian keeps units in /lib/systemd/system (bookworm).
install -d "$root/lib/systemd"
mv "$root/usr/lib/systemd/system" "$root/lib/systemd/system"
rmdir "$root/usr/lib/systemd"
# 0750 from the start: never world-traversable, even before postinst gives it to group lanyard.
install -d -m 0750 "$root/etc/lanyard"
# A policy that starts on any host (the example names executables a host may lack).
install -m 0644 packaging/debian/policy.yaml "$root/etc/lanyard/policy.yaml"
for p in "${products[@]}"; do strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/$p"; done

if [ -n "$from_build" ]; then
  # The Swift runtime the binaries were linked against, private to Lanyard.
  install -d "$root/usr/lib/lanyard"
  for lib in $(ldd "${products[@]/#/$bin_dir/}" | awk '$3 ~ /\/swift\// {print $3}' | sort -u); do
    install -m 0644 "$lib" "$root/usr/lib/lanyard/"
  done
  for lib in "$root"/usr/lib/lanyard/*.so; do
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$lib"
    patchelf --set-rpath /usr/lib/lanyard "$lib"
  done
  for p in "${products[@]}"; do patchelf --set-rpath /usr/lib/lanyard "$root/usr/bin/$p"; done
fi

# Man pages from each command's --help.
manpage() {  # NAME SECTION SUMMARY BINARY
  local f="$root/usr/share/man/man$2/$1.$2"
  install -d "$(dirname "$f")"
  {
    printf '.TH %s %s "" "Lanyard %s" "Lanyard"\n.SH NAME\n%s \\- %s\n.SH DESCRIPTION\n.nf\n' "${1^^}" "$2" "$version" "$1" "$3"
    "$4" --help | sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\&'/"
    printf '.fi\n.SH FILES\n/etc/lanyard/policy.yaml, /etc/lanyard/master.key, /var/lib/lanyard, /run/lanyard/{agent,admin,credentials}.sock\n'
    printf '.SH SEE ALSO\nlanyardd(8), lanyardctl(1), lanyard-mcp(1), /usr/share/doc/lanyard/operator.md\n'
  } > "$f"
  gzip -9n "$f"
}
manpage lanyardd 8 "the Lanyard credential and authorization daemon" "$bin_dir/lanyardd"
manpage lanyardctl 1 "talk to lanyardd: agent, operator and approver calls" "$bin_dir/lanyardctl"
manpage lanyard-mcp 1 "run a stdio MCP server behind lanyardd" "$bin_dir/lanyard-mcp"

doc="$root/usr/share/doc/lanyard"
cat > "$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lanyard

Files: *
Copyright: 2026 The Lanyard authors
License: other
 No licence has been chosen for Lanyard yet; until one is, all rights are
 reserved by the authors.
EOF
printf 'lanyard (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- Lanyard maintainers <maintainers@lanyard.dev>  %s\n' \
  "$version" "$version" "$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" > "$doc/changelog"
gzip -9n "$doc/changelog"

# Depends: what the ELF files need, as dpkg-shlibdeps says (the private Swift runtime aside);
# tzdata for the time zones of grant windows (LanyardCore's ZoneInfo reads /usr/share/zoneinfo).
mkdir -p "$stage/shlibs/debian"
printf 'Source: lanyard\n\nPackage: lanyard\nArchitecture: amd64\n' > "$stage/shlibs/debian/control"
elves=("${products[@]/#/$root/usr/bin/}")
[ -n "$from_build" ] && elves+=("$root"/usr/lib/lanyard/*.so)
depends="$(cd "$stage/shlibs" && dpkg-shlibdeps -O --ignore-missing-info -l"$root/usr/lib/lanyard" "${elves[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
[ -n "$depends" ] || { echo "package-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

install -d "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<EOF
Package: lanyard
Version: $version
Architecture: amd64
Maintainer: Lanyard maintainers <maintainers@lanyard.dev>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends, systemd, tzdata
Section: admin
Priority: optional
Homepage: https://github.com/lanyard/lanyard
Description: credential and authorization daemon for local AI agents
 lanyardd attests local agents by their kernel credentials, decides each
 capability by policy and human approval, issues short-lived leases and
 keeps a hash-chained audit log. It serves agents, operators and systemd's
 LoadCredential= on Unix sockets, socket-activated.
EOF
echo /etc/lanyard/policy.yaml > "$root/DEBIAN/conffiles"
# A Swift package compiles the zlib copy it vendors into lanyardd: no Debian library can replace it.
install -d "$root/usr/share/lintian/overrides"
{
  echo "lanyard: embedded-library zlib [usr/bin/lanyardd]"
  # The master key's folder: never world-traversable (postinst gives it to group lanyard).
  echo "lanyard: non-standard-dir-perm 0750 != 0755 [etc/lanyard/]"
} > "$root/usr/share/lintian/overrides/lanyard"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done

deb="$out/lanyard_${version}_amd64.deb"
# CI packages quickly (gzip); a release is compressed with dpkg's default (xz).
compress=()
[ -n "$from_build" ] && compress=(-Zgzip -z1)
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
echo "built $deb" >&2
# Lintian: errors fail; warnings are shown.
lintian --fail-on error "$deb" >&2
echo "$deb"
