#!/usr/bin/env bash
# Load benchmark: mse-proxy (passthrough and terminate) and the competing
# proxies (HAProxy, nginx stream, sniproxy) against a direct client-to-nginx
# connection, in the same run, interleaved. See benches/load/README.md for
# what it measures and the knobs.
#
#   bash benches/load/run.sh
#
# Needs root (apt-get for missing tools, /etc/hosts for wrk's SNI, raising the
# fd limit) and 2 CPUs: the proxies and nginx on CPU 0, the load on CPU 1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# ---- knobs (environment) ---------------------------------------------------
ROUNDS=${ROUNDS:-3}            # rounds of the short workloads (every path once each)
BIG_ROUNDS=${BIG_ROUNDS:-2}    # rounds of the 1 GiB transfer
SECS=${SECS:-2}                # seconds per new-connection / keep-alive run
COMPARE=${COMPARE-haproxy nginx sniproxy} # competing proxies to run too ("": mse-proxy only)
CONC=${CONC:-16}               # new-connection client threads (connections in flight)
WRK_CONNS=${WRK_CONNS:-8}      # keep-alive connections (wrk -c, one wrk thread)
IDLE_CONNS=${IDLE_CONNS:-5000} # idle TLS connections held through the proxy
KEY=${KEY:-rsa}                # certificates of nginx and the proxy: rsa (2048) or ec (P-256)
NGINX_PORT=${NGINX_PORT:-18443}
PROXY_PORT=${PROXY_PORT:-18444}
HAP_PT_PORT=${HAP_PT_PORT:-18445}  # HAProxy passthrough frontend
HAP_TT_PORT=${HAP_TT_PORT:-18446}  # HAProxy terminate frontend
NGX_PT_PORT=${NGX_PT_PORT:-18447}  # nginx stream passthrough server
NGX_TT_PORT=${NGX_TT_PORT:-18448}  # nginx stream terminate server
SNI_PT_PORT=${SNI_PT_PORT:-18449}  # sniproxy listener
NGX_STREAM_MODULE=${NGX_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
SERVER_CPU=${SERVER_CPU:-0}    # proxies and nginx (a list such as 0,1 for a scaling run)
CLIENT_CPU=${CLIENT_CPU:-1}    # load generators (a list too)
WORKERS=${WORKERS:-1}          # mse-proxy's workers (scaling: WORKERS=2 SERVER_CPU=0,1 CLIENT_CPU=0,1)
ACCESS_LOG=${ACCESS_LOG:-false}
SPLICE=${SPLICE:-true}         # passthrough: splice bulk runs (true) or always copy (false)
NICE=${NICE:--10}              # priority over other work on a shared machine (0: off); see README
PROFILE=${PROFILE:-1}          # 1: per path, syscalls per new connection (strace) and where the CPU goes (perf)
OUT=${OUT:-$ROOT/target/load-bench.md}
# MSE_PROXY_BIN=path: use this binary instead of building target/release/mse-proxy.
# MSE_B_BIN=path: an A/B run. A second mse-proxy binary (a variant built from
# another commit) runs beside the first with the same config on its own port,
# as paths b-pt and b-tt, interleaved with every other path in every round.
PROXY_B_PORT=${PROXY_B_PORT:-18450}

PT_HOST=pt.load.localhost   # passthrough route
TT_HOST=tt.load.localhost   # terminate route
HOSTS_MARK="# mse-proxy-load-bench"
BIG_BYTES=$((1024 * 1024 * 1024))

log() { printf '[load %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- tools -----------------------------------------------------------------
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v taskset >/dev/null || need+=(util-linux)
command -v getent >/dev/null || need+=(libc-bin)
if [ "$PROFILE" = 1 ]; then
    command -v strace >/dev/null || need+=(strace)
    command -v perf >/dev/null || need+=(linux-perf)
fi
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${need[*]}; run as root or install them"
    log "installing ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs (proxy+nginx on one, load on the other)"
CLK_TCK=$(getconf CLK_TCK)

# Competitors: each one whose package is missing is installed, or left out
# with a log line if that fails.
comp_ok() {
    case $1 in
        haproxy) command -v haproxy >/dev/null ;;
        nginx) [ -f "$NGX_STREAM_MODULE" ] ;;
        sniproxy) command -v sniproxy >/dev/null ;;
    esac
}
comp_pkg() { case $1 in haproxy) echo haproxy ;; nginx) echo libnginx-mod-stream ;; sniproxy) echo sniproxy ;; esac; }
APT_UPDATED=0
comps=()
for c in $COMPARE; do
    case $c in haproxy | nginx | sniproxy) ;; *) die "COMPARE: unknown proxy '$c' (haproxy, nginx, sniproxy)" ;; esac
    if ! comp_ok "$c"; then
        log "installing $(comp_pkg "$c") for COMPARE=$c"
        if [ "$(id -u)" = 0 ] &&
            { [ $APT_UPDATED = 1 ] || { apt-get update -qq >/dev/null && APT_UPDATED=1; }; } &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$(comp_pkg "$c")" >/dev/null &&
            comp_ok "$c"; then
            :
        else
            log "could not install $(comp_pkg "$c"): skipping $c"
            continue
        fi
    fi
    comps+=("$c")
done
COMPARE="${comps[*]:-}"
has() { [[ " $COMPARE " == *" $1 "* ]]; }
HAPROXY="" SNIPROXY="" HAP_FULL="" HAP_VER="" SNI_FULL="" SNI_VER=""
NGX_FULL=$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
NGX_VER=$(cut -d. -f1-2 <<<"$NGX_FULL")
if has haproxy; then
    HAPROXY=$(command -v haproxy)
    HAP_FULL=$("$HAPROXY" -v | awk 'NR == 1 {print $3}')
    HAP_VER=$(cut -d. -f1-2 <<<"$HAP_FULL")
fi
if has sniproxy; then
    SNIPROXY=$(command -v sniproxy)
    SNI_FULL=$("$SNIPROXY" -V | awk '{print $2}')
    SNI_VER=$(cut -d. -f1-2 <<<"$SNI_FULL")
fi

# fds: a proxy holds 2 per idle connection, the holder 1.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
[ "$FD_LIMIT" -ge $((2 * IDLE_CONNS + 256)) ] || die "fd limit $FD_LIMIT too low for IDLE_CONNS=$IDLE_CONNS"
# HAProxy refuses to start when it cannot raise its fd limit to what maxconn
# needs (2 per connection), so maxconn is 100000 only where the limit allows.
HAP_MAXCONN=$(( (FD_LIMIT - 100) / 2 < 100000 ? (FD_LIMIT - 100) / 2 : 100000 ))
NGX_CONNS=$(( FD_LIMIT < 32768 ? FD_LIMIT : 32768 )) # nginx worker_connections (a proxied one counts 2)

# ---- build -----------------------------------------------------------------
if [ -n "${MSE_PROXY_BIN:-}" ]; then
    PROXY_BIN=$MSE_PROXY_BIN
else
    log "cargo build --release --bin mse-proxy"
    (cd "$ROOT" && cargo build --release --locked --bin mse-proxy) >&2
    PROXY_BIN=$ROOT/target/release/mse-proxy
fi
log "building the load generator (benches/load/loadgen)"
CARGO_TARGET_DIR=$ROOT/target/load-bench cargo build --release --locked --quiet \
    --manifest-path "$ROOT/benches/load/loadgen/Cargo.toml" >&2
LOADGEN=$ROOT/target/load-bench/release/mse-proxy-loadgen

# ---- scratch, cleanup ------------------------------------------------------
TMP=$(mktemp -d /tmp/mse-load.XXXXXX)
chmod 755 "$TMP"
NGINX_PID="" HOLDER_PID="" HOSTS_ADDED=0 AUTOGROUP_SAVED=""
# Proxies by name (mse, haproxy, nginx, sniproxy): PID = what was started (for
# nginx the master), MPID = the process measured (for nginx the worker), EXTRA
# = other processes of it (sniproxy's binder helper).
declare -A PID=() MPID=() EXTRA=()
stop_pid() { # pid: TERM, wait up to 5 s, then KILL
    local pid=$1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    set +e
    stop_pid "$HOLDER_PID"
    for n in "${!PID[@]}"; do stop_proxy "$n"; done
    stop_pid "$NGINX_PID"
    [ -n "$AUTOGROUP_SAVED" ] && echo "$AUTOGROUP_SAVED" >"/proc/$$/autogroup" 2>/dev/null
    if [ "$HOSTS_ADDED" = 1 ]; then
        # Rewrite in place (keeps the inode: /etc/hosts may be a bind mount).
        grep -vF "$HOSTS_MARK" /etc/hosts >"$TMP/hosts.new" && cat "$TMP/hosts.new" >/etc/hosts
    fi
    if { [ $rc -ne 0 ] || [ -n "${KEEP_TMP:-}" ]; } && [ -d "$TMP" ]; then
        log "exit $rc; logs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Priority. With autogroup scheduling (Linux's default on desktops and many
# VMs) CPU time is shared between sessions first and nice only counts inside a
# session, so other sessions' builds would take half of CPU 0 whatever our
# nice. Raise this session's autogroup for the run (restored on exit), and
# start everything at $NICE.
if [ "$NICE" != 0 ] && [ -w /proc/$$/autogroup ]; then
    saved=$(awk '{print $NF}' "/proc/$$/autogroup")
    if echo "$NICE" >"/proc/$$/autogroup" 2>/dev/null; then AUTOGROUP_SAVED=$saved; fi
fi

# ---- certificates ----------------------------------------------------------
newcert() { # name → $TMP/name.crt, $TMP/name.key
    local alg=(-newkey rsa:2048)
    [ "$KEY" = ec ] && alg=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
    openssl req -x509 "${alg[@]}" -nodes -days 2 -subj "/CN=$1" \
        -addext "subjectAltName=DNS:$1" -keyout "$TMP/$1.key" -out "$TMP/$1.crt" 2>/dev/null
}
newcert "$PT_HOST"   # nginx's (the "enclave")
newcert "$TT_HOST"   # the platform certificate of the terminate route
PIN=$(openssl x509 -in "$TMP/$PT_HOST.crt" -outform der | sha256sum | cut -d' ' -f1)

# ---- nginx -----------------------------------------------------------------
mkdir -p "$TMP/www" "$TMP/nginx-tmp"
truncate -s "$BIG_BYTES" "$TMP/www/big"   # sparse: served from the page cache
chmod 644 "$TMP/www/big"
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
worker_rlimit_nofile $FD_LIMIT;
events { worker_connections $NGX_CONNS; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
    client_body_temp_path $TMP/nginx-tmp/body;
    proxy_temp_path $TMP/nginx-tmp/proxy;
    fastcgi_temp_path $TMP/nginx-tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx-tmp/uwsgi;
    scgi_temp_path $TMP/nginx-tmp/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl backlog=4096;
        ssl_certificate $TMP/$PT_HOST.crt;
        ssl_certificate_key $TMP/$PT_HOST.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $TMP/www;
        location = / { return 200 "hello\n"; }
        location = /big { }
    }
}
EOF

# ---- proxy config ----------------------------------------------------------
cat >"$TMP/proxy.toml" <<EOF
workers = $WORKERS
routes_file = "routes.toml"
[[listener]]
address = "127.0.0.1:$PROXY_PORT"
[[certificate]]
cert = "$TT_HOST.crt"
key = "$TT_HOST.key"
[limits]
# All load comes from one client (loopback) to one route each: no
# per-client or per-route caps or rates. The connection limit is left to
# what the fds hold (checked above).
max_unrouted_per_client = 0
max_connections_per_client = 0
client_new_connections_per_second = 0
max_connections_per_route = 0
route_new_connections_per_second = 0
[log]
level = "warn"
access_log = $ACCESS_LOG
[relay]
splice = $SPLICE
EOF
cat >"$TMP/routes.toml" <<EOF
[[route]]
name = "load-pt"
hosts = ["$PT_HOST"]
mode = "passthrough"
backends = ["127.0.0.1:$NGINX_PORT"]

[[route]]
name = "load-tt"
hosts = ["$TT_HOST"]
mode = "terminate"
alpn = ["http/1.1"]
backends = ["127.0.0.1:$NGINX_PORT"]
[route.upstream]
pin_sha256 = "$PIN"
EOF
"$PROXY_BIN" check --config "$TMP/proxy.toml" >&2 || die "mse-proxy check refused the generated config"
if [ -n "${MSE_B_BIN:-}" ]; then
    [ -x "$MSE_B_BIN" ] || die "MSE_B_BIN=$MSE_B_BIN is not an executable"
    # The same config on its own port, with its own state directory (and so
    # its own upgrade socket).
    { echo 'state_dir = "state-b"'; sed "s/127.0.0.1:$PROXY_PORT/127.0.0.1:$PROXY_B_PORT/" "$TMP/proxy.toml"; } >"$TMP/proxy-b.toml"
    "$MSE_B_BIN" check --config "$TMP/proxy-b.toml" >&2 || die "MSE_B_BIN check refused the generated config"
fi
"$NGINX" -q -t -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" || die "nginx -t refused the backend config"

# ---- competitors' configs --------------------------------------------------
# The same two services as the proxy's routes, each on its own port: the
# passthrough one routes on the SNI to nginx untouched; the terminate one
# ends TLS with the tt certificate (ALPN http/1.1) and opens TLS to nginx
# (SNI pt host, certificate not checked, sessions resumed), relaying bytes (L4).
if has haproxy; then
    cat "$TMP/$TT_HOST.crt" "$TMP/$TT_HOST.key" >"$TMP/$TT_HOST.pem"
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAP_MAXCONN
defaults
    mode tcp
    maxconn $HAP_MAXCONN
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend hap_pt
    bind 127.0.0.1:$HAP_PT_PORT
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend nginx_passthrough if { req_ssl_sni -i $PT_HOST }
backend nginx_passthrough
    server nginx 127.0.0.1:$NGINX_PORT
frontend hap_tt
    bind 127.0.0.1:$HAP_TT_PORT ssl crt $TMP/$TT_HOST.pem alpn http/1.1
    default_backend nginx_tls
backend nginx_tls
    server nginx 127.0.0.1:$NGINX_PORT ssl verify none sni str($PT_HOST)
EOF
    "$HAPROXY" -c -f "$TMP/haproxy.cfg" >/dev/null || die "haproxy -c refused the generated config"
fi
if has nginx; then
    # A second nginx, not the backend: its own master and one worker.
    cat >"$TMP/nginx-stream.conf" <<EOF
load_module $NGX_STREAM_MODULE;
worker_processes 1;
daemon off;
pid $TMP/nginx-stream.pid;
error_log $TMP/nginx-stream-error.log warn;
worker_rlimit_nofile $FD_LIMIT;
events { worker_connections $NGX_CONNS; }
stream {
    map \$ssl_preread_server_name \$pt_backend {
        $PT_HOST 127.0.0.1:$NGINX_PORT;
    }
    server {
        listen 127.0.0.1:$NGX_PT_PORT backlog=4096;
        ssl_preread on;
        proxy_pass \$pt_backend;
    }
    server {
        listen 127.0.0.1:$NGX_TT_PORT ssl backlog=4096;
        ssl_certificate $TMP/$TT_HOST.crt;
        ssl_certificate_key $TMP/$TT_HOST.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_alpn http/1.1;
        proxy_pass 127.0.0.1:$NGINX_PORT;
        proxy_ssl on;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;
        proxy_ssl_session_reuse on;
        proxy_ssl_server_name on;
        proxy_ssl_name $PT_HOST;
    }
}
EOF
    "$NGINX" -q -t -e "$TMP/nginx-stream-error.log" -c "$TMP/nginx-stream.conf" || die "nginx -t refused the stream config"
fi
if has sniproxy; then
    # Started as root it always drops to a user (default daemon): name it, and
    # keep what it reads or writes after that readable / writable for it. The
    # table target is an IP:port, so no resolver (DNS) is involved.
    # Dots escaped in the regex; the config parser takes \\ for one backslash.
    sni_re=${PT_HOST//./\\\\.}
    touch "$TMP/sniproxy-error.log"
    chown daemon "$TMP/sniproxy-error.log"
    cat >"$TMP/sniproxy.conf" <<EOF
user daemon
pidfile $TMP/sniproxy.pid
error_log {
    filename $TMP/sniproxy-error.log
    priority notice
}
listener 127.0.0.1:$SNI_PT_PORT {
    protocol tls
    table load_pt
}
table load_pt {
    ^$sni_re\$ 127.0.0.1:$NGINX_PORT
}
EOF
    chmod 644 "$TMP/sniproxy.conf"
fi

# ---- names for wrk's SNI ---------------------------------------------------
for h in $PT_HOST $TT_HOST; do
    if ! getent ahostsv4 "$h" 2>/dev/null | grep -q '^127\.0\.0\.1'; then
        [ -w /etc/hosts ] || die "$h does not resolve to 127.0.0.1 and /etc/hosts is not writable"
        echo "127.0.0.1 $h $HOSTS_MARK" >>/etc/hosts
        HOSTS_ADDED=1
    fi
done

# ---- helpers ---------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_free "$NGINX_PORT" || die "port $NGINX_PORT busy (set NGINX_PORT)"
port_free "$PROXY_PORT" || die "port $PROXY_PORT busy (set PROXY_PORT)"
if has haproxy; then
    port_free "$HAP_PT_PORT" || die "port $HAP_PT_PORT busy (set HAP_PT_PORT)"
    port_free "$HAP_TT_PORT" || die "port $HAP_TT_PORT busy (set HAP_TT_PORT)"
fi
if has nginx; then
    port_free "$NGX_PT_PORT" || die "port $NGX_PT_PORT busy (set NGX_PT_PORT)"
    port_free "$NGX_TT_PORT" || die "port $NGX_TT_PORT busy (set NGX_TT_PORT)"
fi
if has sniproxy; then port_free "$SNI_PT_PORT" || die "port $SNI_PT_PORT busy (set SNI_PT_PORT)"; fi

ticks() { # utime+stime of a process (all its threads, live and dead), in clock ticks
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
cpu_line() { # "busy total irq" jiffies of CPUs $1 (one, or a list such as 0,1) from /proc/stat (irq = hard + soft irq)
    awk -v l="$1" 'BEGIN {n = split(l, c, ","); for (i = 1; i <= n; i++) want["cpu" c[i]] = 1}
        $1 in want {b = $2 + $3 + $4 + $7 + $8 + $9; B += b; T += b + $5 + $6; I += $7 + $8}
        END {print B + 0, T + 0, I + 0}' /proc/stat
}
worker_ticks() { # "name=ticks" of each mse-worker thread of process $1 (utime+stime)
    local t
    for t in /proc/"$1"/task/*; do
        case $(cat "$t/comm" 2>/dev/null) in
        mse-worker-*) echo "$(cat "$t/comm")=$(sed 's/^.*) //' "$t/stat" | awk '{print $12 + $13}')" ;;
        esac
    done
}
child_ms() { # CHILD_MS = CPU time of this shell's reaped children, ms (no subshell: times must run here)
    times >"$TMP/times.txt"
    CHILD_MS=$(awk 'NR == 2 {t = 0; for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); t += a[1] * 60 + a[2]} printf "%d", t * 1000}' "$TMP/times.txt")
}
# ms per tick, µs per tick
us_per_tick=$((1000000 / CLK_TCK))

run_on() { # cpu command...: pinned, at $NICE (background jobs spell it out, so that $! is the program)
    local cpu=$1
    shift
    nice -n "$NICE" taskset -c "$cpu" "$@"
}

wait_https() { # host port: bounded wait for a 200 on /
    for _ in $(seq 100); do
        if curl -skf -o /dev/null --max-time 2 --resolve "$1:$2:127.0.0.1" "https://$1:$2/"; then return 0; fi
        sleep 0.1
    done
    return 1
}

start_nginx() {
    nice -n "$NICE" taskset -c "$SERVER_CPU" "$NGINX" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" &
    NGINX_PID=$!
    wait_https "$PT_HOST" "$NGINX_PORT" || die "nginx did not come up: $(cat "$TMP/nginx-error.log")"
    NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)
    [ -n "$NGINX_WORKER" ] && [ "$(cat "/proc/$NGINX_WORKER/comm")" = nginx ] || die "no nginx worker"
}
# Proxies: start_proxy / stop_proxy NAME (mse, haproxy, nginx, sniproxy). Each
# runs on the server CPU at $NICE, in the foreground, as one process with one
# worker thread (nginx: master + one worker).
start_proxy() {
    local n=$1 log=$TMP/$1.log
    case $n in
        mse)
            nice -n "$NICE" taskset -c "$SERVER_CPU" "$PROXY_BIN" --config "$TMP/proxy.toml" 2>>"$log" &
            PID[$n]=$!
            ;;
        mseb)
            nice -n "$NICE" taskset -c "$SERVER_CPU" "$MSE_B_BIN" --config "$TMP/proxy-b.toml" 2>>"$log" &
            PID[$n]=$!
            ;;
        haproxy)
            nice -n "$NICE" taskset -c "$SERVER_CPU" "$HAPROXY" -db -f "$TMP/haproxy.cfg" >>"$log" 2>&1 </dev/null &
            PID[$n]=$!
            ;;
        nginx)
            nice -n "$NICE" taskset -c "$SERVER_CPU" "$NGINX" -e "$TMP/nginx-stream-error.log" -c "$TMP/nginx-stream.conf" >>"$log" 2>&1 &
            PID[$n]=$!
            log=$TMP/nginx-stream-error.log
            ;;
        sniproxy)
            nice -n "$NICE" taskset -c "$SERVER_CPU" "$SNIPROXY" -f -n "$FD_LIMIT" -c "$TMP/sniproxy.conf" >>"$log" 2>&1 </dev/null &
            PID[$n]=$!
            log=$TMP/sniproxy-error.log
            ;;
    esac
    MPID[$n]=${PID[$n]}
    EXTRA[$n]=""
    local p a s
    for p in $(paths_of "$n"); do
        read -r a s <<<"$(addr_of "$p")"
        wait_https "$s" "${a##*:}" || die "$n does not answer for $p: $(tail -5 "$TMP/$n.log" "$log" 2>/dev/null)"
    done
    case $n in
        nginx)
            MPID[$n]=$(pgrep -P "${PID[$n]}" | head -1)
            [ -n "${MPID[$n]}" ] && [ "$(cat "/proc/${MPID[$n]}/comm")" = nginx ] || die "no nginx stream worker"
            ;;
        sniproxy) EXTRA[$n]=$(pgrep -P "${PID[$n]}" | tr '\n' ' ') ;; # the binder (binds for it as root)
    esac
    local comm; comm=$(cat "/proc/${MPID[$n]}/comm")
    case $n in
        mse) [ "$comm" = "$(basename "$PROXY_BIN" | cut -c1-15)" ] ;;
        mseb) [ "$comm" = "$(basename "$MSE_B_BIN" | cut -c1-15)" ] ;;
        *) [ "$comm" = "$n" ] ;;
    esac || die "pid ${MPID[$n]} is $comm, not $n"
}
stop_proxy() {
    local n=$1 p
    stop_pid "${PID[$n]:-}"
    for p in ${EXTRA[$n]:-}; do stop_pid "$p"; done
    unset "PID[$n]" "MPID[$n]" "EXTRA[$n]"
}
restart_proxy() { stop_proxy "$1"; start_proxy "$1"; }

# Paths: direct, then the passthrough ones, then the terminate ones.
PATHS=(direct pt)
[ -n "${MSE_B_BIN:-}" ] && PATHS+=(b-pt)
has haproxy && PATHS+=(hap-pt)
has nginx && PATHS+=(ngx-pt)
has sniproxy && PATHS+=(sni-pt)
PATHS+=(tt)
[ -n "${MSE_B_BIN:-}" ] && PATHS+=(b-tt)
has haproxy && PATHS+=(hap-tt)
has nginx && PATHS+=(ngx-tt)
PROXY_PATHS=("${PATHS[@]:1}")
read -ra PROXIES <<<"mse ${MSE_B_BIN:+mseb} $COMPARE"

proxy_of() { # path → the proxy it goes through ("" for direct)
    case $1 in pt | tt) echo mse ;; b-*) echo mseb ;; hap-*) echo haproxy ;; ngx-*) echo nginx ;; sni-*) echo sniproxy ;; *) echo "" ;; esac
}
paths_of() { # proxy → its paths
    local p
    for p in "${PROXY_PATHS[@]}"; do [ "$(proxy_of "$p")" = "$1" ] && echo "$p"; done
    return 0
}
addr_of() { # path → client address and SNI
    case $1 in
        direct) echo "127.0.0.1:$NGINX_PORT $PT_HOST" ;;
        pt) echo "127.0.0.1:$PROXY_PORT $PT_HOST" ;;
        tt) echo "127.0.0.1:$PROXY_PORT $TT_HOST" ;;
        b-pt) echo "127.0.0.1:$PROXY_B_PORT $PT_HOST" ;;
        b-tt) echo "127.0.0.1:$PROXY_B_PORT $TT_HOST" ;;
        hap-pt) echo "127.0.0.1:$HAP_PT_PORT $PT_HOST" ;;
        hap-tt) echo "127.0.0.1:$HAP_TT_PORT $TT_HOST" ;;
        ngx-pt) echo "127.0.0.1:$NGX_PT_PORT $PT_HOST" ;;
        ngx-tt) echo "127.0.0.1:$NGX_TT_PORT $TT_HOST" ;;
        sni-pt) echo "127.0.0.1:$SNI_PT_PORT $PT_HOST" ;;
    esac
}
mpid_of() { # path → pid of the process measured for it ("" for direct)
    local n; n=$(proxy_of "$1")
    [ -z "$n" ] || echo "${MPID[$n]}"
}

# Raw results, one line per run: workload path round key=value...
RAW=$TMP/raw.txt
: >"$RAW"

# measured path command...: runs the command on the client CPU and prints its
# output, then on the last line the CPU time around it: the path's proxy
# process (0 for direct) and nginx worker (ticks), the client (ms), and CPU 0
# and CPU 1 from /proc/stat (jiffies: busy, total, irq).
measured() {
    local pid p0=0 n0 k0 a0 b0 p1=0 n1 k1 a1 b1 out
    pid=$(mpid_of "$1")
    shift
    [ -z "$pid" ] || p0=$(ticks "$pid")
    n0=$(ticks "$NGINX_WORKER")
    a0=$(cpu_line "$SERVER_CPU"); b0=$(cpu_line "$CLIENT_CPU"); child_ms; k0=$CHILD_MS
    out=$(run_on "$CLIENT_CPU" "$@")
    child_ms; k1=$CHILD_MS; a1=$(cpu_line "$SERVER_CPU"); b1=$(cpu_line "$CLIENT_CPU")
    [ -z "$pid" ] || p1=$(ticks "$pid")
    n1=$(ticks "$NGINX_WORKER")
    set -- $a0 $a1 $b0 $b1
    echo "$out proxy_ticks=$((p1 - p0)) nginx_ticks=$((n1 - n0)) client_ms=$((k1 - k0))" \
        "cpu0_busy=$(($4 - $1)) cpu0_total=$(($5 - $2)) cpu0_irq=$(($6 - $3))" \
        "cpu1_busy=$((${10} - $7)) cpu1_total=$((${11} - $8))"
}

to_ms() { # wrk latency "123.45us" / "1.2ms" / "1.01s" → ms
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

run_newconn() { # path round
    local a s line
    read -r a s <<<"$(addr_of "$1")"
    line=$(measured "$1" "$LOADGEN" newconn --addr "$a" --sni "$s" --secs "$SECS" --conc "$CONC")
    echo "newconn $1 $2 $line" >>"$RAW"
    log "newconn $1 #$2: $line"
}
run_wrk() { # path round
    local a s port out reqs rps p50 p99 errs line
    read -r a s <<<"$(addr_of "$1")"
    port=${a##*:}
    out=$(measured "$1" wrk -t1 -c"$WRK_CONNS" -d"${SECS}s" --latency --timeout 5s "https://$s:$port/")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errs=$(awk '/Socket errors:/ {for (i = 3; i <= NF; i++) {v = $i; sub(/,$/, "", v); if (v ~ /^[0-9]+$/) e += v}}
                /Non-2xx/ {e += $NF} END {print e + 0}' <<<"$out")
    line="requests=${reqs:-0} rate=${rps:-0} p50_ms=$p50 p99_ms=$p99 errors=${errs:-0} $(tail -1 <<<"$out" | grep -o 'proxy_ticks=.*')"
    echo "keepalive $1 $2 $line" >>"$RAW"
    log "keep-alive $1 #$2: $line"
}
run_big() { # path round
    local a s port line
    read -r a s <<<"$(addr_of "$1")"
    port=${a##*:}
    line=$(measured "$1" curl -sS -k -o /dev/null --max-time 120 --resolve "$s:$port:127.0.0.1" \
        -w 'bytes=%{size_download} secs=%{time_total} rate=%{speed_download}' "https://$s:$port/big")
    echo "big $1 $2 $line" >>"$RAW"
    log "1 GiB $1 #$2: $line"
}

proc_status() { # pid → "rss_kib=.. fds=.. pipes=.."
    local rss fds pipes
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status")
    fds=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    pipes=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 -lname 'pipe:*' 2>/dev/null | wc -l)
    echo "rss_kib=$rss fds=$fds pipes=$pipes"
}
tcp_mem_pages() { awk '$1 == "TCP:" {for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }

run_idle() { # path
    local a s n pid before after tcp0 tcp1 out
    read -r a s <<<"$(addr_of "$1")"
    n=$(proxy_of "$1")
    restart_proxy "$n"
    pid=${MPID[$n]}
    # Warm the proxy (first-use allocations, thread-locals) before the baseline.
    run_on "$CLIENT_CPU" "$LOADGEN" newconn --addr "$a" --sni "$s" --secs 1 --conc 4 >/dev/null
    sleep 1
    before=$(proc_status "$pid"); tcp0=$(tcp_mem_pages)
    nice -n "$NICE" taskset -c "$CLIENT_CPU" "$LOADGEN" idle --addr "$a" --sni "$s" --count "$IDLE_CONNS" --threads 4 --hold 180 \
        >"$TMP/holder.out" 2>"$TMP/holder.err" </dev/null &
    HOLDER_PID=$!
    for _ in $(seq 1800); do # up to 180 s
        grep -q '^ready' "$TMP/holder.out" 2>/dev/null && break
        kill -0 "$HOLDER_PID" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^ready' "$TMP/holder.out" || die "idle holder did not get ready: $(cat "$TMP/holder.err")"
    sleep 2 # let the last handshakes settle in the proxy
    after=$(proc_status "$pid"); tcp1=$(tcp_mem_pages)
    out=$(cat "$TMP/holder.out")
    stop_pid "$HOLDER_PID"; HOLDER_PID=""
    local line="$out before_${before// / before_} after_${after// / after_} tcp_mem_pages_delta=$((tcp1 - tcp0))"
    echo "idle $1 1 $line" >>"$RAW"
    log "idle $1: $line"
}

# Profile of one path under new connections (not part of the measured runs:
# strace slows the process it traces). Syscalls per connection: `strace -c`
# on every thread of the measured process during a CONC/2 newconn run,
# calls / connections. Where the CPU goes: `perf record -e cpu-clock` on it
# during a CONC newconn run, shares by binary (kernel, the proxy, libc) and
# the top symbols. On a VM without a PMU, cpu-clock samples taken with
# interrupts off land where they are turned back on (finish_task_switch,
# _raw_spin_unlock_irqrestore): read the kernel share as a whole.
# strace_per kind path pid top fmt unit command...: `strace -c` on every
# thread of pid while the command runs on the client CPU; appends "kind path
# calls-per-unit | the top syscalls per unit" to the profile, where the
# units are the command's connections (unit conns: loadgen's conns=N) or
# requests (unit reqs: wrk's "N requests in").
strace_per() {
    local kind=$1 path=$2 pid=$3 top=$4 fmt=$5 unit=$6 tids st out n calls
    shift 6
    tids=$(for t in /proc/"$pid"/task/*; do printf -- '-p %s ' "${t##*/}"; done)
    # shellcheck disable=SC2086 # one -p per thread
    strace -c -f -o "$TMP/strace-$kind-$path.txt" $tids </dev/null >/dev/null 2>&1 &
    st=$!
    sleep 0.5
    out=$(run_on "$CLIENT_CPU" "$@")
    kill -INT "$st" 2>/dev/null; wait "$st" 2>/dev/null || true
    case $unit in
        conns) n=$(grep -o 'conns=[0-9]*' <<<"$out" | cut -d= -f2) ;;
        reqs) n=$(awk '/requests in/ {print $1}' <<<"$out") ;;
    esac
    [ -n "${n:-}" ] && [ "$n" -gt 0 ] || return 0
    calls=$(awk '$NF ~ /^[a-z_0-9]+$/ && $NF != "syscall" && $NF != "total" && $4 ~ /^[0-9]+$/ { print $NF, $4 }' \
        "$TMP/strace-$kind-$path.txt" | sort -k2 -nr)
    echo "$kind $path $(awk -v n="$n" -v f="$fmt" '{ t += $2 } END { printf f, t / n }' <<<"$calls") |" \
        "$(head -"$top" <<<"$calls" | awk -v n="$n" -v f="$fmt" '{ printf "%s " f ", ", $1, $2 / n }' | sed 's/, $//')" >>"$TMP/profile.txt"
}
# perf_shares tag path pid command...: `perf record -e cpu-clock` on pid
# while the command runs on the client CPU; appends "dso<tag> path
# kernel=.. binary=.." (% of samples by binary) and "syms<tag> path" (the
# top user-space symbols) to the profile.
perf_shares() {
    local tag=$1 path=$2 pid=$3 st
    shift 3
    perf record -q -e cpu-clock -F 2000 -o "$TMP/perf-$tag-$path.data" -p "$pid" </dev/null >/dev/null 2>&1 &
    st=$!
    sleep 0.3
    run_on "$CLIENT_CPU" "$@" >/dev/null
    kill -INT "$st" 2>/dev/null; wait "$st" 2>/dev/null || true
    perf report -i "$TMP/perf-$tag-$path.data" --no-children --sort dso -g none 2>/dev/null |
        awk -v p="$path" -v t="$tag" '$1 ~ /%$/ { sub(/%/, "", $1); d = $2; if (d ~ /kernel/) d = "kernel"; else if (d ~ /^libssl|^libcrypto/) d = "openssl"; else if (d ~ /^libc/) d = "libc"; else if (d ~ /^\[vdso/) d = "vdso"; else d = "binary"; s[d] += $1 }
            END { printf "dso%s %s", t, p; for (d in s) printf " %s=%.1f", d, s[d]; print "" }' >>"$TMP/profile.txt"
    echo "syms$tag $path $(perf report -i "$TMP/perf-$tag-$path.data" --no-children --sort sym -g none 2>/dev/null |
        awk '$1 ~ /%$/ && $2 == "[.]" { pct = $1; $1 = ""; $2 = ""; sub(/^ +/, ""); gsub(/[|]/, "/"); print pct, substr($0, 1, 70) }' |
        head -6 | tr '\n' ';' | sed 's/;$//; s/;/; /g')" >>"$TMP/profile.txt"
}
run_profile() { # path
    local a s n pid
    read -r a s <<<"$(addr_of "$1")"
    n=$(proxy_of "$1")
    pid=${MPID[$n]}
    local port=${a##*:}
    strace_per syscalls "$1" "$pid" 8 '%.1f' conns "$LOADGEN" newconn --addr "$a" --sni "$s" --secs "$SECS" --conc $((CONC / 2))
    strace_per kasyscalls "$1" "$pid" 5 '%.2f' reqs wrk -t1 -c"$WRK_CONNS" -d"${SECS}s" --timeout 5s "https://$s:$port/"
    if command -v perf >/dev/null && perf stat -e cpu-clock true >/dev/null 2>&1; then
        perf_shares nc "$1" "$pid" "$LOADGEN" newconn --addr "$a" --sni "$s" --secs "$SECS" --conc "$CONC"
        perf_shares ka "$1" "$pid" wrk -t1 -c"$WRK_CONNS" -d"${SECS}s" --timeout 5s "https://$s:$port/"
    fi
    log "profile $1: $(grep " $1 " "$TMP/profile.txt" | tr '\n' ' ')"
}

# ---- run -------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)
log "load average before: $LOAD_BEFORE"
start_nginx
for n in "${PROXIES[@]}"; do start_proxy "$n"; done
log "nginx worker $NGINX_WORKER; proxies (measured pids): $(for n in "${PROXIES[@]}"; do printf '%s %s, ' "$n" "${MPID[$n]}"; done)all on CPU $SERVER_CPU; load on CPU $CLIENT_CPU"
log "paths: ${PATHS[*]}"

# Warm-up (not recorded): sessions caches, upstream resumption, page cache of /big.
for p in "${PATHS[@]}"; do
    read -r a s <<<"$(addr_of "$p")"
    run_on "$CLIENT_CPU" "$LOADGEN" newconn --addr "$a" --sni "$s" --secs 1 --conc 4 >/dev/null
done
cat "$TMP/www/big" >/dev/null

for r in $(seq "$ROUNDS"); do for p in "${PATHS[@]}"; do run_newconn "$p" "$r"; done; done
for r in $(seq "$ROUNDS"); do for p in "${PATHS[@]}"; do run_wrk "$p" "$r"; done; done
for r in $(seq "$BIG_ROUNDS"); do for p in "${PATHS[@]}"; do run_big "$p" "$r"; done; done
for p in "${PROXY_PATHS[@]}"; do run_idle "$p"; done
if [ "$PROFILE" = 1 ]; then for p in "${PROXY_PATHS[@]}"; do run_profile "$p"; done; fi
# How the kernel spread the work over mse-proxy's workers (SO_REUSEPORT).
WORKER_SPLIT=$(worker_ticks "${MPID[mse]}" | tr '\n' ' ')
for n in "${PROXIES[@]}"; do stop_proxy "$n"; done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
T_END=$(date +%s)
log "load average after: $LOAD_AFTER ($((T_END - T_START)) s)"

# ---- report ----------------------------------------------------------------
# get workload path round key → value
get() { awk -v w="$1" -v p="$2" -v r="$3" -v k="$4" '$1 == w && $2 == p && $3 == r {
    for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$RAW"; }
median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
calc() { awk "BEGIN { x = $2; printf \"$1\", x }" 2>/dev/null || echo nan; }
rounds_of() { case $1 in big) seq "$BIG_ROUNDS" ;; idle) echo 1 ;; *) seq "$ROUNDS" ;; esac; }
# med workload path EXPR: median over rounds of EXPR, where {key} is that run's value
med() {
    local r e k
    for r in $(rounds_of "$1"); do
        e=$3
        while [[ $e =~ \{([a-z0-9_]+)\} ]]; do
            k=${BASH_REMATCH[1]}
            e=${e//\{$k\}/$(get "$1" "$2" "$r" "$k")}
        done
        calc '%.6f\n' "$e"
    done | median
}
# ratio workload path key: median over rounds of proxied / direct (same round)
ratio() {
    local r
    for r in $(rounds_of "$1"); do
        calc '%.6f\n' "$(get "$1" "$2" "$r" "$3") / $(get "$1" direct "$r" "$3")"
    done | median
}
US=$us_per_tick               # µs per tick
MSGB="$((1000 / CLK_TCK)) * 1000000000"   # ticks × this / bytes = ms per GB
rss_per() { calc '%.2f' "($(get idle "$1" 1 after_rss_kib) - $(get idle "$1" 1 before_rss_kib)) / $(get idle "$1" 1 opened)"; }
label() {
    case $1 in
        direct) echo direct ;;
        pt) echo "mse-proxy passthrough" ;;
        tt) echo "mse-proxy terminate" ;;
        b-pt) echo "mse-proxy B passthrough" ;;
        b-tt) echo "mse-proxy B terminate" ;;
        hap-pt) echo "HAProxy $HAP_VER passthrough" ;;
        hap-tt) echo "HAProxy $HAP_VER terminate (L4)" ;;
        ngx-pt) echo "nginx $NGX_VER stream passthrough" ;;
        ngx-tt) echo "nginx $NGX_VER stream terminate (L4)" ;;
        sni-pt) echo "sniproxy $SNI_VER passthrough" ;;
    esac
}
f() { calc "$1" "$2"; }
errors_of() { # path → errors of all its new-connection and keep-alive runs
    awk -v p="$1" '($1 == "newconn" || $1 == "keepalive") && $2 == p {
        for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "errors") e += kv[2] } } END { print e + 0 }' "$RAW"
}
competitors=""
has haproxy && competitors+="; HAProxy $HAP_FULL (nbthread 1, mode tcp, maxconn $HAP_MAXCONN)"
has nginx && competitors+="; nginx $NGX_FULL stream (a second instance, 1 worker; the measured process is its worker)"
has sniproxy && competitors+="; sniproxy $SNI_FULL"

{
    echo "## mse-proxy load benchmark ($(date -u +%FT%TZ))"
    echo
    echo "$(nproc --all) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r); $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') (1 worker), $(openssl version | cut -d' ' -f1-2); mse-proxy $PROXY_BIN${MSE_B_BIN:+ (B: $MSE_B_BIN)}, workers = $WORKERS, access log $ACCESS_LOG, splice $SPLICE${competitors}; $KEY certificates; proxies and nginx on CPU $SERVER_CPU (nice $NICE), load generators on CPU $CLIENT_CPU."
    echo "Medians of $ROUNDS interleaved rounds (1 GiB: $BIG_ROUNDS), ${SECS} s each; a ratio is proxied / direct within a round. New connections: $CONC client threads, full TLS 1.3 handshake (X25519, no resumption), one GET each. Keep-alive: wrk, 1 thread, $WRK_CONNS connections. Load average before: $LOAD_BEFORE; after: $LOAD_AFTER; $((T_END - T_START)) s."
    echo
    echo "| per proxy, one worker | new TLS conn/s (full handshake, 1 request) × direct | keep-alive req/s × direct | 1 GiB transfer × direct | proxy CPU µs / new conn | proxy CPU µs / keep-alive req | proxy CPU ms / GB | RSS KiB per idle TLS conn |"
    echo "|---|--:|--:|--:|--:|--:|--:|--:|"
    for p in "${PROXY_PATHS[@]}"; do
        echo "| $(label $p) | $(f %.2f "$(ratio newconn $p rate)") | $(f %.2f "$(ratio keepalive $p rate)") | $(f %.2f "$(ratio big $p rate)") |" \
            "$(f %.0f "$(med newconn $p "{proxy_ticks} * $US / {conns}")") | $(f %.1f "$(med keepalive $p "{proxy_ticks} * $US / {requests}")") |" \
            "$(f %.0f "$(med big $p "{proxy_ticks} * $MSGB / {bytes}")") | $(rss_per $p) |"
    done
    echo
    echo "### Raw figures (medians)"
    echo
    echo "| path | new conn/s | new conn p50 / p99 ms | keep-alive req/s | keep-alive p50 / p99 ms | 1 GiB MB/s | nginx CPU µs / new conn | nginx CPU µs / ka req | nginx CPU ms / GB | client CPU µs / new conn | client CPU µs / ka req | errors (all rounds) |"
    echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for p in "${PATHS[@]}"; do
        echo "| $(label $p) | $(f %.0f "$(med newconn $p "{rate}")") | $(f %.1f "$(med newconn $p "{p50_ms}")") / $(f %.1f "$(med newconn $p "{p99_ms}")") |" \
            "$(f %.0f "$(med keepalive $p "{rate}")") | $(f %.3f "$(med keepalive $p "{p50_ms}")") / $(f %.3f "$(med keepalive $p "{p99_ms}")") |" \
            "$(f %.0f "$(med big $p "{rate} / 1000000")") |" \
            "$(f %.0f "$(med newconn $p "{nginx_ticks} * $US / {conns}")") | $(f %.1f "$(med keepalive $p "{nginx_ticks} * $US / {requests}")") |" \
            "$(f %.0f "$(med big $p "{nginx_ticks} * $MSGB / {bytes}")") |" \
            "$(f %.0f "$(med newconn $p "{client_ms} * 1000 / {conns}")") | $(f %.1f "$(med keepalive $p "{client_ms} * 1000 / {requests}")") | $(errors_of $p) |"
    done
    echo
    echo "mse-proxy's worker threads, CPU over the whole run (clock ticks): $WORKER_SPLIT"
    echo
    echo "CPU use during each workload (medians, % of one CPU; CPU $SERVER_CPU: proxy + nginx + irq/softirq + other processes = busy; proxy: the process of that path's proxy, none for direct; the idle proxies count in other):"
    echo
    echo "| workload | path | CPU $SERVER_CPU busy | proxy | nginx | irq+softirq | other | CPU $CLIENT_CPU busy | client |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|"
    for w in newconn keepalive big; do
        for p in "${PATHS[@]}"; do
            echo "| $w | $(label $p) | $(f %.0f "$(med $w $p "100 * {cpu0_busy} / {cpu0_total}")") | $(f %.0f "$(med $w $p "100 * {proxy_ticks} / {cpu0_total}")") |" \
                "$(f %.0f "$(med $w $p "100 * {nginx_ticks} / {cpu0_total}")") | $(f %.0f "$(med $w $p "100 * {cpu0_irq} / {cpu0_total}")") |" \
                "$(f %.0f "$(med $w $p "100 * ({cpu0_busy} - {proxy_ticks} - {nginx_ticks} - {cpu0_irq}) / {cpu0_total}")") |" \
                "$(f %.0f "$(med $w $p "100 * {cpu1_busy} / {cpu1_total}")") | $(f %.0f "$(med $w $p "{client_ms} * $CLK_TCK / 10 / {cpu1_total}")") |"
        done
    done
    echo
    echo "Idle: $IDLE_CONNS TLS connections through the proxy, handshakes completed, held open; a fresh proxy process each (all of a proxy's paths share its process), measured after a warm-up, then 2 s after the last handshake; the measured process is the one in the CPU columns."
    echo
    echo "| path | opened | RSS KiB before → after | KiB / conn | fds before → after | pipe fds after | kernel TCP memory Δ, all sockets (KiB) |"
    echo "|---|--:|--:|--:|--:|--:|--:|"
    for p in "${PROXY_PATHS[@]}"; do
        echo "| $(label $p) | $(get idle $p 1 opened) | $(get idle $p 1 before_rss_kib) → $(get idle $p 1 after_rss_kib) | $(rss_per $p) |" \
            "$(get idle $p 1 before_fds) → $(get idle $p 1 after_fds) | $(get idle $p 1 after_pipes) |" \
            "$(f %.0f "$(get idle $p 1 tcp_mem_pages_delta) * $(getconf PAGESIZE) / 1024") |"
    done
    echo
    if [ "$PROFILE" = 1 ] && [ -s "$TMP/profile.txt" ]; then
        echo "### Profile per path: new connections, then keep-alive requests"
        echo
        echo "Syscalls per connection: \`strace -c\` on every thread of the measured process during a $((CONC / 2))-thread newconn run (calls / connections; strace slows the process, so this run is not in the tables above); per keep-alive request the same during a wrk run ($WRK_CONNS connections, calls / requests). CPU shares: \`perf record -e cpu-clock\` on it during a $CONC-thread newconn run, % of its samples by binary; on a VM without a PMU, samples taken with interrupts off land where they are turned back on, so read the kernel share as a whole."
        echo
        echo "| path | syscalls / conn | the most frequent, per conn | kernel % | own binary % | libc % | libssl + libcrypto % | top user-space symbols |"
        echo "|---|--:|---|--:|--:|--:|--:|---|"
        prof_row() { # path kind tag: one row of a profile table
            local sc ds us
            sc=$(awk -v p="$1" -v k="$2" '$1 == k && $2 == p { $1 = $2 = ""; print }' "$TMP/profile.txt")
            ds=$(awk -v p="$1" -v k="dso$3" '$1 == k && $2 == p' "$TMP/profile.txt")
            us=$(awk -v p="$1" -v k="syms$3" '$1 == k && $2 == p { $1 = $2 = ""; print }' "$TMP/profile.txt")
            dv() { grep -o "$1=[0-9.]*" <<<"$ds" | cut -d= -f2; }
            echo "| $(label "$1") | ${sc%%|*} | ${sc#*|} | $(dv kernel) | $(dv binary) | $(dv libc) | $(dv openssl) | $us |"
        }
        for p in "${PROXY_PATHS[@]}"; do prof_row "$p" syscalls nc; done
        echo
        echo "Keep-alive requests, the same per request (wrk, $WRK_CONNS connections, ${SECS} s each for strace and for perf):"
        echo
        echo "| path | syscalls / req | the most frequent, per req | kernel % | own binary % | libc % | libssl + libcrypto % | top user-space symbols |"
        echo "|---|--:|---|--:|--:|--:|--:|---|"
        for p in "${PROXY_PATHS[@]}"; do prof_row "$p" kasyscalls ka; done
        echo
    fi
    echo "Every run (proxy_ticks, nginx_ticks: 1/$CLK_TCK s; cpu*_: jiffies; client_ms: the load generator's CPU):"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
} >"$TMP/report.md"

mkdir -p "$(dirname "$OUT")"
cp "$TMP/report.md" "$OUT"
cat "$TMP/report.md"
log "written to $OUT"
