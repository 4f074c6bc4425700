#!/usr/bin/env bash
# `make demo`: a three-replica genai-gateway cluster on this machine, no Docker needed.
#
#   mockllm   127.0.0.1:8000          the mock OpenAI-compatible upstream
#   demo-1    proxy :8081  operator :9091  gossip :7947   (deploy/examples/demo-cluster-1.yaml)
#   demo-2    proxy :8082  operator :9092  gossip :7948   (deploy/examples/demo-cluster-2.yaml)
#   demo-3    proxy :8083  operator :9093  gossip :7949   (deploy/examples/demo-cluster-3.yaml)
#
# It makes two gateway API keys with `genai-gateway keygen`, alice's and bob's, and runs each
# replica with its example file plus an auth.keys section holding the keys' SHA-256. Every key's
# user may spend 100 tokens a minute. alice's key sends through demo-1 until her budget is gone,
# bob's through demo-2; then alice's key tries demo-3, which it never used, and gets a 429: the
# limit holds cluster-wide, and no user header lets her key spend as someone else. A key the
# replicas do not hold, or none, gets a 401. Everything keeps running until Ctrl-C, which stops
# it all.
#
# Environment:
#   GENAI_GATEWAY_BIN_DIR  use the binaries in this directory instead of building bin/
#   DEMO_WAIT=0            exit after the demo instead of waiting for Ctrl-C (tests, CI)
#   GOSSIP_KEY             the replicas' gossip key (base64 of 32 bytes); default: a new one per run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXAMPLES="$ROOT/deploy/examples"
MOCK_ADDR="127.0.0.1:8000"
PROXY_PORTS=(8081 8082 8083)
OPERATOR_PORTS=(9091 9092 9093)
GOSSIP_PORTS=(7947 7948 7949)
LIMIT=100
MODEL="gpt-4o-mini"
PROMPT="Explain in one line why gossip protocols scale"

bold() { if [ -t 1 ]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
step() { echo; bold "==> $*"; }
die() { echo "demo: $*" >&2; exit 1; }

command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"

# --- binaries ---------------------------------------------------------------------------
if [ -n "${GENAI_GATEWAY_BIN_DIR:-}" ]; then
  BIN="$GENAI_GATEWAY_BIN_DIR"
else
  BIN="$ROOT/bin"
  step "building bin/genai-gateway and bin/mockllm"
  if command -v make >/dev/null 2>&1; then
    make --no-print-directory build >/dev/null
  else
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/ ./cmd/...
  fi
fi
[ -x "$BIN/genai-gateway" ] || die "$BIN/genai-gateway is missing"
[ -x "$BIN/mockllm" ] || die "$BIN/mockllm is missing"

# --- gossip key: a new one per run ------------------------------------------------------
# The replicas refuse to gossip without a key: anyone who can send a UDP packet to an open
# gossip port could forge any user's counters. The example files read it as ${GOSSIP_KEY}.
if [ -z "${GOSSIP_KEY:-}" ]; then
  if command -v openssl >/dev/null 2>&1; then
    GOSSIP_KEY="$(openssl rand -base64 32)"
  else
    GOSSIP_KEY="$(head -c32 /dev/urandom | base64)"
  fi
fi
export GOSSIP_KEY

# --- ports must be free -----------------------------------------------------------------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in 8000 "${PROXY_PORTS[@]}" "${OPERATOR_PORTS[@]}" "${GOSSIP_PORTS[@]}"; do
  if port_busy "$p"; then die "port $p on 127.0.0.1 is in use; stop what listens there and retry"; fi
done

# --- processes, stopped on exit, Ctrl-C or TERM -------------------------------------------
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/genai-gateway-demo.XXXXXX")"
PIDS=()
# stop PID: SIGTERM, then up to 10 s for a graceful exit (drain, leave the cluster), then SIGKILL.
stop() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
# On exit the replicas leave one at a time, newest first, as in a rolling shutdown; mockllm last.
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    echo
    bold "==> stopping ${#PIDS[@]} processes (logs stay in $LOGS)"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop "${PIDS[i]}"; done
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Job control puts each process in its own process group, so Ctrl-C in the terminal reaches
# this script only, and cleanup stops the processes in order.
set -m

# --- two gateway keys, and the replicas' files with their hashes ------------------------------
# keygen prints a key (shown once: the gateway keeps only its SHA-256) and the auth.keys entry to
# paste into the config file. The demo pastes the entries after each example file and checks
# the result as an operator would, with check-config.
step "making two gateway API keys with genai-gateway keygen"
AUTH="$LOGS/auth.yaml"
printf 'auth:\n  keys:\n' >"$AUTH"
# newkey NAME: prints the key and appends its entry to $AUTH.
newkey() {
  local out
  out="$("$BIN/genai-gateway" keygen --name "$1")" || die "keygen --name $1 failed"
  printf '%s\n' "$out" | sed -n '/^# Add this entry/,$p' | sed '1d; /^$/d; s/^/    /' >>"$AUTH"
  printf '%s\n' "$out" | grep '^ggw_' || die "keygen printed no key"
}
ALICE_KEY="$(newkey alice)"
BOB_KEY="$(newkey bob)"
for who in alice bob; do
  if [ "$who" = alice ]; then key=$ALICE_KEY; else key=$BOB_KEY; fi
  printf '  %-5s %s...  (%d characters; the replicas hold only its sha256)\n' "$who" "${key:0:12}" "${#key}"
done
for i in 1 2 3; do
  cat "$EXAMPLES/demo-cluster-$i.yaml" "$AUTH" >"$LOGS/demo-$i.yaml"
  "$BIN/genai-gateway" check-config --config "$LOGS/demo-$i.yaml" >/dev/null 2>&1 ||
    die "$LOGS/demo-$i.yaml does not pass check-config"
done
echo "  each replica runs its example file plus these auth.keys entries: $LOGS/demo-{1,2,3}.yaml"

step "starting mockllm on $MOCK_ADDR and three replicas (logs in $LOGS)"
"$BIN/mockllm" --addr "$MOCK_ADDR" >"$LOGS/mockllm.log" 2>&1 &
PIDS+=($!)
for i in 1 2 3; do
  "$BIN/genai-gateway" --config "$LOGS/demo-$i.yaml" >"$LOGS/demo-$i.log" 2>&1 &
  PIDS+=($!)
done

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_until() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "demo: timed out waiting for $what; last log lines:" >&2
      tail -n 5 "$LOGS"/*.log >&2 || true
      exit 1
    fi
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "demo: a process exited early; logs:" >&2; tail -n 20 "$LOGS"/*.log >&2; exit 1; }
    done
    sleep 0.2
  done
}
alive_members() { curl -fsS "http://127.0.0.1:$1/cluster" | grep -o '"state": *"alive"' | wc -l; }
cluster_formed() { for p in "${OPERATOR_PORTS[@]}"; do [ "$(alive_members "$p")" -ge 3 ] || return 1; done; }

wait_until 20 "mockllm" curl -fsS "http://$MOCK_ADDR/v1/models"
for p in "${PROXY_PORTS[@]}"; do wait_until 30 "replica :$p to be ready" curl -fsS "http://127.0.0.1:$p/readyz"; done
wait_until 30 "the three replicas to see each other alive" cluster_formed
echo "cluster formed: every replica sees 3 members alive"

# --- traffic ------------------------------------------------------------------------------
# chat PORT WHO KEY MAX_TOKENS [HEADER]: one chat completion with KEY as the API key (none when
# KEY is empty), sent as every OpenAI client sends it; prints the status and sets STATUS, TOTAL.
chat() {
  local port=$1 who=$2 key=$3 max=$4 extra=${5:-}
  local body="$LOGS/body.json" headers="$LOGS/headers.txt"
  local args=(-sS -o "$body" -D "$headers" -w '%{http_code}' -H 'content-type: application/json')
  if [ -n "$key" ]; then args+=(-H "authorization: Bearer $key"); fi
  if [ -n "$extra" ]; then args+=(-H "$extra"); fi
  STATUS=$(curl "${args[@]}" \
    -d "{\"model\":\"$MODEL\",\"max_tokens\":$max,\"messages\":[{\"role\":\"user\",\"content\":\"$PROMPT\"}]}" \
    "http://127.0.0.1:$port/v1/chat/completions")
  TOTAL=$(grep -o '"total_tokens": *[0-9]*' "$body" | grep -o '[0-9]*$' || true)
  if [ "$STATUS" = 200 ]; then
    printf '  %-7s -> :%s  %s  total_tokens=%s\n' "$who" "$port" "$STATUS" "${TOTAL:-?}"
  else
    local retry msg
    retry=$(grep -i '^retry-after:' "$headers" | tr -d '\r' | cut -d' ' -f2 || true)
    msg=$(grep -o '"message": *"[^"]*"' "$body" | head -n 1 | sed 's/"message": *//' || true)
    if [ -n "$retry" ]; then retry="  retry-after=${retry}s"; fi
    printf '  %-7s -> :%s  %s%s  %s\n' "$who" "$port" "$STATUS" "$retry" "$msg"
  fi
}
used() { curl -fsS "http://127.0.0.1:$1/usage?user=$2" | grep -o '"used": *[0-9]*' | grep -o '[0-9]*$' | sort -n | tail -n 1; }

step "alice's key spends its $LIMIT tokens/minute through demo-1 (:8081), bob's sends through demo-2 (:8082)"
alice_total=0
for _ in 1 2 3 4 5; do
  chat 8081 alice "$ALICE_KEY" 40
  [ "$STATUS" = 200 ] || break
  alice_total=$((alice_total + ${TOTAL:-0}))
  ((alice_total + 10 <= LIMIT)) || break
done
chat 8082 bob "$BOB_KEY" 20

step "waiting for demo-3 (:9093) to learn alice's usage through gossip"
seen_alice() { [ "$(used 9093 alice)" -ge "$alice_total" ]; }
wait_until 15 "demo-3 to see alice's usage" seen_alice
echo "  demo-3 sees alice at $(used 9093 alice)/$LIMIT tokens, though her key never sent it anything"

step "alice's key now tries demo-3 (:8083), a replica it never used"
chat 8083 alice "$ALICE_KEY" 40
alice_status=$STATUS
step "a user header does not change who pays: alice's key sends 'user: carol'"
chat 8083 alice "$ALICE_KEY" 40 "user: carol"
carol_status=$STATUS
step "bob's key is not affected"
chat 8083 bob "$BOB_KEY" 20
step "a key the replicas do not hold (made by keygen, never added), and no key at all"
STRANGER_KEY="$("$BIN/genai-gateway" keygen --name stranger | grep '^ggw_')"
chat 8083 unknown "$STRANGER_KEY" 20
unknown_status=$STATUS
chat 8083 "no key" "" 20
nokey_status=$STATUS

echo
ok=1
if [ "$alice_status" = 429 ] && [ "$carol_status" = 429 ]; then
  bold "alice's key was refused by a replica she never used: her limit holds across the cluster."
else
  bold "unexpected: alice's key got $alice_status (and $carol_status as 'carol') from demo-3, not 429"
  ok=0
fi
if [ "$unknown_status" = 401 ] && [ "$nokey_status" = 401 ]; then
  bold "an unknown key and a request without a key got 401, and nothing reached the upstream."
else
  bold "unexpected: an unknown key got $unknown_status and no key $nokey_status, not 401"
  ok=0
fi

step "look around"
cat <<LOOK
  usage as demo-3 sees it:  curl -s 'http://127.0.0.1:9093/usage?user=alice'
                            $(curl -fsS "http://127.0.0.1:9093/usage?user=alice")
  cluster members:          curl -s http://127.0.0.1:9091/cluster
  metrics of each replica:  http://127.0.0.1:9091/metrics  http://127.0.0.1:9092/metrics  http://127.0.0.1:9093/metrics
                            (tokens_by_user_by_model_total, genai_gateway_rate_limited_requests_total,
                            genai_gateway_auth_failures_total, ...)
  send your own, as bob:    curl -s http://127.0.0.1:8082/v1/chat/completions \\
                              -H 'authorization: Bearer $BOB_KEY' \\
                              -H 'content-type: application/json' \\
                              -d '{"model":"$MODEL","messages":[{"role":"user","content":"hi"}]}'
  bob asks about himself:   curl -s http://127.0.0.1:8082/usage -H 'authorization: Bearer $BOB_KEY'
  config files and logs:    $LOGS
LOOK

[ "$ok" = 1 ] || exit 1
if [ "${DEMO_WAIT:-1}" = 0 ]; then exit 0; fi
echo
bold "running; press Ctrl-C to stop everything"
while :; do
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a process exited; see $LOGS"
  done
  sleep 1
done
