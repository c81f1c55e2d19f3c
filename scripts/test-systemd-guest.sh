#!/bin/bash
# Runs inside the booted Debian 12 guest (scripts/test-systemd.sh), as the unit
# lanyard-test-runner.service: installs /payload/lanyard.deb and checks it with the guest's
# own systemctl, journalctl, systemd-analyze and lanyardctl. Results go to /results.
set -u
exec >/results/output.txt 2>&1
export DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin
passed=0 failed=0
log() { echo "   $*"; }
# check NAME CMD...: runs CMD; its status is the check's result.
check() {
  local name="$1"; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $name"; else failed=$((failed + 1)); echo "FAIL $name"; echo "$name" >>/results/failed; fi
}
# waitfor SECONDS CMD...: until CMD succeeds (a real condition, polled), or the deadline.
waitfor() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.1; done
}
finish() {
  journalctl --sync
  journalctl -b --no-pager -o short-monotonic >/results/journal.txt 2>&1
  echo "$passed passed, $failed failed"
  systemctl --no-block exit $([ "$failed" -eq 0 ] && echo 0 || echo 1)
  exit 0
}
as() { local u="$1"; shift; setpriv --reuid="$u" --regid="$u" --init-groups -- "$@"; }
ctl() { lanyardctl "$@"; }
active() { [ "$(systemctl is-active "$1")" = active ]; }
inactive() { [ "$(systemctl is-active "$1")" != active ]; }
audit_has() { lanyardctl audit export | grep -F "$1" | grep -qF "${2:-}"; }
secrets=()

# Users of the guest: an agent, an approver (a member of lanyard-admin, which the package
# creates), someone in no role, and the service user of a unit with LoadCredential=.
useradd -u 2001 -M -s /bin/sh coder
useradd -u 2002 -M -s /bin/sh approver
useradd -u 2003 -M -s /bin/sh outsider
useradd -u 2004 -M -s /bin/sh syncbot
# A lanyard-admin group that exists before the package, with a member: sysusers reuses it.
useradd -u 2005 -M -s /bin/sh stranger
groupadd -r lanyard-admin
usermod -a -G lanyard-admin stranger

echo "== install"
check "apt-get install ./lanyard.deb" bash -c 'apt-get install -y -q --no-install-recommends /payload/lanyard.deb >/tmp/install.log 2>&1; rc=$?; cat /tmp/install.log; exit $rc'
check "the install warns that lanyard-admin already has members" grep -q "group 'lanyard-admin' already has members (stranger)" /tmp/install.log
usermod -a -G lanyard-admin approver
check "master key created 0600 root" test "$(stat -c %a:%U /etc/lanyard/master.key 2>/dev/null)" = 600:root
key_sum="$(sha256sum /etc/lanyard/master.key | cut -d' ' -f1)"

echo "== 1. sockets, activation, readiness, user, hardening"
check "the three sockets listen" bash -c 'for s in agent admin credentials; do test -S /run/lanyard/$s.sock && systemctl is-active -q lanyard-$s.socket || exit 1; done'
check "lanyard.service is inactive after install" inactive lanyard.service
# The shipped policy, then the test's own (an agent, an approver, a service unit's credential).
# An agent's call (the agent socket; the shipped policy names no agent, so it is refused, but it starts the service).
as 2001 lanyardctl whoami >/dev/null 2>&1
check "the first agent connection starts lanyard.service" active lanyard.service
check "it is active (running)" test "$(systemctl show -p ActiveState,SubState --value lanyard.service | tr '\n' ' ')" = "active running "
# Type=notify: systemd makes it active only on READY=1, sent with STATUS=serving.
check "Type=notify, and active after READY=1 (STATUS=serving came with it)" \
  test "$(systemctl show -p Type --value lanyard.service) $(systemctl show -p StatusText --value lanyard.service)" = "notify serving"
pid="$(systemctl show -p MainPID --value lanyard.service)"
check "runs as the lanyard user" test "$(stat -c %U "/proc/$pid")" = lanyard
exposure="$(systemd-analyze security lanyard.service 2>/dev/null | sed -n 's/.*Overall exposure level for lanyard.service: \([0-9.]*\).*/\1/p')"
log "systemd-analyze security exposure: $exposure"
check "systemd-analyze security exposure <= 2.0" awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }'

cat >/etc/lanyard/policy.yaml <<'EOF'
trust_domain: guest.internal
approvers: { uids: [2002] }
services:
  github: { kind: opaque, default_ttl_seconds: 600 }
capabilities:
  github:read_repo:  { risk: low }
  github:push:       { risk: medium }
  github:introspect: { risk: low }
agents:
  coder:
    uid: 2001
    grants: [github:read_repo, github:push, github:introspect]
  sync-bot:
    uid: 2004
    grants: [github:read_repo, github:introspect]
service_units:
  github-sync.service:
    github: { agent: sync-bot, capability: github:read_repo, ttl_seconds: 600 }
EOF
good_policy="$(cat /etc/lanyard/policy.yaml)"

echo "== 3a. reload"
check "systemctl reload lanyard" systemctl reload lanyard.service
check "the reload is audited (activated)" waitfor 10 audit_has '"policy.reload"' '"activated"'

echo "== 2. agent and approver through the installed sockets"
low="$(as 2001 lanyardctl provision github --scope github:read_repo 2>/dev/null)"
check "an agent's LOW provision is issued" test -n "$low"
secrets+=("$low")
pending="$(as 2001 lanyardctl provision github --scope github:push 2>/dev/null)"; prc=$?
approval="$(sed -n 's/^approval needed: \([^ ]*\) .*/\1/p' <<<"$pending")"
log "MEDIUM provision: exit $prc, approval $approval"
check "a MEDIUM provision waits for an approval (exit 3)" test "$prc" -eq 3 -a -n "$approval"
check "an approver in lanyard-admin approves it" as 2002 lanyardctl approvals approve "$approval"
push="$(as 2001 lanyardctl provision github --scope github:push --approval "$approval" 2>/dev/null)"
check "the approved provision is issued" test -n "$push"
secrets+=("$push")
log "admin socket: $(stat -c '%A %U:%G' /run/lanyard/admin.sock); approver: $(as 2002 id)"
out="$(as 2003 lanyardctl approvals list 2>&1)"; orc=$?
log "non-member: exit $orc: $out"
check "a non-member of lanyard-admin is refused on the admin socket (EACCES)" bash -c "[ $orc -ne 0 ] && grep -q 'errno: 13' <<<\"\$1\"" _ "$out"

echo "== 3b. invalid policy, restart, stop"
echo "agents: [this is: not, a policy" >/etc/lanyard/policy.yaml
systemctl reload lanyard.service
check "an invalid policy is refused and audited" waitfor 10 audit_has '"policy.reload"' '"refused"'
check "the old policy stays active (a provision still works)" bash -c 'test -n "$(setpriv --reuid=2001 --regid=2001 --init-groups -- lanyardctl provision github --scope github:read_repo 2>/dev/null)"'
printf '%s\n' "$good_policy" >/etc/lanyard/policy.yaml
systemctl reload lanyard.service
leases_before="$(ctl leases list --json | grep -o '"lease_id":"[^"]*"' | sort)"
check "there are leases before the restart" test -n "$leases_before"
check "systemctl restart lanyard" systemctl restart lanyard.service
check "the leases survive the restart" test "$(ctl leases list --json | grep -o '"lease_id":"[^"]*"' | sort)" = "$leases_before"
check "the audit chain verifies after the restart" ctl audit verify
check "systemctl stop lanyard" systemctl stop lanyard.service
check "the sockets still listen with the service stopped" bash -c 'inactive() { [ "$(systemctl is-active lanyard.service)" != active ]; }; inactive && systemctl is-active -q lanyard-agent.socket lanyard-admin.socket lanyard-credentials.socket'
check "the next call starts it again" bash -c 'lanyardctl status >/dev/null && [ "$(systemctl is-active lanyard.service)" = active ]'

echo "== LoadCredential= provider"
mkdir -p /etc/systemd/system
for unit in github-sync other-sync; do
  cat >/etc/systemd/system/$unit.service <<'EOF'
[Service]
Type=oneshot
RemainAfterExit=yes
User=syncbot
LoadCredential=github:/run/lanyard/credentials.sock
ExecStart=/bin/sh -c 'lanyardctl introspect < "$CREDENTIALS_DIRECTORY/github"'
EOF
done
systemctl daemon-reload
check "a named unit starts with its credential" systemctl start github-sync.service
check "the unit read \$CREDENTIALS_DIRECTORY/github and it introspects active" waitfor 5 bash -c 'journalctl -u github-sync.service -o cat --no-pager | grep -q "^active: agent sync-bot"'
check "lanyardctl leases list shows the unit's lease" bash -c 'lanyardctl leases list --agent sync-bot --json | grep -q "\"agent\":\"sync-bot\""'
check "the lease is audited with the unit's name" audit_has '"unit/github-sync.service/github"' '"issued"'
check "a unit the policy does not name fails to start" bash -c '! systemctl start other-sync.service 2>/dev/null'
# The exec child logs it: the journal may take it a moment after the start fails.
check "... with systemd's journal line" waitfor 5 bash -c 'journalctl -u other-sync.service -o cat --no-pager | grep -q "Failed to set up credentials"'
log "other-sync.service: $(journalctl -u other-sync.service -o cat --no-pager | grep -m1 'status=')"
check "... as 243/CREDENTIALS (not an empty credential)" bash -c 'journalctl -u other-sync.service -o cat --no-pager | grep -q "status=243/CREDENTIALS" && [ ! -e /run/credentials/other-sync.service/github ]'
check "... and lanyardd's" bash -c 'journalctl -u lanyard.service -o cat --no-pager | grep -q "no credential for this unit and id under service_units"'
# A child of this unit's main process (PID 1 -> guest.sh -> lanyardctl): not a LoadCredential= address.
lanyardctl whoami --agent-socket /run/lanyard/credentials.sock >/tmp/out 2>&1; wrc=$?; out="$(cat /tmp/out)"
log "root process on the credentials socket: exit $wrc: $out"
check "a root process that is not systemd's credential request gets the refusal" bash -c "[ $wrc -ne 0 ] && journalctl -u lanyard.service -o cat --no-pager | grep -q 'not systemd.s LoadCredential= form.*refused'"
# Further from PID 1: PID 1 -> guest.sh -> bash -> lanyardctl.
bash -c 'lanyardctl whoami --agent-socket /run/lanyard/credentials.sock; exit $?' >/tmp/out 2>&1; wrc=$?; out="$(cat /tmp/out)"
log "root process further from PID 1: exit $wrc: $out"
check "a root process that PID 1 did not fork gets the refusal" bash -c "[ $wrc -ne 0 ] && journalctl -u lanyard.service -o cat --no-pager | grep -q 'PID 1 did not fork'"
out="$(as 2001 lanyardctl whoami --agent-socket /run/lanyard/credentials.sock 2>&1)"; wrc=$?
check "a non-root user cannot connect to it (mode 0600: EACCES)" bash -c "[ $wrc -ne 0 ] && grep -q 'errno: 13' <<<\"\$1\"" _ "$out"
unit_secret="$(cat /run/credentials/github-sync.service/github 2>/dev/null)"
check "the unit's credential is not empty" test -n "$unit_secret"
secrets+=("$unit_secret")
# The cgroup is the boundary: root processes orphaned to PID 1 (a double fork, as setsid -f)
# with systemd's address for github-sync.service, outside that unit's own cgroup.
ask() { python3 /payload/credential_request.py /run/lanyard/credentials.sock 00c0ffee/unit/github-sync.service/github "$1"; }
# refused JSON [CGROUP]: orphaned to PID 1 (in CGROUP), it got the refusal (zeros, one byte over 1 MiB).
refused() { grep -q '"ppid": 1,' <<<"$1" && grep -q '"bytes": 1048577, "zeros": true' <<<"$1" && ! grep -qF -- "$unit_secret" <<<"$1" \
  && { [ -z "${2:-}" ] || grep -qF "\"cgroup\": \"$2\"" <<<"$1"; }; }
orphan="$(ask -)"
log "orphaned to PID 1, in its own cgroup: $orphan"
check "a root process orphaned to PID 1 with the unit's address gets the refusal" refused "$orphan"
check "... refused by the cgroup check" bash -c "journalctl -u lanyard.service -o cat --no-pager | grep -q 'not in the unit.s own cgroup'"
nested="$(ask /system.slice/lanyard-test-runner.service/github-sync.service)"
log "in a sub-cgroup named github-sync.service under another unit: $nested"
check "a sub-cgroup named after the unit under another unit gets the refusal" refused "$nested" /system.slice/lanyard-test-runner.service/github-sync.service
sub="$(ask /system.slice/github-sync.service/sub)"
log "in a sub-cgroup of the unit: $sub"
check "a sub-cgroup of the unit gets the refusal" refused "$sub" /system.slice/github-sync.service/sub
issued="$(lanyardctl audit export | grep -F '"unit/github-sync.service/github"' | grep -cF '"issued"')"
log "leases issued for github-sync.service: $issued"
check "no further lease was issued for the unit" test "$issued" -eq 1

echo "== 6. kill -9 under load"
install -m 0666 /dev/null /tmp/acked
as 2001 bash -c 'for i in $(seq 1 60); do lanyardctl provision github --scope github:read_repo --json 2>/dev/null | grep -o "\"lease_id\":\"[^\"]*\"" >>/tmp/acked; done' &
load=$!
waitfor 20 test "$(wc -l </tmp/acked)" -ge 10
restarts_before="$(systemctl show -p NRestarts --value lanyard.service)"
kill -9 "$(systemctl show -p MainPID --value lanyard.service)"
wait $load
check "systemd restarted lanyardd after kill -9 (Restart=on-failure)" waitfor 20 bash -c "[ \"\$(systemctl show -p NRestarts --value lanyard.service)\" -gt $restarts_before ] && systemctl is-active -q lanyard.service"
acked=$(sort -u /tmp/acked | wc -l)
log "acknowledged leases during the run: $acked"
check "every acknowledged lease is durable (in the audit chain and the leases)" bash -c '
  [ "$(sort -u /tmp/acked | wc -l)" -ge 10 ] || exit 1
  audit="$(lanyardctl audit export)"; leases="$(lanyardctl leases list --json)"
  while read -r id; do grep -qF "$id" <<<"$leases" && grep -qF "${id#\"lease_id\":}" <<<"$audit" || exit 1; done < <(sort -u /tmp/acked)'
check "the audit chain verifies after kill -9" ctl audit verify

echo "== 4. journal"
check "decisions are in journalctl -u lanyard, one line each" bash -c 'journalctl -u lanyard.service -o cat --no-pager | grep "^decision " | grep -q "audit.seq=.*policy.decision=allow"'
check "... with structured fields (LANYARD_AUDIT_EVENT=provision LANYARD_POLICY_DECISION=allow)" bash -c '
  journalctl -u lanyard.service LANYARD_AUDIT_EVENT=provision LANYARD_POLICY_DECISION=allow -o export --no-pager | grep -q "^LANYARD_AUDIT_SEQ="'
check "no secret is in the journal" bash -c 'j="$(journalctl -b --no-pager -o export | tr "\\0" "\\n")"; for s in "$@"; do [ -n "$s" ] || continue; grep -qF -- "$s" <<<"$j" && exit 1; done; exit 0' _ "${secrets[@]}"
log "secrets searched for: ${#secrets[@]}"

echo "== upgrade (the package installed again over a running daemon)"
ctl status >/dev/null
pid_before="$(systemctl show -p MainPID --value lanyard.service)"
check "apt-get install --reinstall ./lanyard.deb" apt-get install -y -q --reinstall -o Dpkg::Options::=--force-confold /payload/lanyard.deb
check "the running daemon is restarted by the upgrade" bash -c "systemctl is-active -q lanyard.service && [ \"\$(systemctl show -p MainPID --value lanyard.service)\" != $pid_before ]"
check "the edited policy is kept (a conffile)" grep -q guest.internal /etc/lanyard/policy.yaml
check "the key is kept" test "$(sha256sum /etc/lanyard/master.key | cut -d' ' -f1)" = "$key_sum"

echo "== 5. remove, reinstall, purge"
seq_before="$(ctl audit export | wc -l)"
check "apt-get remove lanyard" apt-get remove -y -q lanyard
check "remove stops the service" inactive lanyard.service
check "remove keeps the state and the key" test -s /var/lib/lanyard/lanyard.db -a -s /etc/lanyard/master.key
check "reinstall (apt-get install ./lanyard.deb)" apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold /payload/lanyard.deb
check "reinstall finds the same key" test "$(sha256sum /etc/lanyard/master.key | cut -d' ' -f1)" = "$key_sum"
check "reinstall finds the same state (audit chain kept and verified)" bash -c "lanyardctl audit verify >/dev/null && [ \$(lanyardctl audit export | wc -l) -ge $seq_before ]"
check "apt-get purge lanyard" apt-get purge -y -q lanyard
check "purge removes the state and the key" test ! -e /var/lib/lanyard -a ! -e /etc/lanyard/master.key

finish
