#!/usr/bin/env bash
# WireGuard mode vs HTTP proxy mode: one TCP download and the connection
# rate of the same Go client, through a device in the tunnel (wireguard-go
# on its own userspace stack, in process) and through CONNECT. The Go
# benchmarks are in wireguard/bench_test.go; they run in the test
# binary's own network namespace (so as root), where nothing leaves the
# machine. Appends the dated results, the ratios and a CPU profile's top
# to RESULTS.md.
#
# Environment (defaults in brackets):
#   BENCH_COUNT [3]                     runs of each benchmark, interleaved by go test -count (median reported)
#   BENCH_CONN_TIME [3s]                measured time of each connection-rate run
#   BENCH_RESULTS [bench/RESULTS.md]    file the results are appended to ("-": none)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BENCH_COUNT=${BENCH_COUNT:-3}
BENCH_CONN_TIME=${BENCH_CONN_TIME:-3s}
BENCH_RESULTS=${BENCH_RESULTS:-$here/RESULTS.md}
export PATH=$PATH:/usr/local/go/bin

W=$(mktemp -d /tmp/inspectproxy-wgbench.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$root"
go test -c -o "$W/wg.test" ./wireguard/
cd "$W"
./wg.test -test.run '^$' -test.bench 'Download' -test.benchtime 2x -test.count "$BENCH_COUNT" | tee dl.txt
./wg.test -test.run '^$' -test.bench 'Connection' -test.benchtime "$BENCH_CONN_TIME" -test.count "$BENCH_COUNT" | tee conn.txt
./wg.test -test.run '^$' -test.bench 'Download/^wireguard$' -test.benchtime 2x -test.cpuprofile cpu.out >/dev/null
go tool pprof -top -nodecount 15 wg.test cpu.out 2>/dev/null | sed -n '/flat%/,$p' >profile.txt

# median FIELD_NAME BENCH_NAME FILE: the median of the value before FIELD_NAME on BENCH_NAME's lines.
median() {
  awk -v unit="$1" -v name="$2" '$1 ~ name { for (i = 2; i < NF; i++) if ($(i+1) == unit) print $i }' "$3" |
    sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'
}
dl_http=$(median MB/s 'Download/http-proxy' dl.txt)
dl_wg=$(median MB/s 'Download/wireguard-[0-9]+$' dl.txt)
dl_wg1=$(median MB/s 'Download/wireguard-one-address' dl.txt)
cpu_http=$(median cpu-ms/op 'Download/http-proxy' dl.txt)
cpu_wg=$(median cpu-ms/op 'Download/wireguard-[0-9]+$' dl.txt)
# ns/op of a parallel benchmark is wall time per connection: the rate is 1e9 / ns.
cr_http=$(median ns/op 'Connection/http-proxy' conn.txt | awk '{ printf "%.0f", 1e9 / $1 }')
cr_wg=$(median ns/op 'Connection/wireguard' conn.txt | awk '{ printf "%.0f", 1e9 / $1 }')
ccpu_http=$(median cpu-ms/op 'Connection/http-proxy' conn.txt)
ccpu_wg=$(median cpu-ms/op 'Connection/wireguard' conn.txt)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict=$(awk -v r="$(ratio "$dl_wg" "$dl_http")" 'BEGIN { print (r >= 0.5 ? "PASS" : "FAIL") }')

report=$(cat <<EOF
## $(date -u '+%Y-%m-%d %H:%M UTC') — bench/wireguard.sh

- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg); $(go version | cut -d' ' -f3)
- command: \`bench/wireguard.sh\` (BENCH_COUNT=$BENCH_COUNT, BENCH_CONN_TIME=$BENCH_CONN_TIME), work tree at $(git -C "$root" rev-parse --short HEAD)
- client, proxy and server in one process on 2 cores; medians of $BENCH_COUNT runs

| | HTTP proxy (CONNECT) | WireGuard | WireGuard / HTTP proxy |
|---|---:|---:|---:|
| download of 256 MiB, MB/s | $dl_http | $dl_wg | $(ratio "$dl_wg" "$dl_http")× |
| the same, WireGuard bound to one address (\`wireguard.listen: 127.0.0.1:…\`) | | $dl_wg1 | $(ratio "$dl_wg1" "$dl_http")× |
| CPU per download (client + proxy + server), ms | $cpu_http | $cpu_wg | $(ratio "$cpu_wg" "$cpu_http")× |
| connections/s (16 at a time, 1 KiB each) | $cr_http | $cr_wg | $(ratio "$cr_wg" "$cr_http")× |
| CPU per connection, ms | $ccpu_http | $ccpu_wg | $(ratio "$ccpu_wg" "$ccpu_http")× |

Target: WireGuard download ≥ 0.5× the HTTP proxy's: **$verdict**.

CPU profile of the WireGuard download (both ends of the tunnel):

\`\`\`
$(cat profile.txt)
\`\`\`
EOF
)
printf '\n%s\n' "$report"
if [ "$BENCH_RESULTS" != "-" ]; then
  printf '\n%s\n' "$report" >>"$BENCH_RESULTS"
fi
