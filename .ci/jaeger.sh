#!/usr/bin/env bash
# Builds Jaeger v2 (an OpenTelemetry Collector distribution with trace
# storage and a query API), the real backend the otelexport tests export
# to, and prints the binary's path. It is built in a throw-away module
# outside the repository: `go install` refuses Jaeger's replace directives,
# and none of its dependencies may enter this project's go.mod. The first
# build takes several minutes on 2 cores; later runs reuse the binary.
set -euo pipefail
version=v1.76.0
dir=${INSPECTPROXY_JAEGER_DIR:-$HOME/.cache/inspectproxy-jaeger}
bin=$dir/jaeger-$version
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
export PATH=$PATH:/usr/local/go/bin
mkdir -p "$dir"
cd "$dir"
[ -f go.mod ] || go mod init inspectproxy-jaeger-build >&2
go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$version" >&2
go build -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2
mv "$bin.tmp" "$bin"
echo "$bin"
