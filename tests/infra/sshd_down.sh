#!/usr/bin/env bash
# Undo sshd_up.sh: stop its sshd and take its host key out of /root/.ssh/known_hosts; also remove a client key
# that older versions of sshd_up.sh appended to /root/.ssh/authorized_keys. Idempotent.
# Usage: sshd_down.sh [PORT] [DIR]   (defaults 2222, /tmp/test-sshd)
port=${1:-2222}; dir=${2:-/tmp/test-sshd}
if [ -s "$dir/sshd.pid" ]; then
  pid=$(cat "$dir/sshd.pid"); kill "$pid" 2>/dev/null
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$dir/sshd.pid"
fi
[ -f /root/.ssh/known_hosts ] && ssh-keygen -q -R "[127.0.0.1]:$port" >/dev/null 2>&1
rm -f /root/.ssh/known_hosts.old
if [ -f "$dir/client_key.pub" ] && [ -f /root/.ssh/authorized_keys ]; then
  grep -vxF "$(cat "$dir/client_key.pub")" /root/.ssh/authorized_keys > /root/.ssh/authorized_keys.tmp || true
  cat /root/.ssh/authorized_keys.tmp > /root/.ssh/authorized_keys; rm -f /root/.ssh/authorized_keys.tmp
fi
exit 0
