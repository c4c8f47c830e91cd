#!/usr/bin/env bash
# Sets up and runs Tether: a local demo Prosody on loopback with demo accounts (alice, bob), bob as a
# demo peer that answers (with receipts and read markers), and the desktop app signed in as alice.
# Without a display it falls back to the CLI. Closing the window (or Ctrl-C) stops the server.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/common.sh

ensure_toolchain
ensure_packages
use_build_cache
build_ui
cargo build --locked -p tether-core --bin tether -p tether-e2e --bin tether-demo-server -p tether-desktop
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

DEMO="$ROOT/.demo"
rm -rf "$DEMO"
mkdir -p "$DEMO"

# The demo server lives as long as its stdin (a FIFO we hold open) stays open.
mkfifo "$DEMO/server.in"
"$BIN/tether-demo-server" < "$DEMO/server.in" > "$DEMO/server.json" 2> "$DEMO/server.log" &
SERVER=$!
exec 9> "$DEMO/server.in"
BOB=""
cleanup() {
  [ -n "$BOB" ] && kill "$BOB" 2>/dev/null || true
  exec 9>&- || true
  wait "$SERVER" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  [ -s "$DEMO/server.json" ] && break
  sleep 0.1
done
[ -s "$DEMO/server.json" ] || { echo "the demo server did not start:" >&2; cat "$DEMO/server.log" >&2; exit 1; }
ADDR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["addr"])' "$DEMO/server.json")
CA=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca_file"])' "$DEMO/server.json")

for user in alice bob; do
  PW="$user" "$BIN/tether" --db "$DEMO/$user.db" account add --jid "$user@localhost" \
    --password-env PW --server "$ADDR" --ca-file "$CA" > /dev/null
done

"$BIN/tether" --db "$DEMO/bob.db" run > "$DEMO/bob.events" 2> "$DEMO/bob.log" &
BOB=$!
# The demo peer: bob reads what alice writes (a displayed marker), and answers it. Receipts are
# automatic. This loop only drives bob's CLI; bob's running client does the delivery.
demo_peer() {
  while kill -0 "$BOB" 2>/dev/null; do
    "$BIN/tether" --db "$DEMO/bob.db" messages --direction in --state received 2>/dev/null |
      python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    print(m["peer"] + "\t" + m["body"].replace("\t", " ").replace("\n", " "))
' | while IFS=$'\t' read -r peer body; do
        "$BIN/tether" --db "$DEMO/bob.db" mark-read --peer "$peer" > /dev/null
        sleep 1
        "$BIN/tether" --db "$DEMO/bob.db" send --to "$peer" --body "You said: $body" > /dev/null
      done
    sleep 1
  done
}
demo_peer &
PEER=$!

"$BIN/tether" --db "$DEMO/alice.db" send --to bob@localhost --body "Hello from Tether!" > /dev/null
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${TETHER_DEMO_CLI:-}" ]; then
  echo "Tether demo: a local Prosody at $ADDR; the app is signed in as alice@localhost."
  echo "bob@localhost answers every message (with receipts and read markers). Close the window to end."
  TETHER_DB="$DEMO/alice.db" "$BIN/tether-desktop"
  kill "$PEER" 2>/dev/null || true
  exit 0
fi
cat <<MSG
Tether demo (no display found, so the CLI): a local Prosody at $ADDR, signed in as alice@localhost.
Type a line and press Enter to send it to bob@localhost, who answers (bob's events: $DEMO/bob.events).
Inspect stores with: $BIN/tether --db $DEMO/alice.db messages
Ctrl-D ends the demo.
MSG
python3 -u -c '
import json, sys
for line in sys.stdin:
    line = line.rstrip("\n")
    if line:
        print(json.dumps({"to": "bob@localhost", "body": line}), flush=True)
' | "$BIN/tether" --db "$DEMO/alice.db" run --stdin --until-idle
kill "$PEER" 2>/dev/null || true
