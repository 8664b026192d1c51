#!/usr/bin/env bash
# Other ways to relay a passthrough connection's bytes, against mse-proxy's
# epoll relay, on the same TLS traffic to the same nginx, interleaved, in one
# run: the kernel joining the two sockets (an eBPF sockmap, kernel_join/)
# and io_uring reads and writes (tokio-uring, io_uring/). See
# benches/relay_probes/README.md.
#
#   bash benches/relay_probes/run.sh
#
# Needs root (the sockmap program, apt-get for missing tools, /etc/hosts for
# wrk's SNI) and 2 CPUs. The kernel does a joined connection's work in
# softirq and in kworker threads, on whichever CPU, so a process's own CPU
# time says nothing here: every figure is the whole machine's busy time
# (both CPUs, every process, irq included) per operation, less the direct
# path's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROUNDS=${ROUNDS:-3}          # rounds (each path once per workload per round)
SECS=${SECS:-3}              # seconds per keep-alive run
WRK_CONNS=${WRK_CONNS:-8 64} # keep-alive connections, one workload each
BIG_GETS=${BIG_GETS:-3}      # 1 GiB downloads per bulk run
NGINX_PORT=${NGINX_PORT:-18470}
PROXY_PORT=${PROXY_PORT:-18471}
JOIN_PORT=${JOIN_PORT:-18472}
URING_PORT=${URING_PORT:-18473}
COOP_PORT=${COOP_PORT:-18474}
HOST=pt.relay-probes.localhost
HOSTS_MARK="# mse-proxy-relay-probes-bench"
OUT=${OUT:-$ROOT/target/relay-probes-bench.md}
PATHS=(direct mse join uring uring-coop)

log() { printf '[relay-probes %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (the sockmap program needs CAP_BPF and CAP_NET_ADMIN)"
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs"
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ -n "${MSE_PROXY_BIN:-}" ]; then
    PROXY_BIN=$MSE_PROXY_BIN
else
    log "cargo build --release --bin mse-proxy"
    (cd "$ROOT" && cargo build --release --locked --bin mse-proxy) >&2
    PROXY_BIN=$ROOT/target/release/mse-proxy
fi
for probe in kernel_join io_uring; do
    log "building the probe benches/relay_probes/$probe"
    CARGO_TARGET_DIR=$ROOT/target/relay-probes cargo build --release --locked --quiet \
        --manifest-path "$ROOT/benches/relay_probes/$probe/Cargo.toml" >&2
done
JOIN_BIN=$ROOT/target/relay-probes/release/mse-proxy-kernel-join
URING_BIN=$ROOT/target/relay-probes/release/mse-proxy-uring-relay

TMP=$(mktemp -d /tmp/mse-relay-probes.XXXXXX)
chmod 755 "$TMP"
PIDS=() HOSTS_ADDED=0
cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ "$HOSTS_ADDED" = 1 ]; then
        grep -vF "$HOSTS_MARK" /etc/hosts >"$TMP/hosts.new" && cat "$TMP/hosts.new" >/etc/hosts
    fi
    if [ $rc -ne 0 ]; then log "exit $rc; logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" \
    -keyout "$TMP/backend.key" -out "$TMP/backend.crt" 2>/dev/null
mkdir -p "$TMP/www" "$TMP/nginx-tmp"
truncate -s 1G "$TMP/www/big" # sparse: served from the page cache
chmod 644 "$TMP/www/big"
cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $TMP/nginx-tmp;
    proxy_temp_path $TMP/nginx-tmp;
    fastcgi_temp_path $TMP/nginx-tmp;
    uwsgi_temp_path $TMP/nginx-tmp;
    scgi_temp_path $TMP/nginx-tmp;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $TMP/backend.crt;
        ssl_certificate_key $TMP/backend.key;
        root $TMP/www;
        location = / { return 200 "hello\n"; }
        location = /big { }
    }
}
CONF
cat >"$TMP/routes.toml" <<CONF
[[route]]
name = "relay-probes"
hosts = ["$HOST"]
mode = "passthrough"
backends = ["127.0.0.1:$NGINX_PORT"]
CONF
cat >"$TMP/proxy.toml" <<CONF
workers = 1
routes_file = "routes.toml"
[[listener]]
address = "127.0.0.1:$PROXY_PORT"
[limits]
max_unrouted_per_client = 0
max_connections_per_client = 0
client_new_connections_per_second = 0
max_connections_per_route = 0
route_new_connections_per_second = 0
[log]
level = "warn"
access_log = false
[relay]
splice = true
CONF
if ! grep -q " $HOST " /etc/hosts; then
    echo "127.0.0.1 $HOST $HOSTS_MARK" >>/etc/hosts
    HOSTS_ADDED=1
fi

# The proxies and nginx on CPU 0, the load on CPU 1 (as benches/load).
taskset -c 0 "$NGINX" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" & PIDS+=($!)
taskset -c 0 "$PROXY_BIN" --config "$TMP/proxy.toml" 2>>"$TMP/mse-proxy.log" & PIDS+=($!)
MSE_PID=$!
taskset -c 0 "$JOIN_BIN" "127.0.0.1:$JOIN_PORT" "127.0.0.1:$NGINX_PORT" 2>>"$TMP/join.log" & PIDS+=($!)
JOIN_PID=$!
taskset -c 0 "$URING_BIN" "127.0.0.1:$URING_PORT" "127.0.0.1:$NGINX_PORT" 2>>"$TMP/uring.log" & PIDS+=($!)
URING_PID=$!
taskset -c 0 "$URING_BIN" "127.0.0.1:$COOP_PORT" "127.0.0.1:$NGINX_PORT" coop 2>>"$TMP/uring-coop.log" & PIDS+=($!)
COOP_PID=$!
port() {
    case $1 in
        direct) echo "$NGINX_PORT" ;; mse) echo "$PROXY_PORT" ;; join) echo "$JOIN_PORT" ;;
        uring) echo "$URING_PORT" ;; uring-coop) echo "$COOP_PORT" ;;
    esac
}
pid_of() {
    case $1 in
        mse) echo "$MSE_PID" ;; join) echo "$JOIN_PID" ;; uring) echo "$URING_PID" ;;
        uring-coop) echo "$COOP_PID" ;; *) echo "" ;;
    esac
}
for p in "${PATHS[@]}"; do
    ok=0
    for _ in $(seq 50); do
        if curl -sk --max-time 2 "https://$HOST:$(port $p)/" | grep -q hello; then ok=1; break; fi
        sleep 0.1
    done
    [ $ok = 1 ] || die "path $p does not answer (logs in $TMP)"
done

busy() { awk '/^cpu[0-9]+ / {b += $2 + $3 + $4 + $7 + $8} END {print b}' /proc/stat; } # jiffies
ticks() { [ -n "$1" ] && sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}' || echo 0; }
HZ=$(getconf CLK_TCK)

# measure path workload → appends "workload path ops busy_jiffies proc_ticks"
measure() {
    local p=$1 w=$2 ops b0 b1 t0 t1 out
    b0=$(busy); t0=$(ticks "$(pid_of "$p")")
    case $w in
        ka-*)
            out=$(taskset -c 1 wrk -t1 -c"${w#ka-}" -d"${SECS}s" --timeout 5s "https://$HOST:$(port "$p")/")
            ops=$(awk '/requests in/ {print $1}' <<<"$out")
            grep -q 'Non-2xx\|Socket errors' <<<"$out" && die "$p $w: errors: $out"
            ;;
        bulk)
            for _ in $(seq "$BIG_GETS"); do
                got=$(taskset -c 1 curl -sk -o /dev/null -w '%{size_download}' "https://$HOST:$(port "$p")/big")
                [ "$got" = 1073741824 ] || die "$p bulk: $got bytes"
            done
            ops=$BIG_GETS
            ;;
    esac
    b1=$(busy); t1=$(ticks "$(pid_of "$p")")
    echo "$w $p $ops $((b1 - b0)) $((t1 - t0))" >>"$TMP/results"
}

WORKLOADS=()
for c in $WRK_CONNS; do WORKLOADS+=("ka-$c"); done
WORKLOADS+=(bulk)
log "warm-up"
cat "$TMP/www/big" >/dev/null
for p in "${PATHS[@]}"; do measure "$p" ka-8; done
: >"$TMP/results"
for r in $(seq "$ROUNDS"); do
    for w in "${WORKLOADS[@]}"; do
        for p in "${PATHS[@]}"; do measure "$p" "$w"; done
    done
    log "round $r of $ROUNDS done"
done

# per workload and path: medians of machine µs per op and process µs per op
{
    echo "# Relay probes against mse-proxy's relay"
    echo
    echo "$(nproc --all) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r); $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); mse-proxy $PROXY_BIN (splice on, one worker); $ROUNDS rounds, medians. Machine CPU: busy time of all CPUs (every process, irq and softirq included) per operation; the proxy's cost is that less the direct path's. A keep-alive operation is one request (wrk, one thread, N connections, ${SECS} s); a bulk one is a 1 GiB download (curl)."
    echo
    echo "| workload | path | ops/s | machine CPU µs / op | proxy's cost µs / op (machine − direct) | × mse-proxy's | proxy process µs / op |"
    echo "|---|---|--:|--:|--:|--:|--:|"
    awk -v hz="$HZ" -v secs="$SECS" -v paths="${PATHS[*]}" '
        function median(s,   n, a, i, j, t) {
            n = split(s, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        {
            k = $1 SUBSEP $2
            us[k] = us[k] " " ($4 * 1e6 / hz / $3)
            pr[k] = pr[k] " " ($5 * 1e6 / hz / $3)
            rate[k] = rate[k] " " ($1 == "bulk" ? 0 : $3 / secs)
            if (!($1 in seen)) { seen[$1] = 1; order[++nw] = $1 }
        }
        END {
            for (i = 1; i <= nw; i++) {
                w = order[i]
                d = median(us[w SUBSEP "direct"]); m = median(us[w SUBSEP "mse"]) - d
                np = split(paths, ps, " ")
                for (j = 1; j <= np; j++) {
                    p = ps[j]; u = median(us[w SUBSEP p]); c = u - d
                    unit = (w == "bulk") ? 1000 : 1
                    printf "| %s | %s | %s | %.*f | %s | %s | %s |\n", w, p,
                        (w == "bulk") ? "–" : sprintf("%.0f", median(rate[w SUBSEP p])),
                        (w == "bulk") ? 0 : 2, u / unit,
                        (p == "direct") ? "–" : sprintf((w == "bulk") ? "%.0f" : "%.2f", c / unit),
                        (p == "direct") ? "–" : sprintf("%.2f", m > 0 ? c / m : 0),
                        (p == "direct") ? "–" : sprintf((w == "bulk") ? "%.0f" : "%.2f", median(pr[w SUBSEP p]) / unit)
                }
            }
        }' "$TMP/results"
    echo
    echo "Bulk rows are per GiB, in ms. join: the eBPF sockmap probe; uring: the io_uring probe (tokio-uring), uring-coop: the same with IORING_SETUP_COOP_TASKRUN. The sockmap probe's log: $(tail -1 "$TMP/join.log")"
} >"$OUT"
cat "$OUT"
log "report: $OUT"
