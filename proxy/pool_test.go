package proxy

import (
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// TestChargedAtMostOnce is a property test: whatever the upstreams of a
// pool and of its fallback model do (each request draws a way to fail or
// answer for each of three, and for the fallback's one), a request is
// charged at most once: one answer's usage when the client got a 200,
// nothing when it got an error, and never more attempts than 1 + retries
// on the pool and one on the fallback.
func TestChargedAtMostOnce(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	var ups []*flaky
	var urls []string
	for range 4 {
		f := newFlaky(t, modeOK)
		ups, urls = append(ups, f), append(urls, f.srv.URL)
	}
	for _, st := range []string{route.NamePriority, route.NameWeighted, route.NameLeastBusy} {
		t.Run(st, func(t *testing.T) {
			cfg := poolConfig(st, urls...)
			for i := range cfg.Upstreams {
				cfg.Upstreams[i].Timeout = 200 * time.Millisecond
				cfg.Upstreams[i].Models = []string{"gpt-4o"}
			}
			cfg.Upstreams[3].Models = []string{"gpt-4o-mini"}
			cfg.Routing.Fallbacks = map[string][]string{"gpt-4o": {"gpt-4o-mini"}}
			cfg.Routing.Cooldown = 50 * time.Millisecond // health changes within the run
			store := newMapStore()
			e := newEnv(t, cfg, newRealLimiter(t, store, 1<<40, 1<<40))
			for i := range 60 {
				for _, f := range ups {
					m := modeOK
					if rng.IntN(3) > 0 {
						m = rng.IntN(numModes)
					}
					f.mode.Store(int32(m))
				}
				stream := rng.IntN(3) == 0
				body := poolChat
				if stream {
					body = strings.Replace(body, `"max_tokens":5`, `"max_tokens":5,"stream":true`, 1)
				}
				hitsBefore := ups[0].all.Load() + ups[1].all.Load() + ups[2].all.Load() + ups[3].all.Load()
				tokBefore, reqBefore := store.total("tokens", "bob"), store.total("reqs", "bob")
				meteredBefore := testutil.ToFloat64(e.p.m.tokensTotal)
				resp, got, rerr := e.chatReadErr(t, body, "bob")
				e.idle(t)
				tok := store.total("tokens", "bob") - tokBefore
				reqs := store.total("reqs", "bob") - reqBefore
				metered := int64(testutil.ToFloat64(e.p.m.tokensTotal) - meteredBefore)
				hits := ups[0].all.Load() + ups[1].all.Load() + ups[2].all.Load() + ups[3].all.Load() - hitsBefore
				modes := []int32{ups[0].mode.Load(), ups[1].mode.Load(), ups[2].mode.Load(), ups[3].mode.Load()}
				if hits > 4 {
					t.Errorf("request %d (modes %v): %d attempts, want at most 1 + 2 retries + 1 fallback", i, modes, hits)
				}
				switch {
				case resp.StatusCode == 200 && rerr == nil:
					if tok != 8 || reqs != 1 {
						t.Errorf("request %d (modes %v, stream %v): a whole answer charged %d tokens and %d requests, want 8 and 1 (once)", i, modes, stream, tok, reqs)
					}
				case resp.StatusCode == 200:
					// A stream that broke after its first byte: charged once,
					// what was metered until the break.
					if tok != metered || tok > 8+16 || reqs != 1 {
						t.Errorf("request %d (modes %v): a broken stream charged %d tokens (metered %d) and %d requests, want the metered tokens and 1", i, modes, tok, metered, reqs)
					}
				case resp.StatusCode < 500 && resp.StatusCode != 429:
					t.Errorf("request %d (modes %v): status %d %s, want 200 or an upstream failure", i, modes, resp.StatusCode, got)
				default:
					if tok != 0 || reqs != 0 {
						t.Errorf("request %d (modes %v): status %d charged %d tokens and %d requests, want nothing (body %s)", i, modes, resp.StatusCode, tok, reqs, got)
					}
				}
			}
			if inflight := gauges(t, e, "genai_gateway_upstream_in_flight"); inflight["upstream=up0"]+inflight["upstream=up1"]+inflight["upstream=up2"]+inflight["upstream=up3"] != 0 {
				t.Errorf("in flight after the run: got %v, want 0", inflight)
			}
		})
	}
}

// TestPoolServesThroughFailures is the load run: a pool of three
// with one upstream down (connection refused) and one rate-limited (429
// on every request) serves every request of concurrent clients without a
// client-visible error, whatever the strategy.
func TestPoolServesThroughFailures(t *testing.T) {
	for _, st := range []string{route.NamePriority, route.NameWeighted, route.NameLeastBusy} {
		t.Run(st, func(t *testing.T) {
			limited := newFlaky(t, mode429)
			good := newFakeLLM(t)
			e := newEnv(t, poolConfig(st, refusedURL(t), limited.srv.URL, good.srv.URL), nil)
			e.client.Transport.(*http.Transport).MaxIdleConnsPerHost = 16
			const workers, each = 8, 40
			var wg sync.WaitGroup
			errs := make(chan string, workers*each)
			for range workers {
				wg.Go(func() {
					for range each {
						req, _ := http.NewRequest(http.MethodPost, e.srv.URL+routeChat, strings.NewReader(poolChat))
						req.Header.Set("Content-Type", "application/json")
						resp, err := e.client.Do(req)
						if err != nil {
							errs <- err.Error()
							continue
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							errs <- resp.Status + " " + string(b)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("client-visible error: %s", err)
			}
			e.idle(t)
			if got := good.hits.Load(); got != workers*each {
				t.Errorf("good upstream: got %d requests, want all %d", got, workers*each)
			}
			// The failing ones cooled down after a few attempts instead of
			// taking one of every request.
			attempts := gathered(t, e.reg, "genai_gateway_upstream_attempts_total")
			down, rl := attempts["outcome=connect,upstream=up0"], attempts["outcome=429,upstream=up1"]
			if down < 1 || down > workers*route.FailuresToCool || rl < 1 || rl > workers {
				t.Errorf("attempts: down %v (connect), rate-limited %v (429); want each cooled down after its first failures", down, rl)
			}
			state := gauges(t, e, "genai_gateway_upstream_state")
			if state["state=cooling,upstream=up0"] != 1 || state["state=cooling,upstream=up1"] != 1 || state["state=healthy,upstream=up2"] != 1 {
				t.Errorf("state: got %v, want up0 and up1 cooling, up2 healthy", state)
			}
		})
	}
}

// TestLeastBusyUnevenLatency: with one slow upstream (first in the file)
// and one fast, least_busy sends most requests to the fast one.
func TestLeastBusyUnevenLatency(t *testing.T) {
	slow := newFakeLLM(t, perWord(20*time.Millisecond))
	fast := newFakeLLM(t)
	e := newEnv(t, poolConfig(route.NameLeastBusy, slow.srv.URL, fast.srv.URL), nil)
	body := strings.Replace(poolChat, `"max_tokens":5`, `"max_tokens":5,"stream":true`, 1)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 15 {
				req, _ := http.NewRequest(http.MethodPost, e.srv.URL+routeChat, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := e.client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("status: got %d, want 200", resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	e.idle(t)
	s, f := slow.hits.Load(), fast.hits.Load()
	t.Logf("least_busy: slow upstream %d requests, fast %d", s, f)
	if s+f != 60 || f < 2*s {
		t.Errorf("least_busy: slow upstream got %d requests, fast %d; want the fast one at least 2x the slow one", s, f)
	}
}

// TestAllCoolingPoolServes: when every upstream of a pool is cooling down,
// a request still goes to one (the one whose cool-down ends first) rather
// than being refused by the gateway.
func TestAllCoolingPoolServes(t *testing.T) {
	a, b := newFlaky(t, mode429), newFlaky(t, mode429)
	e := newEnv(t, poolConfig(route.NamePriority, a.srv.URL, b.srv.URL), nil)
	resp, body := e.post(t, routeChat, poolChat)
	if resp.StatusCode != 429 || a.all.Load() != 1 || b.all.Load() != 1 {
		t.Fatalf("both rate-limited: got %d %s (hits %d, %d), want the last upstream's own 429 after trying both", resp.StatusCode, body, a.all.Load(), b.all.Load())
	}
	if resp.Header.Get("Retry-After") != "7" {
		t.Errorf("the upstream's 429: got Retry-After %q, want its own 7", resp.Header.Get("Retry-After"))
	}
	state := gauges(t, e, "genai_gateway_upstream_state")
	if state["state=cooling,upstream=up0"] != 1 || state["state=cooling,upstream=up1"] != 1 {
		t.Fatalf("state: got %v, want both cooling", state)
	}
	a.mode.Store(modeOK)
	b.mode.Store(modeOK)
	resp, body = e.post(t, routeChat, poolChat)
	if resp.StatusCode != 200 || a.all.Load() != 2 {
		t.Fatalf("all cooling: got %d %s (hits %d, %d), want 200 from the first to end its cool-down (up0)", resp.StatusCode, body, a.all.Load(), b.all.Load())
	}
	if state := gauges(t, e, "genai_gateway_upstream_state"); state["state=healthy,upstream=up0"] != 1 {
		t.Errorf("after an answer: got %v, want up0 healthy", state)
	}
}

// TestMaxInFlightFull: a full upstream is skipped; when every upstream of
// the pool is full the gateway answers 503 with Retry-After, in the
// caller's API shape, and charges nothing.
func TestMaxInFlightFull(t *testing.T) {
	held := newFlaky(t, modeHang)
	cfg := poolConfig(route.NamePriority, held.srv.URL)
	cfg.Upstreams[0].MaxInFlight = 1
	store := newMapStore()
	e := newEnv(t, cfg, newRealLimiter(t, store, 1<<40, 1<<40))
	done := make(chan int)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+routeChat, strings.NewReader(poolChat))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("user", "carol")
		resp, err := e.client.Do(req)
		if err != nil {
			done <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	deadline := time.Now().Add(5 * time.Second)
	for held.all.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for _, tt := range []struct {
		path, body, shape string
	}{
		{routeChat, poolChat, `"code":"upstreams_busy"`},
		{routeMessages, `{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, `"type":"error"`},
	} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+tt.path, strings.NewReader(tt.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("user", "carol")
		resp, err := e.client.Do(req) // not e.do: it waits for the held request
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), tt.shape) {
			t.Errorf("%s with the pool full: got %d (Retry-After %q) %s, want 503, Retry-After 1, %s", tt.path, resp.StatusCode, resp.Header.Get("Retry-After"), body, tt.shape)
		}
		if !json.Valid(body) {
			t.Errorf("%s: body %q is not JSON", tt.path, body)
		}
	}
	if got := held.all.Load(); got != 1 {
		t.Errorf("full upstream: got %d requests, want only the one holding it", got)
	}
	if reqs := store.total("reqs", "carol"); reqs != 1 {
		t.Errorf("requests charged while one is in flight: got %d, want 1 (the refused ones released)", reqs)
	}
	held.unblock()
	<-done
}

// TestSetRouting: the routing policy swaps live; an invalid one is refused
// and the running one kept.
func TestSetRouting(t *testing.T) {
	a, b := newFakeLLM(t), newFakeLLM(t)
	e := newEnv(t, poolConfig(route.NamePriority, a.srv.URL, b.srv.URL), nil)
	for range 4 {
		e.post(t, routeChat, poolChat)
	}
	if a.hits.Load() != 4 || b.hits.Load() != 0 {
		t.Fatalf("priority: got hits %d, %d, want 4, 0", a.hits.Load(), b.hits.Load())
	}
	if err := e.p.SetRouting(Routing{Strategy: "fastest"}); err == nil {
		t.Fatal("SetRouting(fastest): got no error, want one")
	}
	if err := e.p.SetRouting(Routing{Strategy: route.NameWeighted, RetryOn: []string{"418"}}); err == nil {
		t.Fatal("SetRouting(retry_on 418): got no error, want one")
	}
	if err := e.p.SetRouting(Routing{Strategy: route.NameWeighted}); err != nil {
		t.Fatalf("SetRouting(weighted): %v", err)
	}
	for range 4 {
		e.post(t, routeChat, poolChat)
	}
	if a.hits.Load() != 6 || b.hits.Load() != 2 {
		t.Errorf("weighted 1:1: got hits %d, %d, want 6, 2", a.hits.Load(), b.hits.Load())
	}
}
