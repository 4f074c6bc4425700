#!/usr/bin/env bash
# loadbench.sh: load benchmark of genai-gateway (run by `make bench` and
# `make bench-load`).
#
# Builds ./cmd/mockllm and ./cmd/genai-gateway, starts on 127.0.0.1 (free
# ports, temporary directory):
#   direct          mockllm, the fake upstream (the baseline)
#   nginx           nginx reverse proxy to mockllm (bench/nginx.conf.tmpl):
#                   proxy_pass, keepalive upstream, proxy_buffering off
#   fasthttp        bench/fasthttpproxy: fasthttp's server and HostClient
#                   passing requests through with nothing else, the floor
#                   of the gateway's stack
#   gateway         genai-gateway to mockllm, rate limiting off
#   gateway+limits  genai-gateway with rate limiting on (limits so large that
#                   nothing is refused; users rotate through the `user` header)
#   cluster3+limits the same limits on three genai-gateway replicas joined in a
#                   cluster; wrk loads the first, which gossips every change
# then, for non-streaming ("chat") and streaming ("stream") chat completions:
#   - under load: wrk -tTHREADS -cCONNECTIONS against each target
#     (bench/chat.lua) after a short warm-up, reading the CPU time
#     (utime+stime in /proc/PID/stat) the proxy's processes spent during the
#     run: the gateway's process; nginx's master and workers; for direct,
#     mockllm's own;
#   - at one connection: wrk -t1 -c1 against each target, for the p50 each
#     proxy adds over direct mockllm;
# and prints one table (markdown) with, per mode and target: req/s, p50 and
# p99 under load, req/s relative to nginx, proxy CPU per request and
# relative to nginx, and p50 added at one connection. With BENCH_ROUNDS > 1
# the whole matrix runs that many times; the table shows the median and, in
# brackets, the range over the rounds (ratios are taken within each round,
# then their median and range shown; p50 and p99 come from the round with
# the median req/s). Under the table: checks against the goal figures of
# issue 8 and the allocations per request of the Go benchmarks
# BenchmarkProxyChat/BenchmarkProxyStream (./proxy, -benchmem).
#
# Everything it started is stopped on exit. If the gateway does not build,
# it says so and benches direct and nginx only; likewise without nginx. It
# needs wrk, curl and nginx (Debian: apt-get update && apt-get install -y
# wrk nginx curl); as root it installs what is missing.
#
# Usage: bench/loadbench.sh
# Environment (defaults in brackets):
#   BENCH_DURATION [10s]       wrk duration of each run under load
#   BENCH_WARMUP [2s]          wrk warm-up before each run under load; 0 skips it
#   BENCH_CONNECTIONS [32]     wrk connections under load
#   BENCH_THREADS [2, or 1 with BENCH_GOMAXPROCS=1]  wrk threads under load
#   BENCH_C1_DURATION [4s]     wrk -t1 -c1 duration of each one-connection run; 0 skips them
#   BENCH_USERS [100]          distinct `user` header values
#   BENCH_MODES ["chat stream"]
#   BENCH_TARGETS ["direct nginx fasthttp gateway gateway+limits cluster3+limits"]
#   BENCH_TOKEN_LATENCY [0s]   mockllm --token-latency
#   BENCH_ROUNDS [1]           repeat the whole matrix; median and range are shown
#   BENCH_GOMAXPROCS []        GOMAXPROCS of every gateway process, and nginx's
#                              worker_processes (else nginx runs "auto")
#   BENCH_ALLOCS [1]           0 skips the Go allocation benchmarks
#   BENCH_KEEP [0]             1 keeps the temporary directory (logs, raw wrk output)
#   GO [go on PATH, else /usr/local/go/bin/go]
#
# One run with the defaults takes about 4 minutes; each further round adds
# about 3 (10 runs of 12 s under load, 10 runs of 4 s at one connection).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
readonly BENCH=$ROOT/bench
readonly DURATION=${BENCH_DURATION:-10s}
readonly WARMUP=${BENCH_WARMUP:-2s}
readonly CONNECTIONS=${BENCH_CONNECTIONS:-32}
readonly GOMAXPROCS_SET=${BENCH_GOMAXPROCS:-}
if [[ $GOMAXPROCS_SET == 1 ]]; then
	readonly THREADS=${BENCH_THREADS:-1}
else
	readonly THREADS=${BENCH_THREADS:-2}
fi
readonly C1_DURATION=${BENCH_C1_DURATION:-4s}
readonly USERS=${BENCH_USERS:-100}
readonly MODES=${BENCH_MODES:-chat stream}
readonly TARGETS=${BENCH_TARGETS:-direct nginx fasthttp gateway gateway+limits cluster3+limits}
readonly TOKEN_LATENCY=${BENCH_TOKEN_LATENCY:-0s}
readonly KEEP=${BENCH_KEEP:-0}
readonly ROUNDS=${BENCH_ROUNDS:-1}
readonly ALLOCS=${BENCH_ALLOCS:-1}
readonly START_TIMEOUT=60 # seconds a server may take to listen
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
readonly CLK_TCK

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || {
	echo "[loadbench] error: BENCH_ROUNDS must be a positive integer, got '$ROUNDS'" >&2
	exit 2
}
[[ -z $GOMAXPROCS_SET || $GOMAXPROCS_SET =~ ^[1-9][0-9]*$ ]] || {
	echo "[loadbench] error: BENCH_GOMAXPROCS must be a positive integer, got '$GOMAXPROCS_SET'" >&2
	exit 2
}

log() { printf '[loadbench] %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/loadbench.XXXXXX")
readonly TMP
PIDS=()        # every server this script started
CHILD=""       # the foreground job run_wait is waiting for, if any
USED_PORTS=()  # ports handed out by free_port
LAST_PID=""    # set by start
LOAD_BEFORE="" # /proc/loadavg when the measurements begin

# cleanup stops every process we started (TERM, then KILL after 10 s) and
# removes the temporary directory.
cleanup() {
	local rc=$? pid deadline
	trap - EXIT INT TERM
	set +e
	if [[ -n $CHILD ]]; then
		kill -TERM "$CHILD" 2>/dev/null
		wait "$CHILD" 2>/dev/null
	fi
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	deadline=$((SECONDS + 10))
	for pid in "${PIDS[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.05
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [[ $KEEP == 1 ]]; then
		log "kept $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_wait OUTFILE CMD... runs CMD with its output in OUTFILE and returns its
# status. CMD runs in the background and is waited for, so that INT and TERM
# sent to this script interrupt the wait and stop CMD at once (bash ignores a
# SIGINT that arrives while a foreground command is running and survives it).
run_wait() {
	local outfile=$1 rc=0
	shift
	"$@" >"$outfile" 2>&1 &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=""
	return "$rc"
}

# port_open PORT succeeds when something accepts connections on 127.0.0.1:PORT.
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port VAR sets VAR to a port nothing listens on, below the kernel's
# ephemeral range and not handed out before.
free_port() {
	local -n out=$1
	local p _
	for _ in $(seq 1 500); do
		p=$((20000 + RANDOM % 12000))
		if [[ " ${USED_PORTS[*]} " != *" $p "* ]] && ! port_open "$p"; then
			USED_PORTS+=("$p")
			out=$p
			return 0
		fi
	done
	die "no free port found"
}

# wait_port NAME PID PORT waits until PORT accepts connections, failing if
# PID exits first or START_TIMEOUT passes.
wait_port() {
	local name=$1 pid=$2 port=$3 deadline=$((SECONDS + START_TIMEOUT))
	until port_open "$port"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited before listening on port $port"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "$name is not listening on port $port after ${START_TIMEOUT}s"
			return 1
		fi
		sleep 0.05
	done
}

# wait_ready URL polls URL until it answers 200, within START_TIMEOUT.
wait_ready() {
	local url=$1 deadline=$((SECONDS + START_TIMEOUT))
	until curl -fsS -o /dev/null -m 2 "$url" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "$url is not ready after ${START_TIMEOUT}s"
			return 1
		fi
		sleep 0.1
	done
}

# check_chat NAME PORT sends one request of each mode and checks the answer.
check_chat() {
	local name=$1 port=$2 body out
	body='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}],"max_tokens":2}'
	if ! out=$(curl -fsS -m 10 -H 'Content-Type: application/json' -H 'user: bench-user-1' \
		-d "$body" "http://127.0.0.1:$port/v1/chat/completions" 2>&1) || [[ $out != *'"w1 w2"'* ]]; then
		log "$name: unexpected chat answer: $out"
		return 1
	fi
	if ! out=$(curl -fsSN -m 10 -H 'Content-Type: application/json' -H 'user: bench-user-1' \
		-d "${body%\}},\"stream\":true}" "http://127.0.0.1:$port/v1/chat/completions" 2>&1) ||
		[[ $out != *'data: [DONE]'* ]]; then
		log "$name: unexpected stream answer: $out"
		return 1
	fi
}

# start NAME LOGFILE CMD... runs CMD in the background and records its pid
# in the variable LAST_PID.
start() {
	local name=$1 logfile=$2
	shift 2
	"$@" >"$logfile" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
	log "started $name (pid $LAST_PID)"
}

APT_UPDATED=0

# need_tool CMD APT_PACKAGE makes sure CMD exists, installing the Debian
# package when running as root (apt-get update once, then apt-get install).
# It fails, saying what to install, when CMD stays missing.
need_tool() {
	local cmd=$1 pkg=$2
	command -v "$cmd" >/dev/null && return 0
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		if ((!APT_UPDATED)); then
			log "$cmd not found; apt-get update"
			apt-get update >"$TMP/apt-update.log" 2>&1 || log "apt-get update failed (see $TMP/apt-update.log with BENCH_KEEP=1)"
			APT_UPDATED=1
		fi
		log "$cmd not found; apt-get install -y $pkg"
		apt-get install -y "$pkg" >"$TMP/apt-$pkg.log" 2>&1 || tail -n 5 "$TMP/apt-$pkg.log" >&2
	fi
	command -v "$cmd" >/dev/null && return 0
	log "missing: $cmd (install it: apt-get update && apt-get install -y $pkg)"
	return 1
}

# write_gateway_config FILE LIMITS PORT METRICS_PORT UPSTREAM_PORT [CLUSTER]
# writes a gateway config to FILE, with rate limiting on when LIMITS is 1 and
# the YAML block CLUSTER (default: cluster disabled).
write_gateway_config() {
	local file=$1 limits=$2 port=$3 metrics_port=$4 upstream_port=$5
	local cluster=${6:-$'cluster:\n  enabled: false'}
	cat >"$file" <<EOF
# Written by bench/loadbench.sh.
listen: "127.0.0.1:$port"
metrics_listen: "127.0.0.1:$metrics_port"
log:
  level: warn # keeps per-request logging off the hot path
  format: json
drain_timeout: 5s
upstreams:
  - name: mockllm
    url: "http://127.0.0.1:$upstream_port"
    timeout: 1m
$cluster
EOF
	if [[ $limits == 1 ]]; then
		cat >>"$file" <<EOF
rate_limit:
  enabled: true
  user_header: user
  missing_user: reject
  limits: # large enough that nothing is refused; every request is still admitted and settled
    - {name: bench-total, metric: total_tokens, limit: 1000000000000, window: 1m}
    - {name: bench-prompt, metric: prompt_tokens, limit: 1000000000000, window: 1h}
    - {name: bench-requests, metric: requests, limit: 1000000000, window: 1m}
EOF
	else
		printf 'rate_limit:\n  enabled: false\n' >>"$file"
	fi
}


# proc_ticks PID... prints the CPU time (utime+stime, in clock ticks) the
# processes PID... have used so far; a process that is gone counts 0.
proc_ticks() {
	local pid stat total=0
	local -a f
	for pid in "$@"; do
		stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		# Fields after "pid (comm) ": the comm may hold spaces, so split
		# after its closing parenthesis. utime and stime are fields 14 and 15.
		read -r -a f <<<"${stat##*) }"
		total=$((total + f[11] + f[12]))
	done
	echo "$total"
}

# children PID prints the pids of PID's child processes.
children() {
	local f
	for f in /proc/"$1"/task/*/children; do
		[[ -r $f ]] && cat "$f"
	done 2>/dev/null | tr ' ' '\n' | grep . || ps -o pid= --ppid "$1" 2>/dev/null || true
}

declare -A PORT_OF=() METRICS_OF=() # target -> proxy port, operator port
declare -A CPU_PIDS=()              # target -> the pid(s) whose CPU is its cost
CLUSTER_OPS=()                      # operator ports of the cluster3+limits replicas
CLUSTER_PIDS=()                     # pids of the three cluster3+limits replicas
NGINX_PID=""                        # nginx's master; its workers are found at each run
# RESULTS holds one line per run:
#   L mode target round rps p50_us p99_us requests errors non2xx cpu_us cpu_all_us
#   C mode target round p50_us requests errors non2xx        (one connection)
RESULTS=""

# cost_pids TARGET prints the pids whose CPU is TARGET's cost; with "all",
# for cluster3+limits, the three replicas.
cost_pids() {
	local target=$1 all=${2:-}
	if [[ $target == nginx ]]; then
		echo "$NGINX_PID" $(children "$NGINX_PID")
	elif [[ $target == cluster3+limits && $all == all ]]; then
		echo "${CLUSTER_PIDS[@]}"
	else
		echo "${CPU_PIDS[$target]}"
	fi
}

# wrk_result FILE sets the variables rps p50 p99 requests errors non2xx from
# the BENCHRESULT line of wrk output FILE; it fails if there is none.
wrk_result() {
	local file=$1 field line
	rps="" p50="" p99="" requests="" errors=0 non2xx=0
	line=$(grep '^BENCHRESULT' "$file" || true)
	for field in $line; do
		case $field in
		rps=*) rps=${field#*=} ;;
		p50_us=*) p50=${field#*=} ;;
		p99_us=*) p99=${field#*=} ;;
		requests=*) requests=${field#*=} ;;
		errors=*) errors=${field#*=} ;;
		non2xx=*) non2xx=${field#*=} ;;
		esac
	done
	[[ -n $rps && -n $p50 && -n $p99 && -n $requests ]]
}

# bench TARGET MODE ROUND runs wrk under load against TARGET, measuring the
# CPU time of TARGET's processes, and appends its figures to RESULTS.
bench() {
	local target=$1 mode=$2 round=$3 url file rps p50 p99 requests errors non2xx
	local -a pids all_pids
	local t0 t1 a0 a1 cpu="-" cpu_all="-"
	file=$TMP/wrk-$target-$mode-$round.txt
	url="http://127.0.0.1:${PORT_OF[$target]}/v1/chat/completions"
	local -a wrk_args=(-t"$THREADS" -c"$CONNECTIONS" --timeout 10s -s "$BENCH/chat.lua" "$url" -- "$mode" "$USERS")
	if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
		run_wait /dev/null wrk -d"$WARMUP" "${wrk_args[@]}" || true
	fi
	log "round $round/$ROUNDS: wrk -c$CONNECTIONS $target $mode ($DURATION)"
	read -r -a pids <<<"$(cost_pids "$target")"
	read -r -a all_pids <<<"$(cost_pids "$target" all)"
	t0=$(proc_ticks "${pids[@]}")
	a0=$(proc_ticks "${all_pids[@]}")
	if ! run_wait "$file" wrk --latency -d"$DURATION" "${wrk_args[@]}"; then
		log "wrk failed for $target $mode:"
		cat "$file" >&2
		return 1
	fi
	t1=$(proc_ticks "${pids[@]}")
	a1=$(proc_ticks "${all_pids[@]}")
	if ! wrk_result "$file"; then
		log "no BENCHRESULT line in the wrk output for $target $mode:"
		cat "$file" >&2
		return 1
	fi
	if ((requests > 0)); then
		cpu=$(((t1 - t0) * 1000000 / CLK_TCK / requests))
		cpu_all=$(((a1 - a0) * 1000000 / CLK_TCK / requests))
	fi
	if ((errors + non2xx > 0)); then
		log "$target $mode: $errors socket errors, $non2xx non-2xx answers of $requests requests"
		grep -E 'Socket errors|Non-2xx' "$file" >&2 || true
	fi
	printf 'L %s %s %s %s %s %s %s %s %s %s %s\n' "$mode" "$target" "$round" "$rps" "$p50" "$p99" \
		"$requests" "$errors" "$non2xx" "$cpu" "$cpu_all" >>"$RESULTS"
}

# bench_c1 TARGET MODE ROUND runs wrk at one connection against TARGET and
# appends its p50 to RESULTS.
bench_c1() {
	local target=$1 mode=$2 round=$3 url file rps p50 p99 requests errors non2xx
	file=$TMP/wrk1-$target-$mode-$round.txt
	url="http://127.0.0.1:${PORT_OF[$target]}/v1/chat/completions"
	log "round $round/$ROUNDS: wrk -c1 $target $mode ($C1_DURATION)"
	if ! run_wait "$file" wrk --latency -t1 -c1 -d"$C1_DURATION" --timeout 10s -s "$BENCH/chat.lua" "$url" -- "$mode" "$USERS"; then
		log "wrk -c1 failed for $target $mode:"
		cat "$file" >&2
		return 1
	fi
	if ! wrk_result "$file"; then
		log "no BENCHRESULT line in the wrk -c1 output for $target $mode:"
		cat "$file" >&2
		return 1
	fi
	if ((errors + non2xx > 0)); then
		log "$target $mode (one connection): $errors socket errors, $non2xx non-2xx answers of $requests requests"
	fi
	printf 'C %s %s %s %s %s %s %s\n' "$mode" "$target" "$round" "$p50" "$requests" "$errors" "$non2xx" >>"$RESULTS"
}

# go_allocs GO runs the proxy's Go benchmarks with -benchmem into
# $TMP/allocs.txt (printed under the table by print_allocs).
go_allocs() {
	local go=$1
	log "go test -bench 'ProxyChat|ProxyStream|UpstreamDirect|SSEChunk' -benchmem ./proxy/"
	if ! run_wait "$TMP/allocs.txt" "$go" test -run '^$' -bench 'ProxyChat|ProxyStream|UpstreamDirect|SSEChunk' \
		-benchmem ./proxy/; then
		log "the proxy's Go benchmarks failed; output:"
		tail -n 20 "$TMP/allocs.txt" >&2
	fi
}

# print_allocs prints the Go benchmark lines and the gateway's own
# allocations per request (each proxy benchmark minus its direct twin: both
# count the test's client and upstream).
print_allocs() {
	[[ -s $TMP/allocs.txt ]] || return 0
	printf '\nAllocations (go test -run %s -bench %s -benchmem ./proxy/; client and upstream included):\n' \
		"'^\$'" "'ProxyChat|ProxyStream|UpstreamDirect|SSEChunk'"
	grep '^Benchmark' "$TMP/allocs.txt" || {
		echo "no benchmark lines (see the log above)"
		return 0
	}
	awk '
		/^Benchmark/ {
			name = $1; sub(/-[0-9]+$/, "", name)
			for (i = 2; i <= NF; i++) if ($i == "allocs/op") a[name] = $(i - 1)
		}
		function diff(x, y) { return (x in a) && (y in a) ? a[x] - a[y] : "-" }
		END {
			printf "gateway allocations per request: chat %s (ProxyChat - UpstreamDirect), stream %s (ProxyStream - UpstreamDirectStream); per SSE event %s (SSEChunk); goal: under 20 per request, 0 per event\n",
				diff("BenchmarkProxyChat", "BenchmarkUpstreamDirect"), diff("BenchmarkProxyStream", "BenchmarkUpstreamDirectStream"),
				("BenchmarkSSEChunk" in a) ? a["BenchmarkSSEChunk"] : "-"
		}' "$TMP/allocs.txt"
}

# print_tables prints the table of figures (markdown), then the goal checks.
print_tables() {
	local procs="default GOMAXPROCS, nginx worker_processes auto"
	[[ -n $GOMAXPROCS_SET ]] && procs="GOMAXPROCS=$GOMAXPROCS_SET, nginx worker_processes $GOMAXPROCS_SET"
	printf '\ngenai-gateway load benchmark: wrk %s threads, %s connections, %s per run (after %s warm-up); one-connection runs of %s; %s round(s)\n' \
		"$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" "$C1_DURATION" "$ROUNDS"
	printf '%s users, mockllm token latency %s, %s; %s CPUs, %s, load average %s before, %s after\n\n' \
		"$USERS" "$TOKEN_LATENCY" "$procs" "$(nproc)" "$(uname -sr)" "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
	[[ -s $RESULTS ]] || {
		echo "no results"
		return 0
	}
	awk -v modes="$MODES" -v targets="$TARGETS" -v rounds="$ROUNDS" '
		$1 == "L" {
			k = $2 SUBSEP $3; r = $4; seen[k] = 1
			RPS[k, r] = $5; P50[k, r] = $6; P99[k, r] = $7; ERR[k] += $9 + $10
			if ($11 != "-") CPU[k, r] = $11
			if ($12 != "-") CPUALL[k, r] = $12
		}
		$1 == "C" { k = $2 SUBSEP $3; C1[k, $4] = $5; ERR[k] += $7 + $8 }
		# stat returns the median (the lower middle one for an even count),
		# "min" or "max" of the space-separated numbers in s, "" if none.
		function stat(s, what,    a, n, i, j, t) {
			n = split(s, a, " ")
			if (n == 0) return ""
			for (i = 1; i <= n; i++) a[i] += 0
			for (i = 2; i <= n; i++)
				for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
			if (what == "min") return a[1]
			if (what == "max") return a[n]
			return a[int((n + 1) / 2)]
		}
		# show formats the median of s with fmt, and its range in brackets
		# when there is more than one value.
		function show(s, fmt,    n, a, lo, hi) {
			n = split(s, a, " ")
			if (n == 0) return "-"
			lo = stat(s, "min"); hi = stat(s, "max")
			if (n == 1 || sprintf(fmt, lo) == sprintf(fmt, hi)) return sprintf(fmt, stat(s))
			return sprintf(fmt " [" fmt ".." fmt "]", stat(s), lo, hi)
		}
		# per_round lists, over the rounds, f(target k, reference x) as
		# "ratio" (A[k]/A[x]) or "diff" (A[k]-A[x]) of array kind.
		function per_round(kind, op, k, x,    r, s, a, b) {
			s = ""
			for (r = 1; r <= rounds; r++) {
				if (kind == "rps") { if (!((k, r) in RPS) || !((x, r) in RPS)) continue; a = RPS[k, r]; b = RPS[x, r] }
				else if (kind == "cpu") { if (!((k, r) in CPU) || !((x, r) in CPU)) continue; a = CPU[k, r]; b = CPU[x, r] }
				else if (kind == "cpuall") { if (!((k, r) in CPUALL) || !((x, r) in CPU)) continue; a = CPUALL[k, r]; b = CPU[x, r] }
				else { if (!((k, r) in C1) || !((x, r) in C1)) continue; a = C1[k, r]; b = C1[x, r] }
				if (op == "ratio") { if (b + 0 == 0) continue; s = s " " a / b }
				else s = s " " a - b
			}
			return s
		}
		function list(A, k,    r, s) {
			s = ""
			for (r = 1; r <= rounds; r++) if ((k, r) in A) s = s " " A[k, r]
			return s
		}
		END {
			nm = split(modes, M, " "); nt = split(targets, T, " ")
			print "| mode | target | req/s | p50 ms | p99 ms | x nginx | CPU us/req | x nginx CPU/req | +p50 us at 1 conn | errors |"
			print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
			for (a = 1; a <= nm; a++) for (b = 1; b <= nt; b++) {
				k = M[a] SUBSEP T[b]; d = M[a] SUBSEP "direct"; x = M[a] SUBSEP "nginx"
				if (!(k in seen)) continue
				rs = list(RPS, k); med = stat(rs)
				for (r = 1; r <= rounds; r++) if ((k, r) in RPS && RPS[k, r] + 0 == med) break
				xn = (T[b] == "nginx") ? "1.00" : show(per_round("rps", "ratio", k, x), "%.2f")
				xc = (T[b] == "nginx") ? "1.00" : (T[b] == "direct") ? "-" : show(per_round("cpu", "ratio", k, x), "%.2f")
				if (T[b] == "direct") c1 = "p50 " show(list(C1, k), "%d")
				else c1 = show(per_round("c1", "diff", k, d), "%+d")
				printf "| %s | %s | %s | %.2f | %.2f | %s | %s | %s | %s | %d |\n", M[a],
					(T[b] == "direct") ? "direct (mockllm)" : T[b], show(rs, "%.0f"),
					P50[k, r] / 1000, P99[k, r] / 1000, xn, show(list(CPU, k), "%d"), xc, c1, ERR[k]
			}
			print ""
			print "req/s, CPU and ratios: median [range] over the rounds, ratios taken within each round; p50/p99 from the median round."
			print "CPU us/req: utime+stime of the proxy process(es) over the run / requests completed (nginx: master and workers;"
			print "direct: mockllm itself; cluster3+limits: the loaded replica). +p50 at 1 conn: wrk -t1 -c1, p50 minus direct mockllm p50."
			print ""
			print "Against the goal figures (issue 8; limits on = gateway+limits):"
			for (a = 1; a <= nm; a++) {
				g = M[a] SUBSEP "gateway+limits"; x = M[a] SUBSEP "nginx"; d = M[a] SUBSEP "direct"
				c = M[a] SUBSEP "cluster3+limits"
				if (!(g in seen) || !(x in seen)) { printf "%-6s gateway+limits or nginx missing\n", M[a]; continue }
				s = per_round("cpu", "ratio", g, x)
				printf "%-6s CPU/req %s x nginx (goal <= 1.10: %s)", M[a], show(s, "%.2f"), (s == "" ? "-" : (stat(s) <= 1.10 ? "met" : "missed"))
				s = per_round("rps", "ratio", g, x)
				printf "; req/s %s x nginx (goal %s)", show(s, "%.2f"), (M[a] == "stream" ? ">= 1.00: " (stat(s) >= 1.0 ? "met" : "missed") : "as close to 1.00 as the stack allows")
				s = per_round("c1", "diff", g, d); n = per_round("c1", "diff", x, d)
				if (s != "" && n != "")
					printf "; +p50 at 1 conn %+d us vs nginx %+d us (goal <= nginx + 25: %s)", stat(s), stat(n), (stat(s) <= stat(n) + 25 ? "met" : "missed")
				printf "\n"
				f = M[a] SUBSEP "fasthttp"
				if (f in seen) {
					s = per_round("cpu", "ratio", f, x)
					printf "%-6s floor of the stack (bench/fasthttpproxy, no gateway logic): CPU/req %s x nginx", M[a], show(s, "%.2f")
					s = per_round("cpu", "diff", g, f)
					printf "; gateway+limits adds %s us/req of its own work over it\n", show(s, "%+d")
				}
				if (c in seen) {
					s = per_round("rps", "ratio", c, g)
					printf "%-6s cluster3+limits req/s %s x gateway+limits (goal >= 0.90: %s); CPU of all three replicas %s us/req\n", M[a],
						show(s, "%.2f"), (s == "" ? "-" : (stat(s) >= 0.90 ? "met" : "missed")), show(list(CPUALL, c), "%d")
				}
			}
		}' "$RESULTS"
}

# report_usage logs what the gateway+limits replica counted for one bench
# user, showing that its limits were applied (admitted and settled).
report_usage() {
	local port=${METRICS_OF[gateway+limits]:-} out
	[[ -n $port && -n ${PORT_OF[gateway+limits]:-} ]] || return 0
	if out=$(curl -fsS -m 5 "http://127.0.0.1:$port/usage?user=bench-user-1" 2>&1); then
		log "gateway+limits /usage?user=bench-user-1: $out"
	else
		log "gateway+limits /usage failed: $out"
	fi
	# The cluster's third replica took no traffic: what it reports came by gossip.
	if [[ -n ${PORT_OF[cluster3+limits]:-} && ${#CLUSTER_OPS[@]} == 3 ]]; then
		for port in "${CLUSTER_OPS[0]}" "${CLUSTER_OPS[2]}"; do
			out=$(curl -fsS -m 5 "http://127.0.0.1:$port/usage?user=bench-user-1" 2>&1) || true
			log "cluster3+limits replica on :$port /usage?user=bench-user-1: $out"
		done
	fi
}

main() {
	cd "$ROOT"
	local go=${GO:-} missing=0
	if [[ -z $go ]]; then
		go=$(command -v go || echo /usr/local/go/bin/go)
	fi
	[[ -x $go ]] || {
		log "missing: go (set GO=/path/to/go)"
		missing=1
	}
	need_tool wrk wrk || missing=1
	need_tool curl curl || missing=1
	((!missing)) || die "install what is missing above, then run again"

	local targets=" $TARGETS "
	mkdir -p "$TMP/bin"
	log "building mockllm"
	run_wait "$TMP/mockllm-build.log" "$go" build -o "$TMP/bin/mockllm" ./cmd/mockllm || {
		cat "$TMP/mockllm-build.log" >&2
		die "mockllm does not build"
	}
	if [[ $targets == *" gateway"* ]]; then
		log "building genai-gateway"
		if ! run_wait "$TMP/gateway-build.log" "$go" build -o "$TMP/bin/genai-gateway" ./cmd/genai-gateway; then
			log "genai-gateway does not build; benchmarking direct and nginx only. Build output:"
			head -n 20 "$TMP/gateway-build.log" >&2
			targets=${targets// gateway+limits / }
			targets=${targets// gateway / }
			targets=${targets// cluster3+limits / }
		fi
	fi
	if [[ $targets == *" nginx "* ]] && ! need_tool nginx nginx; then
		log "skipping the nginx target: no baseline, so the x nginx columns stay empty"
		targets=${targets// nginx / }
	fi
	# The Go benchmarks run before any server starts, so they do not
	# compete with the load runs for the CPUs.
	[[ $ALLOCS == 1 ]] && go_allocs "$go"

	local -a genv=()
	[[ -n $GOMAXPROCS_SET ]] && genv=(env "GOMAXPROCS=$GOMAXPROCS_SET")

	# direct: mockllm itself.
	local pid MOCK_PORT PORT METRICS_PORT
	free_port MOCK_PORT
	start mockllm "$TMP/mockllm.log" "$TMP/bin/mockllm" --addr "127.0.0.1:$MOCK_PORT" --token-latency "$TOKEN_LATENCY"
	pid=$LAST_PID
	wait_port mockllm "$pid" "$MOCK_PORT" || {
		cat "$TMP/mockllm.log" >&2
		die "mockllm did not start"
	}
	check_chat mockllm "$MOCK_PORT" || die "mockllm answers wrongly"
	PORT_OF[direct]=$MOCK_PORT
	CPU_PIDS[direct]=$pid

	if [[ $targets == *" nginx "* ]]; then
		local prefix=$TMP/nginx user_directive="" workers=${GOMAXPROCS_SET:-auto}
		mkdir -p "$prefix"
		free_port PORT
		# As root, nginx workers would drop to nobody and lose access to the
		# private temporary directory; keep them root.
		[[ $(id -u) == 0 ]] && user_directive="user root root;"
		sed -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$PORT|g" -e "s|@UPSTREAM_PORT@|$MOCK_PORT|g" \
			-e "s|@USER_DIRECTIVE@|$user_directive|g" -e "s|@WORKERS@|$workers|g" \
			"$BENCH/nginx.conf.tmpl" >"$prefix/nginx.conf"
		start nginx "$TMP/nginx.log" nginx -p "$prefix" -c "$prefix/nginx.conf" -g 'daemon off;'
		pid=$LAST_PID
		if wait_port nginx "$pid" "$PORT" && check_chat nginx "$PORT"; then
			PORT_OF[nginx]=$PORT
			NGINX_PID=$pid
			log "nginx workers: $(children "$pid" | tr '\n' ' ')"
		else
			cat "$TMP/nginx.log" "$prefix/error.log" >&2 2>/dev/null || true
			log "skipping the nginx target"
		fi
	fi

	if [[ $targets == *" fasthttp "* ]]; then
		if run_wait "$TMP/fasthttp-build.log" "$go" build -o "$TMP/bin/fasthttpproxy" ./bench/fasthttpproxy; then
			free_port PORT
			start fasthttp "$TMP/fasthttp.log" "${genv[@]}" "$TMP/bin/fasthttpproxy" --addr "127.0.0.1:$PORT" --upstream "127.0.0.1:$MOCK_PORT"
			pid=$LAST_PID
			if wait_port fasthttp "$pid" "$PORT" && check_chat fasthttp "$PORT"; then
				PORT_OF[fasthttp]=$PORT
				CPU_PIDS[fasthttp]=$pid
			else
				tail -n 20 "$TMP/fasthttp.log" >&2 || true
				log "skipping the fasthttp target"
			fi
		else
			head -n 20 "$TMP/fasthttp-build.log" >&2
			log "bench/fasthttpproxy does not build; skipping the fasthttp target"
		fi
	fi

	local target limits
	for target in gateway gateway+limits; do
		[[ $targets == *" $target "* ]] || continue
		limits=0
		[[ $target == gateway+limits ]] && limits=1
		free_port PORT
		free_port METRICS_PORT
		write_gateway_config "$TMP/$target.yaml" "$limits" "$PORT" "$METRICS_PORT" "$MOCK_PORT"
		start "$target" "$TMP/$target.log" "${genv[@]}" "$TMP/bin/genai-gateway" --config "$TMP/$target.yaml"
		pid=$LAST_PID
		if wait_port "$target" "$pid" "$PORT" && wait_ready "http://127.0.0.1:$PORT/readyz" &&
			check_chat "$target" "$PORT"; then
			PORT_OF[$target]=$PORT
			METRICS_OF[$target]=$METRICS_PORT
			CPU_PIDS[$target]=$pid
		else
			tail -n 20 "$TMP/$target.log" >&2 || true
			log "skipping the $target target"
		fi
	done

	if [[ $targets == *" cluster3+limits "* ]]; then
		local i ok=1 gossip=() gports=() mports=() cpids=() join key
		# The replicas refuse to gossip in plaintext: a new key per run, in
		# the configs in the private temporary directory only.
		key=$(head -c32 /dev/urandom | base64)
		for i in 0 1 2; do
			free_port PORT
			gossip+=("$PORT")
			free_port PORT
			gports+=("$PORT")
			free_port PORT
			mports+=("$PORT")
		done
		for i in 0 1 2; do
			join="[\"127.0.0.1:${gossip[$(((i + 1) % 3))]}\", \"127.0.0.1:${gossip[$(((i + 2) % 3))]}\"]"
			write_gateway_config "$TMP/cluster3-$i.yaml" 1 "${gports[$i]}" "${mports[$i]}" "$MOCK_PORT" \
				"$(printf 'cluster:\n  enabled: true\n  node_name: bench-%d\n  bind: "127.0.0.1:%d"\n  join: %s\n  secret_key: "%s"\n  gossip_interval: 100ms' \
					"$i" "${gossip[$i]}" "$join" "$key")"
			start "cluster3-$i" "$TMP/cluster3-$i.log" "${genv[@]}" "$TMP/bin/genai-gateway" --config "$TMP/cluster3-$i.yaml"
			cpids+=("$LAST_PID")
		done
		for i in 0 1 2; do
			wait_port "cluster3-$i" "${cpids[$i]}" "${gports[$i]}" && wait_ready "http://127.0.0.1:${gports[$i]}/readyz" || ok=0
		done
		if ((ok)) && check_chat cluster3+limits "${gports[0]}"; then
			PORT_OF[cluster3+limits]=${gports[0]}
			METRICS_OF[cluster3+limits]=${mports[0]}
			CPU_PIDS[cluster3+limits]=${cpids[0]}
			CLUSTER_OPS=("${mports[@]}")
			CLUSTER_PIDS=("${cpids[@]}")
		else
			tail -n 20 "$TMP"/cluster3-*.log >&2 || true
			log "skipping the cluster3+limits target"
		fi
	fi

	local mode round
	RESULTS=$TMP/results.txt
	: >"$RESULTS"
	LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
	for ((round = 1; round <= ROUNDS; round++)); do
		for mode in $MODES; do
			for target in $TARGETS; do
				[[ -n ${PORT_OF[$target]:-} ]] || continue
				bench "$target" "$mode" "$round" || log "no figures for $target $mode"
			done
		done
		[[ $C1_DURATION == 0 || $C1_DURATION == 0s ]] && continue
		for mode in $MODES; do
			for target in $TARGETS; do
				[[ -n ${PORT_OF[$target]:-} ]] || continue
				bench_c1 "$target" "$mode" "$round" || log "no one-connection figures for $target $mode"
			done
		done
	done
	report_usage
	print_tables
	print_allocs
}

main "$@"
