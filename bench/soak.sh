#!/usr/bin/env bash
# inspectproxy soak test (bounded time, loopback only). See bench/README.md.
#
# Phase 1: SOAK_SECONDS of random connections through a passthrough proxy
# that also decrypts 127.0.0.2 (normal, client aborts mid-handshake, client
# and server RSTs, half-closes, 502s, junk, idle and hello timeouts, plain
# HTTP). Then: one event per connection (matched by client address, ids
# contiguous), no goroutine, socket or fd left over (admin /metrics and
# /proc/PID/fd), no open connection left, clean exit on SIGTERM.
# Phase 2: the same load, SIGTERM after SOAK_TERM_AFTER seconds: every
# connection the proxy answered has its event, no partial line, no unknown
# or doubled event, exit status 0.
#
# Environment: SOAK_SECONDS [60], SOAK_CONCURRENCY [48], SOAK_TERM_SECONDS
# [20] (phase 2 load), SOAK_TERM_AFTER [8], SOAK_SEED [random], SOAK_KEEP [0],
# SOAK_INSPECTPROXY [build from the work tree]: a prebuilt binary to test.
# Exit code: 0 PASS, 1 FAIL, 2 the test itself broke.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

SOAK_SECONDS=${SOAK_SECONDS:-60}
SOAK_CONCURRENCY=${SOAK_CONCURRENCY:-48}
SOAK_TERM_SECONDS=${SOAK_TERM_SECONDS:-20}
SOAK_TERM_AFTER=${SOAK_TERM_AFTER:-8}
SOAK_SEED=${SOAK_SEED:-$(( (RANDOM << 16) | RANDOM ))}
SOAK_KEEP=${SOAK_KEEP:-0}

W=$(mktemp -d /tmp/inspectproxy-soak.XXXXXX)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local rc=$?
  cleanup_pids
  if [ "$SOAK_KEEP" = 1 ] || [ "$rc" != 0 ]; then log "kept $W"; else rm -rf "$W"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

export PATH=$PATH:/usr/local/go/bin
need_pkgs openssl:openssl
raise_nofile
mkdir -p "$W"/{logs,ipca}
if [ -n "${SOAK_INSPECTPROXY:-}" ]; then
  cp "$SOAK_INSPECTPROXY" "$W/inspectproxy" || die "SOAK_INSPECTPROXY=$SOAK_INSPECTPROXY: no such binary"
else
  (cd "$root" && go build -o "$W/inspectproxy" ./cmd/inspectproxy) || die "inspectproxy build failed"
fi
(cd "$root" && go build -o "$W/loadgen" ./bench/loadgen) || die "loadgen build failed"
make_pki "$W/pki"
"$W/inspectproxy" ca init --data-dir "$W/ipca" 2>/dev/null
"$W/inspectproxy" ca export --data-dir "$W/ipca" >"$W/ipca/export.pem"

# run_phase NAME [loadgen flags...]: fresh proxy and events file, the load,
# then the proxy's exit. Sets PHASE_RC (loadgen) and PROXY_RC.
run_phase() {
  local name=$1
  shift
  local port admin
  read -r port admin <<<"$("$W/loadgen" freeports -n 2)"
  cat >"$W/$name.yaml" <<EOF
listen: 127.0.0.1:$port
events: $W/$name-events.jsonl
log:
  level: warn
admin:
  listen: 127.0.0.1:$admin
limits:
  hello_timeout: 1s
  idle_timeout: 2s
  half_close_timeout: 2s
  shutdown_grace: 3s
tls:
  extra_roots: [$W/pki/ca.pem]
mitm:
  hosts: [127.0.0.2]
  data_dir: $W/ipca
EOF
  start "inspectproxy ($name)" "$W/logs/$name.log" "$W/inspectproxy" --config "$W/$name.yaml"
  local pid=$START_PID
  wait_port "$admin" 20 "$pid" || { cat "$W/logs/$name.log" >&2; die "proxy did not start"; }
  wait_port "$port" 20 "$pid" || die "proxy did not start"
  log "== $name"
  PHASE_RC=0
  "$W/loadgen" soak -proxy "127.0.0.1:$port" -admin "127.0.0.1:$admin" -pid "$pid" \
    -events "$W/$name-events.jsonl" -c "$SOAK_CONCURRENCY" -seed "$SOAK_SEED" \
    -cert "$W/pki/leaf.pem" -key "$W/pki/leaf.key" -ca "$W/pki/ca.pem" -proxy-ca "$W/ipca/export.pem" \
    "$@" || PHASE_RC=$?
  stop "$pid" 20
  PROXY_RC=$STOP_RC
  log "$name: proxy exit status $PROXY_RC"
}

fails=()
run_phase soak -d "${SOAK_SECONDS}s"
[ "$PHASE_RC" = 0 ] || fails+=("phase 1 (soak): loadgen reported FAIL (status $PHASE_RC)")
[ "$PROXY_RC" = 0 ] || fails+=("phase 1: the proxy exited with status $PROXY_RC on SIGTERM")
grep -q -E 'panic|fatal error|DATA RACE' "$W/logs/soak.log" && fails+=("phase 1: panic in the proxy log")

run_phase sigterm -d "${SOAK_TERM_SECONDS}s" -sigterm-after "${SOAK_TERM_AFTER}s"
[ "$PHASE_RC" = 0 ] || fails+=("phase 2 (SIGTERM under load): loadgen reported FAIL (status $PHASE_RC)")
[ "$PROXY_RC" = 0 ] || fails+=("phase 2: the proxy exited with status $PROXY_RC")
grep -q -E 'panic|fatal error|DATA RACE' "$W/logs/sigterm.log" && fails+=("phase 2: panic in the proxy log")

echo
if [ ${#fails[@]} -eq 0 ]; then
  echo "SOAK PASS (seed $SOAK_SEED)"
  exit 0
fi
for f in "${fails[@]}"; do echo "SOAK FAIL: $f"; done
echo "(seed $SOAK_SEED; logs in $W)"
exit 1
