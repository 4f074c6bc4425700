-- chat.lua: wrk request generator for bench/loadbench.sh.
--
-- Usage: wrk -s bench/chat.lua URL -- MODE USERS
--   MODE   "chat" (non-streaming, default) or "stream" ("stream": true)
--   USERS  number of distinct values of the `user` header to rotate through
--          (default 100); the gateway's rate limiter and metrics key on it.
--
-- Every request is a POST /v1/chat/completions for 16 completion tokens.
-- Requests are formatted once in init(), so the hot loop only picks the next
-- prepared string. done() prints one machine-readable line that
-- loadbench.sh parses:
--   BENCHRESULT rps=R p50_us=P p99_us=Q requests=N errors=E non2xx=S

local requests = {}
local count = 0
local next_index = 0

function init(args)
  local mode = args[1] or "chat"
  local users = tonumber(args[2] or "100") or 100
  if users < 1 then users = 1 end
  local body = '{"model":"gpt-4o-mini","messages":[{"role":"user",' ..
      '"content":"Say hello to the benchmark please"}],"max_tokens":16'
  if mode == "stream" then
    body = body .. ',"stream":true'
  elseif mode ~= "chat" then
    error("chat.lua: unknown mode " .. mode .. " (want chat or stream)")
  end
  body = body .. '}'
  for u = 1, users do
    requests[u] = wrk.format("POST", "/v1/chat/completions", {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer sk-bench",
      ["user"] = "bench-user-" .. u,
    }, body)
  end
  count = users
  -- Threads start at different users so they do not move in lockstep.
  next_index = math.random(count) - 1
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

function done(summary, latency, _)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "BENCHRESULT rps=%.1f p50_us=%d p99_us=%d requests=%d errors=%d non2xx=%d\n",
    summary.requests / seconds,
    latency:percentile(50), latency:percentile(99),
    summary.requests,
    e.connect + e.read + e.write + e.timeout, e.status))
end
