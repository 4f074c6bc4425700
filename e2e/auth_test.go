package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestKeyRemovedStopsWorkingOnEveryReplica: three clustered replicas share a
// file with two gateway keys made by keygen; the operator removes one from
// every replica's file: within seconds that key gets 401 on all three, the
// other key keeps working, and the cluster stays whole. Both ways of
// reloading are run, each on its own cluster: SIGHUP (checked first with an
// unchanged file, which only SIGHUP reloads, so the signal path is proven
// live) and the file watch alone.
func TestKeyRemovedStopsWorkingOnEveryReplica(t *testing.T) {
	mock := startMock(t)
	for _, sighup := range []bool{true, false} {
		name := "file watch"
		if sighup {
			name = "SIGHUP"
		}
		t.Run(name, func(t *testing.T) { testKeyRemoved(t, mock, sighup) })
	}
}

func testKeyRemoved(t *testing.T, mock string, sighup bool) {
	revoked, kept := keygen(t, "team-revoked"), keygen(t, "team-kept")
	rs := startCluster(t, 3, mock, authKeysYAML(revoked, kept))
	ctx := context.Background()

	for _, r := range rs {
		for _, k := range []gatewayKey{revoked, kept} {
			if _, err := chat(ctx, keyClient(r.proxy, k.key), 3); err != nil {
				t.Fatalf("%s with key %s before the reload: %v", r.name, k.name, err)
			}
		}
	}
	reloads := func(r *replica) float64 {
		v, _ := metricValue(t, r.ops, "genai_gateway_config_reloads_total", `{result="success"}`)
		return v
	}
	if sighup {
		// SIGHUP with the file unchanged: a reload (which a file watch would
		// not do), and both keys still work.
		for _, r := range rs {
			before := reloads(r)
			r.hangUp(t)
			eventually(t, 10*time.Second, func() bool { return reloads(r) == before+1 },
				"%s counting the SIGHUP reload in genai_gateway_config_reloads_total{result=\"success\"}", r.name)
			for _, k := range []gatewayKey{revoked, kept} {
				if _, err := chat(ctx, keyClient(r.proxy, k.key), 3); err != nil {
					t.Fatalf("%s with key %s after a SIGHUP with the file unchanged: %v", r.name, k.name, err)
				}
			}
		}
	}
	before := make([]float64, len(rs))
	for i, r := range rs {
		before[i] = reloads(r)
	}

	// The operator deletes the key's entry from every replica's file (and
	// sends SIGHUP).
	entry := authKeysYAML(revoked)[len("auth:\n  keys:\n"):]
	for _, r := range rs {
		r.rewriteConfig(t, func(s string) string { return strings.Replace(s, entry, "", 1) })
	}
	sent := time.Now()
	if sighup {
		for _, r := range rs {
			r.hangUp(t)
		}
	}

	for i, r := range rs {
		c := keyClient(r.proxy, revoked.key)
		var last error
		eventually(t, 10*time.Second, func() bool {
			select {
			case <-r.done:
				t.Fatalf("%s exited after the reload: %v", r.name, r.err)
			default:
			}
			_, last = chat(ctx, c, 3)
			return statusOf(last) == http.StatusUnauthorized
		}, "%s refusing the removed key with 401 (last: %v)", r.name, &last)
		t.Logf("%s refuses the removed key %v after the file changed", r.name, time.Since(sent).Round(time.Millisecond))
		wantRefused(t, last, http.StatusUnauthorized, "invalid_api_key", r.name+" removed key")

		if _, err := chat(ctx, keyClient(r.proxy, kept.key), 3); err != nil {
			t.Errorf("%s with the kept key after the reload: %v", r.name, err)
		}
		if got := reloads(r); got <= before[i] {
			t.Errorf(`%s genai_gateway_config_reloads_total{result="success"}: got %v, want more than %v`, r.name, got, before[i])
		}
		if v, _ := metricValue(t, r.ops, "genai_gateway_auth_failures_total", `{reason="unknown"}`); v < 1 {
			t.Errorf(`%s genai_gateway_auth_failures_total{reason="unknown"}: got %v, want >= 1`, r.name, v)
		}
		if n := aliveMembers(t, r.ops); n != 3 {
			t.Errorf("%s after the reload: got %d alive members, want 3", r.name, n)
		}
		if out := r.out.String(); strings.Contains(out, revoked.key) || strings.Contains(out, kept.key) {
			t.Errorf("%s: a key's plaintext appears in the gateway's output", r.name)
		}
	}
}

// gatewayKeyLimits gives every key's user 1,000 requests and 100,000 tokens an
// hour; user tiny may send only 2 requests an hour (a refusal no SDK should
// sleep through), and gpt-3.5 models allow one request a second (a refusal
// worth waiting for).
const gatewayKeyLimits = `rate_limit:
  enabled: true
  max_client_wait: 30s
  limits:
    - {name: tokens-hourly, metric: total_tokens, limit: 100000, window: 1h}
    - {name: requests-hourly, metric: requests, limit: 1000, window: 1h}
    - {name: burst, metric: requests, limit: 1, window: 1s, models: ["gpt-3.5-*"]}
  overrides:
    tiny: [{name: requests-hourly, limit: 2}]
`

// TestOpenAIClientWithGatewayKey: the official openai-go client, configured
// with a gateway key as its API key, chats and streams through a running
// gateway; the usage is charged to the key's user whatever user header the
// client sends; an unknown key is reported by the SDK as 401
// invalid_api_key; a request over its limit is a 429 the SDK surfaces at once
// when the wait is longer than max_client_wait, and waits for when it is not.
func TestOpenAIClientWithGatewayKey(t *testing.T) {
	mock := startMock(t)
	search, tiny, burst := keygen(t, "search-team"), keygen(t, "tiny"), keygen(t, "burst")
	unknown := keygen(t, "never-configured")
	r := startReplica(t, replicaSpec{name: "keys", upstream: mock, extra: authKeysYAML(search, tiny, burst) + gatewayKeyLimits})
	waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 10*time.Second)
	ctx := context.Background()

	t.Run("chat and stream charged to the key's user", func(t *testing.T) {
		// The user header names someone else: with auth it must be ignored.
		var seen attempts
		c := keyClient(r.proxy, search.key, option.WithHeader("user", "mallory"), option.WithMiddleware(seen.middleware))
		resp, err := chat(ctx, c, 5)
		if err != nil {
			t.Fatalf("chat: %v", err)
		}
		if got := resp.Usage.TotalTokens; got != 9 {
			t.Errorf("chat usage total: got %d, want 9", got)
		}
		if l := seen.take(); len(l) != 1 || l[0].header.Get("X-Gateway-Ratelimit-Limit-Tokens") != "100000" ||
			l[0].header.Get("X-Gateway-Ratelimit-Remaining-Requests") == "" || l[0].header.Get("X-Request-Id") == "" {
			t.Errorf("chat response headers: got %v, want x-gateway-ratelimit-* for the key's limits and x-request-id", l)
		}

		stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:     "gpt-4o-mini",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one two three")},
			MaxTokens: openai.Int(7),
		})
		words := 0
		for stream.Next() {
			for _, choice := range stream.Current().Choices {
				if strings.TrimSpace(choice.Delta.Content) != "" {
					words++
				}
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
		if words != 7 {
			t.Errorf("streamed words: got %d, want 7", words)
		}

		// Chat 4+5, stream 3+7: 19 tokens and 2 requests, all search-team's.
		var u usage
		eventually(t, 5*time.Second, func() bool {
			getJSON(t, r.ops+"/usage?user=search-team", &u)
			return u.used("tokens-hourly") == 19 && u.used("requests-hourly") == 2
		}, "operator /usage?user=search-team: tokens-hourly 19, requests-hourly 2 (got %+v)", &u)
		if got, _ := metricValue(t, r.ops, "tokens_by_user_by_model_total", `{model="gpt-4o-mini",user="search-team"}`); got != 19 {
			t.Errorf(`tokens_by_user_by_model_total{gpt-4o-mini,search-team}: got %v, want 19`, got)
		}
		if got, ok := metricValue(t, r.ops, "tokens_by_user_by_model_total", `{model="gpt-4o-mini",user="mallory"}`); ok {
			t.Errorf("the user header was charged: mallory has %v tokens", got)
		}
		var m usage
		getJSON(t, r.ops+"/usage?user=mallory", &m)
		if m.used("tokens-hourly") != 0 {
			t.Errorf("operator /usage?user=mallory: got %+v, want nothing used", m)
		}

		// The proxy port's /usage answers the key about itself.
		req, _ := http.NewRequest(http.MethodGet, r.proxy+"/usage", nil)
		req.Header.Set("Authorization", "Bearer "+search.key)
		req.Header.Set("user", "mallory")
		var own usage
		if code := getJSONWith(t, req, &own); code != http.StatusOK || own.User != "search-team" || own.used("tokens-hourly") != 19 {
			t.Errorf("proxy /usage with the key: got %d %+v, want 200 for search-team, 19 tokens used", code, own)
		}
	})

	t.Run("unknown key is 401 invalid_api_key", func(t *testing.T) {
		before, _ := metricValue(t, r.ops, "genai_gateway_auth_failures_total", `{reason="unknown"}`)
		c := keyClient(r.proxy, unknown.key)
		_, err := chat(ctx, c, 5)
		wantRefused(t, err, http.StatusUnauthorized, "invalid_api_key", "chat with an unknown key")
		if e := apiError(t, err, "chat with an unknown key"); e.Type != "invalid_request_error" {
			t.Errorf("401 type: got %q, want invalid_request_error", e.Type)
		}
		stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-4o-mini",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		for stream.Next() {
			t.Errorf("stream with an unknown key: got a chunk %s", stream.Current().RawJSON())
		}
		wantRefused(t, stream.Err(), http.StatusUnauthorized, "invalid_api_key", "stream with an unknown key")
		if after, _ := metricValue(t, r.ops, "genai_gateway_auth_failures_total", `{reason="unknown"}`); after-before != 2 {
			t.Errorf(`genai_gateway_auth_failures_total{reason="unknown"}: got +%v, want +2`, after-before)
		}
	})

	t.Run("429 past max_client_wait is reported at once", func(t *testing.T) {
		var seen attempts
		// The SDK's default retries: it must not retry a refusal that says not to.
		c := keyClient(r.proxy, tiny.key, option.WithMaxRetries(2), option.WithMiddleware(seen.middleware))
		for i := range 2 {
			if _, err := chat(ctx, c, 1); err != nil {
				t.Fatalf("tiny request %d of 2: %v", i+1, err)
			}
		}
		seen.take()
		start := time.Now()
		_, err := chat(ctx, c, 1)
		took := time.Since(start)
		wantRefused(t, err, http.StatusTooManyRequests, "rate_limit_exceeded", "tiny's third request")
		l := seen.take()
		if len(l) != 1 {
			t.Fatalf("attempts by the SDK: got %d, want 1 (no retry)", len(l))
		}
		h := l[0].header
		retryAfter, _ := strconv.Atoi(h.Get("Retry-After"))
		if retryAfter <= 30 || h.Get("X-Should-Retry") != "false" {
			t.Errorf("429 headers: Retry-After %q, x-should-retry %q; want over max_client_wait (30s) and false",
				h.Get("Retry-After"), h.Get("X-Should-Retry"))
		}
		// Retry-After is over 30s: an SDK that slept on it would take that long.
		if took > 15*time.Second {
			t.Errorf("the SDK took %v to report the 429, want it at once", took)
		}
		var u usage
		getJSON(t, r.ops+"/usage?user=tiny", &u)
		if got := u.used("requests-hourly"); got != 2 {
			t.Errorf("tiny requests-hourly used: got %d, want 2 (the refused request is not charged)", got)
		}
	})

	t.Run("429 within max_client_wait is waited for", func(t *testing.T) {
		var seen attempts
		c := keyClient(r.proxy, burst.key, option.WithMaxRetries(3), option.WithMiddleware(seen.middleware))
		if _, err := chatModel(ctx, c, "gpt-3.5-turbo", 1); err != nil {
			t.Fatalf("first burst request: %v", err)
		}
		seen.take()
		if _, err := chatModel(ctx, c, "gpt-3.5-turbo", 1); err != nil {
			t.Fatalf("second burst request, retried by the SDK: %v", err)
		}
		l := seen.take()
		if len(l) < 2 || l[0].status != http.StatusTooManyRequests || l[len(l)-1].status != http.StatusOK {
			t.Fatalf("attempts: got %v, want a 429 first, then the SDK's retry answered 200", l)
		}
		h := l[0].header
		if retryAfter, _ := strconv.Atoi(h.Get("Retry-After")); retryAfter < 1 || retryAfter > 2 || h.Get("X-Should-Retry") != "" {
			t.Errorf("429 of a 1s window: Retry-After %q, x-should-retry %q; want 1-2 and no x-should-retry",
				h.Get("Retry-After"), h.Get("X-Should-Retry"))
		}
	})

	if out := r.out.String(); strings.Contains(out, search.key) || strings.Contains(out, unknown.key) || strings.Contains(out, tiny.key) {
		t.Errorf("a key's plaintext appears in the gateway's output")
	}
}

// getJSONWith sends req and decodes its JSON answer into v; it returns the
// status.
func getJSONWith(t *testing.T, req *http.Request, v any) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s %s: decode: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode
}
