# Shared helpers for Lanyard's scripts (sourced, not run).

# ensure_debs PKG... — installs the Debian packages that are missing (needs root or sudo).
ensure_debs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "${LANYARD_APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq >&2
    export LANYARD_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The Debian packages every build and test needs.
LANYARD_DEBS=(libssl-dev libsqlite3-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler pkg-config make gcc)
