#!/usr/bin/env bash
# Quick start: builds Lanyard, starts `lanyardd --dev` (temp state dir with SQLite,
# a sample policy registering one agent), and runs a short demo of an agent using it.
#   scripts/demo.sh          run the demo, then stop the daemon
#   scripts/demo.sh --keep   leave the daemon running and print how to talk to it
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_debs "${LANYARD_DEBS[@]}" util-linux passwd

keep=false
[ "${1:-}" = "--keep" ] && keep=true

# The products by name (a bare `swift build` can build the dependencies' examples too).
swift build --product lanyardd >&2
swift build --product lanyardctl >&2
make -s -C clients/c >&2
bin="$(swift build --show-bin-path)"

state="$(mktemp -d /tmp/lanyard-dev.XXXXXX)"
log="$state.log"
: >"$log"  # exists before tail opens it (the daemon's redirection happens in its own process, later)
"$bin/lanyardd" --dev --state-dir "$state" 2>"$log" &
daemon=$!
stop() {
  if ! $keep; then
    kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    rm -rf "$state" "$log"
  fi
}
trap stop EXIT

# Wait for readiness: the daemon logs it once both sockets are served (tail ends if it dies).
if ! timeout 60 grep -q -m1 "lanyardd ready" <(tail -n +1 -f --pid="$daemon" "$log"); then
  cat "$log" >&2
  echo "lanyardd did not become ready; its log is above" >&2
  exit 1
fi

export LANYARD_SOCKET="$state/agent.sock" LANYARD_ADMIN_SOCKET="$state/admin.sock"
# Root can never be an agent: as root, the agent side runs as the demo user.
as_agent=()
if [ "$(id -u)" -eq 0 ]; then
  as_agent=(setpriv --reuid=lanyard-demo --regid=lanyard-demo --clear-groups --)
fi
ctl="$bin/lanyardctl"

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }
agent() { step "lanyardctl $*"; "${as_agent[@]}" "$ctl" "$@" || true; }

sed -n '1,6p' "$log"
agent whoami
agent authorize github:read_repo
agent authorize github:push --resource acme/api --arg branch=main
agent authorize deploy:production
agent authorize github:admin
step "lanyardctl provision github --scope github:read_repo --ttl 60   (a 60-second opaque token)"
token="$("${as_agent[@]}" "$ctl" provision github --scope github:read_repo --ttl 60)"
echo "$token"
step "echo \$token | lanyardctl introspect   (what the service would ask)"
echo "$token" | "${as_agent[@]}" "$ctl" introspect || true
step "echo sk-demo-upstream-key | lanyardctl secret put openai   (operator stores a static secret, sealed)"
echo sk-demo-upstream-key | "$ctl" secret put openai
agent provision openai --scope openai:chat
step "lanyardctl leases list   (operator)"
"$ctl" leases list
step "lanyardctl leases revoke --agent dev   (the kill switch)"
"$ctl" leases revoke --agent dev
step "echo \$token | lanyardctl introspect"
echo "$token" | "${as_agent[@]}" "$ctl" introspect || true
step "clients/c/build/whoami_authorize github:read_repo   (the C client)"
"${as_agent[@]}" clients/c/build/whoami_authorize github:read_repo
step "lanyardctl status   (operator, admin socket)"
"$ctl" status
step "lanyardctl audit query"
"$ctl" audit query
step "lanyardctl audit verify"
"$ctl" audit verify

if $keep; then
  printf '\nlanyardd is still running (pid %s). Try:\n  export LANYARD_SOCKET=%s LANYARD_ADMIN_SOCKET=%s\n  %s status\nStop it with: kill %s\n' \
    "$daemon" "$LANYARD_SOCKET" "$LANYARD_ADMIN_SOCKET" "$ctl" "$daemon"
fi
