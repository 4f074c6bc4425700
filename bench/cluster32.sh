#!/usr/bin/env bash
# cluster32.sh: issue 14's process-level check, run by `make bench-cluster32`.
#
# Starts mockllm and N (default 32) genai-gateway processes on 127.0.0.1,
# joined in one encrypted cluster with a requests limit on (a calendar day,
# so the count is exact, and so large nothing is refused). Then, under load
# (wrk against a few replicas, one user), restarts every replica in turn
# (SIGTERM, drain, start again with the same config and node name, wait for
# /readyz). When the load ends it checks, on every replica:
#   - /cluster: every replica sees all N members alive;
#   - /usage?user=U: used == the requests the replicas admitted and charged,
#     summed from their access logs across restarts (no count lost by any
#     restart, none counted twice); the 200s clients got are printed beside.
# and prints the figures, the time the restarts took and how long the last
# replica took to agree. Exit status 0 when both hold.
#
# Environment (defaults in brackets):
#   C32_REPLICAS [32]   replicas
#   C32_TARGETS [4]     replicas wrk loads (the first ones), one wrk each
#   C32_CONNECTIONS [2] wrk connections per target
#   C32_SETTLE [60]     seconds to wait for every replica to agree at the end
#   GO [go on PATH, else /usr/local/go/bin/go]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${C32_REPLICAS:-32}
TARGETS=${C32_TARGETS:-4}
CONNS=${C32_CONNECTIONS:-2}
SETTLE=${C32_SETTLE:-60}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
TMP=$(mktemp -d)
USER_NAME=bench-user-1 # chat.lua with one user
declare -a PIDS=() PORTS=() MPORTS=() GPORTS=() WRKS=()

log() { printf '[cluster32] %s\n' "$*" >&2; }

cleanup() {
	for p in "${WRKS[@]}" "${PIDS[@]}" "${MOCK_PID:-}"; do
		[[ -n $p ]] && kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

command -v wrk >/dev/null || die=1
command -v curl >/dev/null || die=1
if [[ -n ${die:-} ]]; then
	log "needs wrk and curl (Debian: apt-get install -y wrk curl)"
	exit 1
fi

# Ports: 4*N+1 distinct free ones, chosen once.
mapfile -t FREE < <(python3 - "$((3 * N + 1))" <<'EOF'
import socket, sys
n, socks, ports = int(sys.argv[1]), [], []
while len(ports) < n:
    s = socket.socket(); s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        s.close(); continue
    socks += [s, u]; ports.append(p)
print("\n".join(map(str, ports)))
EOF
)
MOCK_PORT=${FREE[0]}
for ((i = 0; i < N; i++)); do
	PORTS[i]=${FREE[1 + 3 * i]}
	MPORTS[i]=${FREE[2 + 3 * i]}
	GPORTS[i]=${FREE[3 + 3 * i]}
done

log "building"
(cd "$ROOT" && "$GO" build -o "$TMP/genai-gateway" ./cmd/genai-gateway && "$GO" build -o "$TMP/mockllm" ./cmd/mockllm)
"$TMP/mockllm" --addr "127.0.0.1:$MOCK_PORT" >"$TMP/mockllm.log" 2>&1 &
MOCK_PID=$!

KEY=$(head -c32 /dev/urandom | base64)
JOIN="[\"127.0.0.1:${GPORTS[0]}\", \"127.0.0.1:${GPORTS[1]}\", \"127.0.0.1:${GPORTS[2]}\"]"
for ((i = 0; i < N; i++)); do
	cat >"$TMP/r$i.yaml" <<EOF
listen: "127.0.0.1:${PORTS[i]}"
metrics_listen: "127.0.0.1:${MPORTS[i]}"
log: {level: info, format: json} # the access log counts what each replica admitted
drain_timeout: 10s
upstreams:
  - {name: mock, url: "http://127.0.0.1:$MOCK_PORT", timeout: 30s}
rate_limit:
  enabled: true
  user_header: user
  limits:
    - {name: day-requests, metric: requests, limit: 1000000000, window: calendar_day}
cluster:
  enabled: true
  node_name: c32-$i
  bind: "127.0.0.1:${GPORTS[i]}"
  join: $JOIN
  secret_key: "$KEY"
  gossip_interval: 100ms
EOF
done

start() { # start I
	"$TMP/genai-gateway" --config "$TMP/r$1.yaml" >>"$TMP/r$1.log" 2>&1 &
	PIDS[$1]=$!
}
ready() { # ready I: waits up to 60 s for /readyz
	local deadline=$((SECONDS + 60))
	until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:${PORTS[$1]}/readyz" 2>/dev/null; do
		if ((SECONDS > deadline)); then
			log "replica $1 not ready after 60 s:"
			tail -n 20 "$TMP/r$1.log" >&2
			return 1
		fi
		sleep 0.2
	done
}

log "starting $N replicas"
for ((i = 0; i < N; i++)); do start "$i"; done
for ((i = 0; i < N; i++)); do ready "$i"; done
log "all $N ready"

# Load: one wrk per target, one user, long enough to cover the restarts.
DURATION=$((N * 4 + 30))
for ((i = 0; i < TARGETS; i++)); do
	wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 10s -s "$ROOT/bench/chat.lua" \
		"http://127.0.0.1:${PORTS[i]}/v1/chat/completions" -- chat 1 >"$TMP/wrk$i.out" 2>&1 &
	WRKS[i]=$!
done
sleep 5

log "rolling restart of all $N replicas under load"
T0=$SECONDS
for ((i = N - 1; i >= 0; i--)); do
	kill -TERM "${PIDS[i]}"
	wait "${PIDS[i]}" 2>/dev/null || true
	start "$i"
	ready "$i"
done
RESTART_S=$((SECONDS - T0))
log "restarted all $N in ${RESTART_S} s; waiting for the load to end"
for p in "${WRKS[@]}"; do wait "$p" || true; done
WRKS=()

OK=0 REQ=0 NON2XX=0 ERRS=0
for ((i = 0; i < TARGETS; i++)); do
	line=$(grep BENCHRESULT "$TMP/wrk$i.out" || true)
	[[ -n $line ]] || { log "no wrk result for target $i"; cat "$TMP/wrk$i.out" >&2; exit 1; }
	r=$(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$line")
	s=$(sed -E 's/.* non2xx=([0-9]+).*/\1/' <<<"$line")
	e=$(sed -E 's/.* errors=([0-9]+).*/\1/' <<<"$line")
	REQ=$((REQ + r)) NON2XX=$((NON2XX + s)) ERRS=$((ERRS + e))
done
OK=$((REQ - NON2XX))
log "clients: $REQ responses, $OK of them 200, $NON2XX other statuses, $ERRS socket errors (replicas going away)"
# What the replicas admitted and charged, from their own access logs (kept
# across restarts): every metered request of the user except those released
# (a 5xx or 429 is not charged).
ADMITTED=$(cat "$TMP"/r*.log | python3 -c '
import json, sys
n = 0
for line in sys.stdin:
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("message") == "request" and d.get("user") == sys.argv[1] and d.get("path") == "/v1/chat/completions":
        st = int(d.get("status", 0))
        if st < 500 and st != 429:
            n += 1
print(n)' "$USER_NAME")
log "replicas: $ADMITTED requests admitted and charged (access logs); clients saw $OK of them answered 200"
OK=$ADMITTED

# Agreement: every replica sees N alive and counts exactly OK.
T1=$SECONDS
while :; do
	bad=0 worst=""
	for ((i = 0; i < N; i++)); do
		used=$(curl -fsS -m 2 "http://127.0.0.1:${MPORTS[i]}/usage?user=$USER_NAME" |
			python3 -c 'import json,sys; d=json.load(sys.stdin); print(int(d["limits"][0]["used"]))' 2>/dev/null || echo -1)
		alive=$(curl -fsS -m 2 "http://127.0.0.1:${MPORTS[i]}/cluster" |
			python3 -c 'import json,sys; d=json.load(sys.stdin); m=d.get("members",[]); print(sum(1 for x in m if x.get("state")=="alive"))' 2>/dev/null || echo -1)
		if [[ $used != "$OK" || $alive != "$N" ]]; then
			bad=$((bad + 1)) worst="replica $i: used $used, alive $alive"
		fi
	done
	if ((bad == 0)); then
		log "every replica: used = $OK = the requests admitted, $N members alive ($((SECONDS - T1)) s after the load ended)"
		printf 'cluster32: replicas=%d restarted_in_s=%d ok_requests=%d agreed_after_s=%d lost=0 result=pass\n' \
			"$N" "$RESTART_S" "$OK" "$((SECONDS - T1))"
		exit 0
	fi
	if ((SECONDS - T1 > SETTLE)); then
		log "after ${SETTLE} s, $bad replicas disagree (e.g. $worst; want used $OK, alive $N)"
		printf 'cluster32: replicas=%d restarted_in_s=%d ok_requests=%d disagreeing=%d result=fail\n' \
			"$N" "$RESTART_S" "$OK" "$bad"
		exit 1
	fi
	sleep 1
done
