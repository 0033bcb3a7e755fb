#!/usr/bin/env bash
# A real Keystone for the end-to-end tests (tests/keystone.rs): keystone from PyPI in a venv,
# on a SQLite file, served by gunicorn on loopback.
#
#   scripts/keystone.sh venv [VENV]
#       Creates the venv (default $EMBER_KEYSTONE_VENV, else target/keystone-venv) with
#       keystone, gunicorn and the clients the tests drive (openstackclient, cinderclient,
#       openstacksdk). Does nothing when it is already complete.
#   scripts/keystone.sh serve STATE_DIR PORT ADMIN_PASSWORD
#       Initialises STATE_DIR once (keystone.conf, db_sync, fernet and credential keys,
#       bootstrap of the admin user, project and the admin/member/reader roles), then serves
#       Keystone on 127.0.0.1:PORT until its standard input closes (so a test that dies
#       takes its Keystone with it), then stops gunicorn.
#
# Users, projects, role assignments and Ember's catalog entries are made by the test
# support through Keystone's API (tests/support/keystone.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

KEYSTONE_VERSION=30.0.0
venv="${EMBER_KEYSTONE_VENV:-$PWD/target/keystone-venv}"

make_venv() {
  local dir="${1:-$venv}"
  if [ -x "$dir/bin/keystone-manage" ] && [ -x "$dir/bin/gunicorn" ] && [ -x "$dir/bin/openstack" ] \
    && [ -x "$dir/bin/cinder" ] && "$dir/bin/python" -c 'import openstack' 2>/dev/null; then
    return 0
  fi
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "keystone==$KEYSTONE_VERSION" gunicorn \
    python-openstackclient python-cinderclient openstacksdk
}

serve() {
  local state="$1" port="$2" password="$3"
  [ -x "$venv/bin/keystone-manage" ] || { echo "no keystone venv at $venv (run: $0 venv)" >&2; exit 2; }
  mkdir -p "$state"
  state="$(cd "$state" && pwd)"
  (
    # One initialisation per state directory, even when several tests race for it.
    flock 9
    if [ ! -f "$state/initialised" ]; then
      mkdir -p "$state/fernet-keys" "$state/credential-keys"
      cat > "$state/keystone.conf" <<EOF
[database]
connection = sqlite:///$state/keystone.db
[fernet_tokens]
key_repository = $state/fernet-keys
[fernet_receipts]
key_repository = $state/fernet-keys
[credential]
key_repository = $state/credential-keys
[token]
expiration = 3600
EOF
      local manage=("$venv/bin/keystone-manage" --config-file "$state/keystone.conf")
      "${manage[@]}" db_sync
      "${manage[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
      "${manage[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
      "${manage[@]}" bootstrap --bootstrap-password "$password" --bootstrap-region-id RegionOne
      # oslo.config would parse gunicorn's own arguments: the WSGI module empties argv first.
      cat > "$state/keystone_wsgi.py" <<'EOF'
import sys
sys.argv = sys.argv[:1]
from keystone.server.wsgi import initialize_public_application
application = initialize_public_application()
EOF
      touch "$state/initialised"
    fi
  ) 9> "$state/.lock" > "$state/setup.log" 2>&1 || { cat "$state/setup.log" >&2; exit 1; }
  # A small Python watchdog runs gunicorn and stops it (SIGINT: gunicorn's quick shutdown)
  # when our stdin closes or we are signalled. Bash traps proved unreliable here: the shell
  # sometimes died inside its EXIT trap and left gunicorn running.
  export OS_KEYSTONE_CONFIG_DIR="$state" OS_KEYSTONE_CONFIG_FILES=keystone.conf
  exec "$venv/bin/python" -c '
import signal, subprocess, sys
log = open(sys.argv[1], "ab")
server = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
def stop(*_):
    server.send_signal(signal.SIGINT)
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
    sys.exit(0)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, stop)
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
while sys.stdin.buffer.read1(65536):
    pass
stop()
' "$state/gunicorn-$port.log" "$venv/bin/gunicorn" --chdir "$state" --bind "127.0.0.1:$port" \
    --workers 2 --timeout 120 --graceful-timeout 2 --log-level warning keystone_wsgi:application
}

case "${1:-}" in
  venv) make_venv "${2:-}" ;;
  serve) [ $# -eq 4 ] || { echo "usage: $0 serve STATE_DIR PORT ADMIN_PASSWORD" >&2; exit 2; }; serve "$2" "$3" "$4" ;;
  *) echo "usage: $0 venv [VENV] | serve STATE_DIR PORT ADMIN_PASSWORD" >&2; exit 2 ;;
esac
