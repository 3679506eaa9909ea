#!/usr/bin/env bash
# inspectproxy benchmark: direct vs tinyproxy vs mitmproxy (passthrough and
# MITM) vs inspectproxy (passthrough and MITM), all on loopback against a
# local nginx with TLS. See bench/README.md.
#
# Environment (defaults in brackets):
#   BENCH_SECONDS [10]      measured seconds of each connection-rate test
#   BENCH_WARMUP [2]        unmeasured warm-up seconds before each rate test
#   BENCH_CONCURRENCY [16]  clients in the rate test
#   BENCH_IDLE [5000]       idle tunnels held for the RSS test
#   BENCH_IDLE_GET [/small] path each idle tunnel GETs once (keep-alive) before idling ("": handshake only)
#   BENCH_BIG_MIB [1024]    size of the download
#   BENCH_ROUNDS [3]        rate tests per configuration, interleaved (median reported)
#   BENCH_DL_RUNS [3]       downloads per configuration, interleaved (median reported)
#   BENCH_CONFIGS           configurations to run, space separated (default: all eight; the
#                           -noui one has the live console off, the -console one has a
#                           console client streaming throughout; inspectproxy-otlp,
#                           passthrough-noui exporting every connection to a local
#                           Jaeger built by .ci/jaeger.sh, only when named; relay-iocopy
#                           and relay-splice, the bare byte relay, only when named)
#   BENCH_RESULTS [bench/RESULTS.md]  file the dated results are appended to ("-": none)
#   BENCH_KEEP [0]          1: keep the work directory (logs, events, results)
#   BENCH_INSPECTPROXY      a prebuilt inspectproxy binary (default: build from the work tree)
#
# Exit code: 0 when the benchmark ran (whatever the targets say), 2 when it broke.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-16}
BENCH_IDLE=${BENCH_IDLE:-5000}
BENCH_IDLE_GET=${BENCH_IDLE_GET-/small}
BENCH_BIG_MIB=${BENCH_BIG_MIB:-1024}
BENCH_DL_RUNS=${BENCH_DL_RUNS:-3}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CONFIGS=${BENCH_CONFIGS:-direct tinyproxy mitmproxy-passthrough mitmproxy-mitm inspectproxy-passthrough inspectproxy-mitm inspectproxy-passthrough-noui inspectproxy-passthrough-console}
BENCH_RESULTS=${BENCH_RESULTS:-$here/RESULTS.md}
BENCH_KEEP=${BENCH_KEEP:-0}
command_line="$(printf '%s ' "$(basename "$0")" "$@")"
env_line=$(env | grep -E '^BENCH_' | sort | tr '\n' ' ' || true)

W=$(mktemp -d /tmp/inspectproxy-bench.XXXXXX)
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local rc=$?
  cleanup_pids
  if [ "$BENCH_KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

export PATH=$PATH:/usr/local/go/bin
need_pkgs openssl:openssl nginx:nginx tinyproxy:tinyproxy mitmdump:mitmproxy
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

raise_nofile
nofile=$(ulimit -n)
if [ "$nofile" -lt $((2 * BENCH_IDLE + 1000)) ]; then
  log "warning: fd limit $nofile is low for $BENCH_IDLE idle tunnels (a proxy needs 2 per tunnel, one relaying with io.Copy 6)"
fi

log "work directory $W"
mkdir -p "$W"/{logs,www,nginx,mitm,ipca}
if [ -n "${BENCH_INSPECTPROXY:-}" ]; then
  cp "$BENCH_INSPECTPROXY" "$W/inspectproxy" || die "BENCH_INSPECTPROXY=$BENCH_INSPECTPROXY: no such binary"
else
  (cd "$root" && go build -o "$W/inspectproxy" ./cmd/inspectproxy) || die "inspectproxy build failed"
fi
(cd "$root" && go build -o "$W/loadgen" ./bench/loadgen) || die "loadgen build failed"
LG=$W/loadgen
make_pki "$W/pki"
head -c 1024 /dev/urandom | base64 -w 76 | head -c 1024 >"$W/www/small"
log "writing the ${BENCH_BIG_MIB} MiB file"
"$LG" mkfile -out "$W/www/big" -size $((BENCH_BIG_MIB << 20))
read -r P_NGINX P_TINY P_MITMP P_MITMM P_IPP P_IPM P_IPN P_IPC P_UI P_UIP P_IPO P_IPOA P_OTLP P_OTLPG P_JQ P_JQG P_RIO P_RSP <<<"$("$LG" freeports -n 18)"
TARGET=127.0.0.1:$P_NGINX
RESULTS=$W/results.jsonl

# ---- nginx: TLS on loopback, sendfile, long timeouts for idle tunnels ----
cat >"$W/nginx.conf" <<EOF
user root;
worker_processes auto;
worker_rlimit_nofile $nofile;
pid $W/nginx/nginx.pid;
error_log $W/logs/nginx-error.log warn;
events { worker_connections $((nofile - 100)); }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 300s;
  keepalive_requests 100000;
  client_header_timeout 300s;
  client_body_temp_path $W/nginx/body;
  proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fastcgi;
  uwsgi_temp_path $W/nginx/uwsgi;
  scgi_temp_path $W/nginx/scgi;
  types { }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$P_NGINX ssl;
    ssl_certificate $W/pki/leaf.pem;
    ssl_certificate_key $W/pki/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $W/www;
    location / { }
  }
}
EOF
start nginx "$W/logs/nginx.log" "$NGINX" -p "$W/nginx" -c "$W/nginx.conf" -g 'daemon off;'
NGINX_PID=$START_PID
wait_port "$P_NGINX" 20 "$NGINX_PID" || { cat "$W/logs/nginx.log" "$W/logs/nginx-error.log" >&2; die "nginx did not start"; }

# ---- proxy configurations ----
cat >"$W/tinyproxy.conf" <<EOF
Port $P_TINY
Listen 127.0.0.1
Timeout 600
MaxClients $((BENCH_IDLE + 1000))
Allow 127.0.0.1
LogLevel Error
DisableViaHeader Yes
EOF
# The live console: on with nobody watching (passthrough), off (mitm and
# passthrough-noui), on with a streaming client (passthrough-console).
# otlp: passthrough-noui exporting to Jaeger (compare it with that one),
# with /metrics for its counters.
for mode in passthrough mitm passthrough-noui passthrough-console otlp; do
  port=$P_IPP enabled=false ui=127.0.0.1:$P_UIP endpoint="" admin=""
  case $mode in
    mitm) port=$P_IPM enabled=true ui='""' ;;
    passthrough-noui) port=$P_IPN ui='""' ;;
    passthrough-console) port=$P_IPC ui=127.0.0.1:$P_UI ;;
    otlp) port=$P_IPO ui='""' endpoint=http://127.0.0.1:$P_OTLP admin=127.0.0.1:$P_IPOA ;;
  esac
  cat >"$W/inspectproxy-$mode.yaml" <<EOF
listen: 127.0.0.1:$port
events: $W/inspectproxy-$mode-events.jsonl
log:
  level: warn
limits:
  max_connections: $((BENCH_IDLE + 1000))
tls:
  extra_roots: [$W/pki/ca.pem]
mitm:
  enabled: $enabled
  data_dir: $W/ipca
ui:
  listen: $ui
otlp:
  endpoint: "$endpoint"
admin:
  listen: "$admin"
EOF
done
# inspectproxy-otlp exports to a real collector: Jaeger v2, memory storage.
if [[ " $BENCH_CONFIGS " == *" inspectproxy-otlp "* ]]; then
  JAEGER=${INSPECTPROXY_JAEGER:-$(bash "$root/.ci/jaeger.sh")}
  cat >"$W/jaeger.yaml" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {receivers: [otlp], exporters: [jaeger_storage_exporter]}
  telemetry: {metrics: {level: none}, logs: {level: warn}}
extensions:
  jaeger_query:
    storage: {traces: mem}
    http: {endpoint: "127.0.0.1:$P_JQ"}
    grpc: {endpoint: "127.0.0.1:$P_JQG"}
  jaeger_storage:
    backends: {mem: {memory: {max_traces: 100000}}}
receivers:
  otlp:
    protocols: {http: {endpoint: "127.0.0.1:$P_OTLP"}, grpc: {endpoint: "127.0.0.1:$P_OTLPG"}}
exporters:
  jaeger_storage_exporter: {trace_storage: mem}
EOF
  start jaeger "$W/logs/jaeger.log" "$JAEGER" --config "$W/jaeger.yaml"
  wait_port "$P_OTLP" 60 "$START_PID" || { cat "$W/logs/jaeger.log" >&2; die "jaeger did not start"; }
fi
"$W/inspectproxy" ca init --data-dir "$W/ipca" 2>/dev/null
"$W/inspectproxy" ca export --data-dir "$W/ipca" >"$W/ipca/export.pem"

# start_config NAME: starts the proxy of a configuration and records its
# address (PROXY_OF, empty for direct), pid (PID_OF) and the CA its
# clients trust (CA_OF).
declare -A PROXY_OF PID_OF CA_OF
start_config() {
  local name=$1 port ca=$W/pki/ca.pem
  local mitmargs=(-q --listen-host 127.0.0.1 --set "confdir=$W/mitm" --set "ssl_verify_upstream_trusted_ca=$W/pki/ca.pem" --set stream_large_bodies=1m)
  case $name in
    direct) PROXY_OF[$name]="" PID_OF[$name]=0 CA_OF[$name]=$ca; return 0 ;;
    tinyproxy) port=$P_TINY; start "$name" "$W/logs/$name.log" tinyproxy -d -c "$W/tinyproxy.conf" ;;
    mitmproxy-passthrough) port=$P_MITMP; start "$name" "$W/logs/$name.log" mitmdump "${mitmargs[@]}" -p "$port" --ignore-hosts '.*' ;;
    mitmproxy-mitm) port=$P_MITMM; start "$name" "$W/logs/$name.log" mitmdump "${mitmargs[@]}" -p "$port"; ca=$W/mitm/mitmproxy-ca-cert.pem ;;
    inspectproxy-passthrough) port=$P_IPP; start "$name" "$W/logs/$name.log" "$W/inspectproxy" --config "$W/inspectproxy-passthrough.yaml" ;;
    inspectproxy-otlp) port=$P_IPO; start "$name" "$W/logs/$name.log" "$W/inspectproxy" --config "$W/inspectproxy-otlp.yaml" ;;
    inspectproxy-mitm) port=$P_IPM; start "$name" "$W/logs/$name.log" "$W/inspectproxy" --config "$W/inspectproxy-mitm.yaml"; ca=$W/ipca/export.pem ;;
    inspectproxy-passthrough-noui) port=$P_IPN; start "$name" "$W/logs/$name.log" "$W/inspectproxy" --config "$W/inspectproxy-passthrough-noui.yaml" ;;
    inspectproxy-passthrough-console) port=$P_IPC; start "$name" "$W/logs/$name.log" "$W/inspectproxy" --config "$W/inspectproxy-passthrough-console.yaml" ;;
    relay-iocopy) port=$P_RIO; start "$name" "$W/logs/$name.log" "$LG" relay -listen "127.0.0.1:$port" -copy io ;;
    relay-splice) port=$P_RSP; start "$name" "$W/logs/$name.log" "$LG" relay -listen "127.0.0.1:$port" -copy splice ;;
    *) die "unknown configuration $name" ;;
  esac
  PID_OF[$name]=$START_PID PROXY_OF[$name]=127.0.0.1:$port CA_OF[$name]=$ca
  wait_port "$port" 30 "$START_PID" || { cat "$W/logs/$name.log" >&2; die "$name did not start"; }
  [ -s "$ca" ] || die "$name: no client CA at $ca"
  if [ "$name" = inspectproxy-passthrough-console ]; then
    # One console open and streaming, as a browser's EventSource reads it.
    wait_port "$P_UI" 30 "$START_PID" || die "$name: no console on $P_UI"
    local tok
    tok=$(curl -s "http://127.0.0.1:$P_UI/" | sed -n 's/.*name="inspectproxy-token" content="\([0-9a-f]*\)".*/\1/p')
    [ -n "$tok" ] || die "$name: no console token"
    start console-client /dev/null curl -sN "http://127.0.0.1:$P_UI/api/stream?k=$tok"
  fi
}

stop_config() {
  local name=$1
  [ "${PID_OF[$name]:-0}" != 0 ] || return 0
  stop "${PID_OF[$name]}" 20
  [ "$STOP_RC" = 0 ] || [ "$STOP_RC" = 143 ] || log "warning: $name exited with status $STOP_RC (see $W/logs/$name.log)"
  PID_OF[$name]=0
}

# lg NAME MODE FLAGS...: the load generator against configuration NAME.
lg() {
  local name=$1 mode=$2
  shift 2
  "$LG" "$mode" -label "$name" -target "$TARGET" -proxy "${PROXY_OF[$name]}" -ca "${CA_OF[$name]}" "$@"
}

if [ -n "${BENCH_INSPECTPROXY:-}" ]; then
  ip_version="binary $BENCH_INSPECTPROXY"
else
  ip_version="$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$root" && git diff --quiet HEAD -- . 2>/dev/null || echo ' + uncommitted changes')"
fi
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)

# 1. Idle tunnels, each proxy on a fresh process so its peak RSS is the tunnels'.
for name in $BENCH_CONFIGS; do
  [ "$name" != direct ] || continue
  log "== idle tunnels: $name"
  start_config "$name"
  lg "$name" rate -c 4 -d 1s -warmup 0 >/dev/null 2>&1 || true # first connections: caches, certificates
  sleep 1
  lg "$name" idle -n "$BENCH_IDLE" -c 64 -get "$BENCH_IDLE_GET" -pid "${PID_OF[$name]}" -out "$RESULTS" || die "$name: idle test failed"
  stop_config "$name"
done

# 2. Connection rate and download, every proxy on a fresh process, the
# configurations interleaved round by round so a change in the machine's
# background load hits them alike.
for name in $BENCH_CONFIGS; do start_config "$name"; done
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for name in $BENCH_CONFIGS; do
    log "== connection rate, round $round/$BENCH_ROUNDS: $name"
    lg "$name" rate -c "$BENCH_CONCURRENCY" -d "${BENCH_SECONDS}s" -warmup "${BENCH_WARMUP}s" -pid "${PID_OF[$name]}" -out "$RESULTS" \
      || die "$name: rate test failed"
  done
done
for ((round = 1; round <= BENCH_DL_RUNS; round++)); do
  for name in $BENCH_CONFIGS; do
    log "== download $round/$BENCH_DL_RUNS: $name"
    lg "$name" download -path /big -crcfile "$W/www/big.crc" -runs 1 -timeout 30s -pid "${PID_OF[$name]}" -out "$RESULTS" \
      || die "$name: download failed (see above; WRONG BYTES means the proxy corrupted the stream)"
  done
done
otlp_counts=""
if [ "${PID_OF[inspectproxy-otlp]:-0}" != 0 ]; then
  # What the export did: every trace queued and exported, none dropped?
  otlp_counts=$(curl -s "http://127.0.0.1:$P_IPOA/metrics" | grep -E '^inspectproxy_otlp_[a-z_]+\{' | tr '\n' ' ')
  log "inspectproxy-otlp: $otlp_counts"
fi
for name in $BENCH_CONFIGS; do stop_config "$name"; done
t_end=$(date +%s)
loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)

report=$("$LG" report -in "$RESULTS")
echo
echo "$report"
echo

if [ "$BENCH_RESULTS" != "-" ]; then
  {
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — bench/run.sh"
    echo
    echo "- command: \`${env_line}bench/${command_line% }\`"
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, Linux $(uname -r)"
    echo "- software: $(go version | cut -d' ' -f3), $("$NGINX" -v 2>&1 | cut -d' ' -f3), $(tinyproxy -v 2>&1 | head -1), mitmproxy $(mitmdump --version 2>/dev/null | awk '/Mitmproxy/{print $2}'), inspectproxy ${ip_version}"
    echo "- settings: rate tests of ${BENCH_SECONDS}s at concurrency $BENCH_CONCURRENCY (+${BENCH_WARMUP}s warm-up) × $BENCH_ROUNDS rounds (median, range in brackets), ${BENCH_BIG_MIB} MiB download × $BENCH_DL_RUNS (median), $BENCH_IDLE idle tunnels (each after GET ${BENCH_IDLE_GET:-none}), fd limit $nofile"
    echo "- load average $loadavg_start at the start, $loadavg_end at the end; $((t_end - t_start)) s"
    [ -z "$otlp_counts" ] || echo "- inspectproxy-otlp export counters: $otlp_counts"
    echo
    echo "$report"
  } >>"$BENCH_RESULTS"
  log "results appended to $BENCH_RESULTS"
fi
