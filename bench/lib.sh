# shellcheck shell=bash
# shellcheck disable=SC2034 # START_PID and STOP_RC are read by the scripts that source this
# Shared helpers for bench/run.sh and bench/soak.sh (sourced, not run).
# Everything here stays on 127.0.0.0/8.

# PIDS holds every process a script started; cleanup stops them.
PIDS=()

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# start NAME LOGFILE CMD...: runs CMD in the background, records its pid in
# START_PID and PIDS.
start() {
  local name=$1 logf=$2
  shift 2
  "$@" >"$logf" 2>&1 &
  START_PID=$!
  PIDS+=("$START_PID")
  log "started $name (pid $START_PID)"
}

# stop PID [GRACE_SECONDS]: SIGTERM, wait, then SIGKILL. Sets STOP_RC.
stop() {
  local pid=$1 grace=${2:-15} i
  STOP_RC=0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || STOP_RC=$?; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop in ${grace}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || STOP_RC=$?
  return 0
}

cleanup_pids() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# wait_port PORT [SECONDS] [PID]: until 127.0.0.1:PORT accepts (or PID dies).
wait_port() {
  local port=$1 secs=${2:-20} pid=${3:-} i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# need_pkgs CMD:PACKAGE...: installs with apt-get the packages whose command is missing.
need_pkgs() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root or install them"
  log "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# make_pki DIR: a CA and a server leaf (ECDSA P-256) for 127.0.0.1 and
# 127.0.0.2: DIR/ca.pem, DIR/leaf.pem, DIR/leaf.key.
make_pki() {
  local d=$1
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/ca.key" -out "$d/ca.pem" -days 3 -subj "/CN=inspectproxy bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/leaf.key" -out "$d/leaf.csr" -subj "/CN=127.0.0.1" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:127.0.0.2" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$d/leaf.ext"
  openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/leaf.pem" -days 3 -sha256 -extfile "$d/leaf.ext" 2>/dev/null
}

# raise_nofile: the soft fd limit to the hard one (root cannot go past the
# hard limit without CAP_SYS_RESOURCE).
raise_nofile() {
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}
