#!/usr/bin/env bash
# loadbench.sh: load benchmark of genai-gateway (run by `make bench`).
#
# Builds ./cmd/mockllm and ./cmd/genai-gateway, starts on 127.0.0.1 (free
# ports, temporary directory):
#   direct          mockllm, the fake upstream (the baseline)
#   nginx           nginx reverse proxy to mockllm (bench/nginx.conf.tmpl)
#   gateway         genai-gateway to mockllm, rate limiting off
#   gateway+limits  genai-gateway with rate limiting on (limits so large that
#                   nothing is refused; users rotate through the `user` header)
#   cluster3+limits the same limits on three genai-gateway replicas joined in a
#                   cluster; wrk loads the first, which gossips every change
# then, for non-streaming ("chat") and streaming ("stream") chat completions,
# runs wrk against each (bench/chat.lua) after a short warm-up and prints a
# table of req/s, p50 and p99, then the gateway/nginx throughput ratio and the
# latency each proxy adds over direct mockllm. Everything it started is
# stopped on exit. If the gateway does not build, it says so and benches
# direct and nginx only; likewise without nginx.
#
# Usage: bench/loadbench.sh
# Environment (defaults in brackets):
#   BENCH_DURATION [10s]       wrk duration of each measured run
#   BENCH_WARMUP [2s]          wrk warm-up before each run; 0 skips it
#   BENCH_CONNECTIONS [32]     wrk connections
#   BENCH_THREADS [2]          wrk threads
#   BENCH_USERS [100]          distinct `user` header values
#   BENCH_MODES ["chat stream"]
#   BENCH_TARGETS ["direct nginx gateway gateway+limits cluster3+limits"]
#   BENCH_TOKEN_LATENCY [0s]   mockllm --token-latency
#   BENCH_ROUNDS [1]           repeat the whole matrix; the median run is shown
#   BENCH_KEEP [0]             1 keeps the temporary directory (logs, raw wrk output)
#   GO [go on PATH, else /usr/local/go/bin/go]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
readonly BENCH=$ROOT/bench
readonly DURATION=${BENCH_DURATION:-10s}
readonly WARMUP=${BENCH_WARMUP:-2s}
readonly CONNECTIONS=${BENCH_CONNECTIONS:-32}
readonly THREADS=${BENCH_THREADS:-2}
readonly USERS=${BENCH_USERS:-100}
readonly MODES=${BENCH_MODES:-chat stream}
readonly TARGETS=${BENCH_TARGETS:-direct nginx gateway gateway+limits cluster3+limits}
readonly TOKEN_LATENCY=${BENCH_TOKEN_LATENCY:-0s}
readonly KEEP=${BENCH_KEEP:-0}
readonly ROUNDS=${BENCH_ROUNDS:-1}
readonly START_TIMEOUT=60 # seconds a server may take to listen

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

# need_tool CMD APT_PACKAGE makes sure CMD exists, installing the Debian
# package when running as root. It fails when CMD stays missing.
need_tool() {
	local cmd=$1 pkg=$2
	command -v "$cmd" >/dev/null && return 0
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		log "$cmd not found; apt-get install -y $pkg"
		apt-get install -y "$pkg" >"$TMP/apt-$pkg.log" 2>&1 || true
	fi
	command -v "$cmd" >/dev/null
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

declare -A PORT_OF=() METRICS_OF=() # target -> proxy port, operator port
CLUSTER_OPS=()                        # operator ports of the cluster3+limits replicas
RESULTS="" # file of "mode target rps p50_us p99_us errors" lines, one per run

# bench TARGET MODE ROUND runs wrk against TARGET and appends its figures
# to RESULTS.
bench() {
	local target=$1 mode=$2 round=$3 url file line rps="" p50="" p99="" errors=0 field
	file=$TMP/wrk-$target-$mode-$round.txt
	url="http://127.0.0.1:${PORT_OF[$target]}/v1/chat/completions"
	local -a wrk_args=(-t"$THREADS" -c"$CONNECTIONS" --timeout 10s -s "$BENCH/chat.lua" "$url" -- "$mode" "$USERS")
	if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
		run_wait /dev/null wrk -d"$WARMUP" "${wrk_args[@]}" || true
	fi
	log "round $round/$ROUNDS: wrk $target $mode ($DURATION)"
	if ! run_wait "$file" wrk --latency -d"$DURATION" "${wrk_args[@]}"; then
		log "wrk failed for $target $mode:"
		cat "$file" >&2
		return 1
	fi
	line=$(grep '^BENCHRESULT' "$file" || true)
	for field in $line; do
		case $field in
		rps=*) rps=${field#*=} ;;
		p50_us=*) p50=${field#*=} ;;
		p99_us=*) p99=${field#*=} ;;
		errors=* | non2xx=*) errors=$((errors + ${field#*=})) ;;
		esac
	done
	if [[ -z $rps || -z $p50 || -z $p99 ]]; then
		log "no BENCHRESULT line in the wrk output for $target $mode:"
		cat "$file" >&2
		return 1
	fi
	printf '%s %s %s %s %s %s\n' "$mode" "$target" "$rps" "$p50" "$p99" "$errors" >>"$RESULTS"
}

# print_tables prints, per mode and target, the run with the median req/s
# (errors summed over all runs), then each proxy's overhead: throughput
# relative to nginx and to direct mockllm, latency added over direct mockllm.
print_tables() {
	printf '\ngenai-gateway load benchmark: wrk %s threads, %s connections, %s per run (after %s warm-up), %s round(s)\n' \
		"$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" "$ROUNDS"
	printf '%s users, mockllm token latency %s, %s CPUs, %s, load average %s before, %s after\n\n' \
		"$USERS" "$TOKEN_LATENCY" "$(nproc)" "$(uname -sr)" "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
	[[ -s $RESULTS ]] || {
		echo "no results"
		return 0
	}
	awk -v modes="$MODES" -v targets="$TARGETS" '
		{
			k = $1 SUBSEP $2; i = ++n[k]
			rps[k, i] = $3; p50[k, i] = $4 / 1000; p99[k, i] = $5 / 1000; errs[k] += $6
		}
		# median returns the index of the run with the median req/s of key k
		# (the lower one of the two middle runs for an even count).
		function median(k,    i, j, t, idx) {
			for (i = 1; i <= n[k]; i++) idx[i] = i
			for (i = 2; i <= n[k]; i++)
				for (j = i; j > 1 && rps[k, idx[j - 1]] > rps[k, idx[j]]; j--) {
					t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t
				}
			return idx[int((n[k] + 1) / 2)]
		}
		function ratio(a, b) { return b == "" || b == 0 ? "-" : sprintf("%.2f", a / b) }
		function delta(a, b) { return b == "" ? "-" : sprintf("%+.2f", a - b) }
		END {
			nm = split(modes, M, " "); nt = split(targets, T, " ")
			for (a = 1; a <= nm; a++) for (b = 1; b <= nt; b++) {
				k = M[a] SUBSEP T[b]
				if (!(k in n)) continue
				i = median(k)
				R[k] = rps[k, i]; P50[k] = p50[k, i]; P99[k] = p99[k, i]
			}
			printf "%-7s %-15s %10s %9s %9s %7s %5s\n", "mode", "target", "req/s", "p50_ms", "p99_ms", "errors", "runs"
			for (a = 1; a <= nm; a++) for (b = 1; b <= nt; b++) {
				k = M[a] SUBSEP T[b]
				if (!(k in R)) continue
				printf "%-7s %-15s %10.1f %9.2f %9.2f %7d %5d\n", M[a], T[b], R[k], P50[k], P99[k], errs[k], n[k]
			}
			printf "\nOverhead: throughput relative to nginx, direct mockllm and the single gateway; latency added over direct mockllm.\n"
			printf "%-7s %-15s %10s %10s %10s %9s %9s\n", "mode", "target", "x_nginx", "x_direct", "x_gateway", "+p50_ms", "+p99_ms"
			for (a = 1; a <= nm; a++) for (b = 1; b <= nt; b++) {
				k = M[a] SUBSEP T[b]; d = M[a] SUBSEP "direct"; x = M[a] SUBSEP "nginx"; g = M[a] SUBSEP "gateway"
				if (T[b] == "direct" || !(k in R)) continue
				printf "%-7s %-15s %10s %10s %10s %9s %9s\n", M[a], T[b], ratio(R[k], R[x]), ratio(R[k], R[d]), ratio(R[k], R[g]),
					(d in R) ? delta(P50[k], P50[d]) : "-", (d in R) ? delta(P99[k], P99[d]) : "-"
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
	local go=${GO:-}
	if [[ -z $go ]]; then
		go=$(command -v go || echo /usr/local/go/bin/go)
	fi
	[[ -x $go ]] || die "go not found (set GO=/path/to/go)"
	need_tool wrk wrk || die "wrk not found (apt-get install -y wrk)"
	need_tool curl curl || die "curl not found"

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
		fi
	fi
	if [[ $targets == *" nginx "* ]] && ! need_tool nginx nginx-light; then
		log "nginx not found and not installable; skipping the nginx target"
		targets=${targets// nginx / }
	fi

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

	if [[ $targets == *" nginx "* ]]; then
		local prefix=$TMP/nginx user_directive=""
		mkdir -p "$prefix"
		free_port PORT
		# As root, nginx workers would drop to nobody and lose access to the
		# private temporary directory; keep them root.
		[[ $(id -u) == 0 ]] && user_directive="user root root;"
		sed -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$PORT|g" -e "s|@UPSTREAM_PORT@|$MOCK_PORT|g" \
			-e "s|@USER_DIRECTIVE@|$user_directive|g" "$BENCH/nginx.conf.tmpl" >"$prefix/nginx.conf"
		start nginx "$TMP/nginx.log" nginx -p "$prefix" -c "$prefix/nginx.conf" -g 'daemon off;'
		pid=$LAST_PID
		if wait_port nginx "$pid" "$PORT" && check_chat nginx "$PORT"; then
			PORT_OF[nginx]=$PORT
		else
			cat "$TMP/nginx.log" "$prefix/error.log" >&2 2>/dev/null || true
			log "skipping the nginx target"
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
		start "$target" "$TMP/$target.log" "$TMP/bin/genai-gateway" --config "$TMP/$target.yaml"
		pid=$LAST_PID
		if wait_port "$target" "$pid" "$PORT" && wait_ready "http://127.0.0.1:$PORT/readyz" &&
			check_chat "$target" "$PORT"; then
			PORT_OF[$target]=$PORT
			METRICS_OF[$target]=$METRICS_PORT
		else
			tail -n 20 "$TMP/$target.log" >&2 || true
			log "skipping the $target target"
		fi
	done

	if [[ $targets == *" cluster3+limits "* ]]; then
		local i ok=1 gossip=() gports=() mports=() cpids=() join
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
				"$(printf 'cluster:\n  enabled: true\n  node_name: bench-%d\n  bind: "127.0.0.1:%d"\n  join: %s\n  gossip_interval: 100ms' \
					"$i" "${gossip[$i]}" "$join")"
			start "cluster3-$i" "$TMP/cluster3-$i.log" "$TMP/bin/genai-gateway" --config "$TMP/cluster3-$i.yaml"
			cpids+=("$LAST_PID")
		done
		for i in 0 1 2; do
			wait_port "cluster3-$i" "${cpids[$i]}" "${gports[$i]}" && wait_ready "http://127.0.0.1:${gports[$i]}/readyz" || ok=0
		done
		if ((ok)) && check_chat cluster3+limits "${gports[0]}"; then
			PORT_OF[cluster3+limits]=${gports[0]}
			METRICS_OF[cluster3+limits]=${mports[0]}
			CLUSTER_OPS=("${mports[@]}")
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
	done
	report_usage
	print_tables
}

main "$@"
