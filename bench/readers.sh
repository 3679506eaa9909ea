#!/usr/bin/env bash
# bench/readers.sh: how fast report and ats report read a big events file.
#
# 1. Records a real capture: the proxy (this tree's build) serves curl,
#    python and Chromium against local HTTP and HTTPS servers, plus the noise
#    of issue 11 (DNS failures, refused connects, a direct request).
# 2. Repeats that capture, with fresh ids, into a file of BENCH_MB (200) MB.
# 3. Times, on that file, in one run: report in every format, ats report,
#    and jq -c 'select(.kind=="tunnel")' as the yardstick; MB/s from the
#    median wall time of BENCH_RUNS (3) runs (jq: one), peak RSS from
#    /usr/bin/time; with BENCH_GB=1 also report
#    text on a 1 GB file for its memory.
# 4. Appends a dated table to bench/RESULTS.md.
#
# Needs: go, curl, python3, jq, openssl, chromium (apt-get install -y
# jq time chromium). Everything listens on 127.0.0.1; it takes 1-3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
MB=${BENCH_MB:-200}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/inspectproxy" ./cmd/inspectproxy
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# --- 1. a real capture
pp=$(port); hp=$(port); sp=$(port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$work/k.pem" -out "$work/c.pem" 2>/dev/null
openssl s_server -quiet -accept "$sp" -cert "$work/c.pem" -key "$work/k.pem" -www >/dev/null 2>&1 &
python3 -m http.server "$hp" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
"$work/inspectproxy" --listen 127.0.0.1:"$pp" --events "$work/capture.jsonl" --extra-roots "$work/c.pem" 2>/dev/null &
sleep 1
px=http://127.0.0.1:$pp
for i in $(seq 1 60); do
  curl -s -o /dev/null --cacert "$work/c.pem" -x "$px" "https://localhost:$sp/" || true
  curl -s -o /dev/null -x "$px" "http://localhost:$hp/?i=$i" || true
done
python3 - "$px" "$sp" "$work/c.pem" <<'PY'
import sys, ssl, urllib.request
px, sp, ca = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
o = urllib.request.build_opener(urllib.request.ProxyHandler({'https': px}), urllib.request.HTTPSHandler(context=ctx))
for _ in range(30):
    o.open('https://localhost:%s/' % sp).read()
PY
curl -s -o /dev/null -x "$px" https://no-such-host.invalid/ || true
curl -s -o /dev/null -x "$px" https://127.0.0.1:1/ || true
curl -s -o /dev/null "$px/" || true
timeout 60 /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --user-data-dir="$work/profile" --proxy-server="$px" --proxy-bypass-list='<-loopback>' \
  --ignore-certificate-errors --dump-dom "https://localhost:$sp/" >/dev/null 2>&1 || true
sleep 1
kill %3; wait %3 2>/dev/null || true
lines=$(wc -l <"$work/capture.jsonl")

# --- 2. a big file from it
python3 - "$work/capture.jsonl" "$work/big.jsonl" "$MB" <<'PY'
import sys
src, dst, mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(src, 'rb').read().splitlines()
with open(dst, 'wb') as f:
    n = 0
    while f.tell() < mb * 1000 * 1000:
        for l in lines:
            # a fresh id per copy: "id":"xxxx-N" -> "id":"xxxx-N.copy"
            f.write(l.replace(b'","start"', b'.%d","start"' % n, 1) + b'\n')
        n += 1
PY
size=$(stat -c %s "$work/big.jsonl")
size200=$size

# --- 3. timings
measure() { # name command...: the median of BENCH_RUNS (3) runs; peak RSS the largest
  local name=$1 t0 t1 times=() rss=0 r
  shift
  for _ in $(seq 1 "${BENCH_RUNS:-3}"); do
    t0=$(date +%s.%N)
    /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null
    t1=$(date +%s.%N)
    times+=("$(python3 -c "import sys; print(float(sys.argv[2])-float(sys.argv[1]))" "$t0" "$t1")")
    r=$(cat "$work/rss"); [ "$r" -gt "$rss" ] && rss=$r
  done
  python3 -c "import sys, statistics; s=statistics.median(map(float, sys.argv[4:])); print('| %s | %.2f | %.0f | %.0f |' % (sys.argv[1], s, int(sys.argv[2])/s/1e6, int(sys.argv[3])/1024))" \
    "$name" "$size" "$rss" "${times[@]}"
}
rows=()
rows+=("$(BENCH_RUNS=1 measure 'jq -c select(.kind=="tunnel")' jq -c 'select(.kind=="tunnel")' "$work/big.jsonl")")
for f in text json csv html har; do
  rows+=("$(measure "report --format $f" "$work/inspectproxy" report -q --format "$f" "$work/big.jsonl")")
done
rows+=("$(measure 'ats report' "$work/inspectproxy" ats report -q "$work/big.jsonl")")
rows+=("$(measure 'report (1 core: GOMAXPROCS=1)' env GOMAXPROCS=1 "$work/inspectproxy" report -q "$work/big.jsonl")")
rows+=("$(measure 'ats report (1 core)' env GOMAXPROCS=1 "$work/inspectproxy" ats report -q "$work/big.jsonl")")
if [ "${BENCH_GB:-0}" = 1 ]; then
  for _ in 1 2 3 4 5; do cat "$work/big.jsonl"; done >"$work/gb.jsonl"
  size=$(stat -c %s "$work/gb.jsonl")
  rows+=("$(measure 'report, 1 GB file' "$work/inspectproxy" report -q "$work/gb.jsonl")")
  rows+=("$(measure 'ats report, 1 GB file' "$work/inspectproxy" ats report -q "$work/gb.jsonl")")
fi

# --- 4. results
{
  echo
  echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — bench/readers.sh"
  echo
  echo "- input: a real capture of $lines events (curl, python, Chromium through the proxy to local servers, with DNS failures, a refused connect, a direct request) repeated with fresh ids to $((size200 / 1000000)) MB (the 1 GB rows: that file 5 times)"
  echo "- machine: $(nproc) CPUs, $(go version | cut -d' ' -f3), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo
  echo "| command | seconds (median) | MB/s | peak RSS MiB |"
  echo "|---|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
} | tee -a bench/RESULTS.md
