package proxy

import (
	"net/http"
	"testing"
	"time"

	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// BenchmarkProxyChatPool is BenchmarkProxyChat through a pool: one
// upstream (the routing path every request takes), three healthy
// upstreams under each strategy, and three of which one is down and one
// rate-limited (cooled down after their first failures, so the steady
// state is what a degraded pool costs). The difference to one upstream is
// the overhead of routing with three.
func BenchmarkProxyChatPool(b *testing.B) {
	for _, bc := range []struct {
		name     string
		strategy string
		degraded bool
		n        int
	}{
		{"one", route.NamePriority, false, 1},
		{"three/priority", route.NamePriority, false, 3},
		{"three/weighted", route.NameWeighted, false, 3},
		{"three/least_busy", route.NameLeastBusy, false, 3},
		{"three/one_down_one_limited", route.NameWeighted, true, 3},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var urls []string
			for range bc.n {
				urls = append(urls, newFakeLLM(b).srv.URL)
			}
			if bc.degraded {
				urls[0] = refusedURL(b)
				urls[1] = newFlaky(b, mode429).srv.URL
			}
			cfg := poolConfig(bc.strategy, urls...)
			cfg.Routing.Cooldown = time.Hour
			e := newEnv(b, cfg, nil)
			e.client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
			b.ReportAllocs()
			for b.Loop() {
				benchPost(b, e.client, e.srv.URL+routeChat, benchChat)
			}
		})
	}
}
