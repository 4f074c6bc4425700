package proxy

import (
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestMetrics(t testing.TB, opts metricsOptions) (*metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// gathered returns the series of the metric family name as
// "label=value,..." (labels sorted) -> value, from a real Gather.
func gathered(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			out[strings.Join(ls, ",")] = m.GetCounter().GetValue()
		}
	}
	return out
}

func keys(m map[string]float64) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestMetricsLabelValue(t *testing.T) {
	mib := 1 << 20
	tests := []struct {
		name, in, want string
	}{
		{"plain", "alice", "alice"},
		{"empty", "", ""},
		{"NUL bytes are valid UTF-8", "a\x00b", "a\x00b"},
		{"invalid byte", "a\xffb", "a\uFFFDb"},
		{"a run of invalid bytes is one replacement", "a\xff\xfe\xfdb", "a\uFFFDb"},
		{"surrogate encoded in UTF-8", "\xed\xa0\x80", "\uFFFD"},
		{"exactly 256 bytes", strings.Repeat("u", 256), strings.Repeat("u", 256)},
		{"1 MiB", strings.Repeat("u", mib), strings.Repeat("u", 256)},
		{"1 MiB of invalid bytes", strings.Repeat("\xff", mib), "\uFFFD"},
		{"rune straddles the cut", strings.Repeat("u", 255) + "é" + "tail", strings.Repeat("u", 255)},
		{"3-byte runes", strings.Repeat("日", 100), strings.Repeat("日", 85)},
		{"replacements grow it past the cap", strings.Repeat("a\xff", 200), strings.Repeat("a\uFFFD", 64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := labelValue(tt.in)
			if got != tt.want {
				t.Errorf("got %q (%d bytes), want %q (%d bytes)", got[:min(len(got), 40)], len(got), tt.want[:min(len(tt.want), 40)], len(tt.want))
			}
			if !utf8.ValidString(got) || len(got) > maxLabelBytes {
				t.Errorf("got %d bytes, valid UTF-8 %v; want at most %d, valid", len(got), utf8.ValidString(got), maxLabelBytes)
			}
		})
	}
}

func TestMetricsLabelValueAllocs(t *testing.T) {
	if got := testing.AllocsPerRun(100, func() { labelValue("gpt-4o-mini-2024-07-18") }); got != 0 {
		t.Errorf("allocs: got %v, want 0", got)
	}
}

// TestMetricsHostileLabels: no user or model value from a client or an
// upstream makes a collector panic, and every value reaches /metrics as
// valid UTF-8 of at most maxLabelBytes.
func TestMetricsHostileLabels(t *testing.T) {
	values := map[string]string{
		"invalid UTF-8": "bob\xff",
		"NUL":           "a\x00b",
		"1 MiB":         strings.Repeat("x", 1<<20),
		"1 MiB invalid": strings.Repeat("\xc3", 1<<20),
		"newline quote": "a\n\"b\\",
		"other":         "other",
	}
	for name, v := range values {
		t.Run(name, func(t *testing.T) {
			m, reg := newTestMetrics(t, metricsOptions{})
			m.addTokens(v, "gpt-4o", 3, 4, 0)
			m.addTokens("alice", v, 5, 6, 0)
			m.addTokens(v, v, 1, 1, 0)
			m.request(routeChat, v, "up0", 200, 0.1, 0.01)
			m.usageClamped(v)
			got := gathered(t, reg, "tokens_by_user_by_model_total")
			var sum float64
			for k, n := range got {
				sum += n
				if !utf8.ValidString(k) {
					t.Errorf("label set %q: not valid UTF-8", k)
				}
			}
			if sum != 20 {
				t.Errorf("tokens by user and model: got %v in %d series, want 20", sum, len(got))
			}
			want := "model=gpt-4o,user=" + labelValue(v)
			if got[want] != 7 {
				t.Errorf("series %q: got %v, want 7", want[:min(len(want), 60)], got[want])
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatalf("gather: got %v, want no error", err)
			}
			for _, mf := range mfs {
				for _, mm := range mf.GetMetric() {
					for _, l := range mm.GetLabel() {
						if len(l.GetValue()) > maxLabelBytes {
							t.Errorf("%s{%s}: got %d bytes, want at most %d", mf.GetName(), l.GetName(), len(l.GetValue()), maxLabelBytes)
						}
					}
				}
			}
			// A scrape, as Prometheus would make it.
			rec := httptest.NewRecorder()
			h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "tokens_by_user_by_model_total{") {
				t.Errorf("scrape: got %d %.200q, want 200 with tokens_by_user_by_model_total", rec.Code, rec.Body.String())
			}
		})
	}
}

func TestMetricsClampTokens(t *testing.T) {
	tests := []struct {
		name                    string
		prompt, completion      int64
		wantPrompt, wantComplet float64
	}{
		{"max int64 twice", math.MaxInt64, math.MaxInt64, maxUsageTokens, maxUsageTokens},
		{"negative", -5, 7, 0, 7},
		{"min int64", math.MinInt64, 1, 0, 1},
		{"both zero after clamping", -1, -1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newTestMetrics(t, metricsOptions{})
			m.addTokens("u", "m", tt.prompt, tt.completion, 0)
			p := gathered(t, reg, "prompt_tokens_total")[""]
			c := gathered(t, reg, "completion_tokens_total")[""]
			total := gathered(t, reg, "tokens_total")[""]
			if p != tt.wantPrompt || c != tt.wantComplet || total != tt.wantPrompt+tt.wantComplet {
				t.Errorf("got prompt %v, completion %v, total %v; want %v, %v, %v",
					p, c, total, tt.wantPrompt, tt.wantComplet, tt.wantPrompt+tt.wantComplet)
			}
		})
	}
}

func TestMetricsUsageClamped(t *testing.T) {
	m, reg := newTestMetrics(t, metricsOptions{})
	m.usageClamped("up0")
	m.usageClamped("up0")
	m.usageClamped("up1")
	got := gathered(t, reg, "genai_gateway_usage_clamped_total")
	want := map[string]float64{"upstream=up0": 2, "upstream=up1": 1}
	if len(got) != len(want) || got["upstream=up0"] != 2 || got["upstream=up1"] != 1 {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestMetricsStatusCodes(t *testing.T) {
	m, reg := newTestMetrics(t, metricsOptions{})
	for _, code := range []int{200, 499, 0, 99, 600, 1 << 20, -1} {
		m.request(routeChat, "gpt-4o", "up0", code, 0.1, -1)
	}
	got := gathered(t, reg, "genai_gateway_requests_total")
	base := "model=gpt-4o,route=" + routeChat + ",upstream=up0"
	want := map[string]float64{"code=200," + base: 1, "code=499," + base: 1, "code=other," + base: 5}
	if len(got) != len(want) {
		t.Fatalf("got series %q, want %d", keys(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}
}

// TestMetricsUserCapAndIdle: past MaxUsers a new user is "other"; once the
// others are idle for UserIdle, their series are deleted and the new user
// gets its own label.
func TestMetricsUserCapAndIdle(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	const idle = time.Hour
	m, reg := newTestMetrics(t, metricsOptions{MaxUsers: 2, UserIdle: idle, Now: clock.Now})
	m.addTokens("u1", "gpt-4o", 1, 0, 0)
	m.addTokens("u2", "gpt-4o", 2, 0, 0)
	m.addTokens("u3", "gpt-4o", 4, 0, 0)
	want := map[string]float64{"model=gpt-4o,user=u1": 1, "model=gpt-4o,user=u2": 2, "model=gpt-4o,user=other": 4}
	check := func(step string, want map[string]float64) {
		t.Helper()
		for _, name := range []string{"prompt_tokens_by_user_by_model_total", "completion_tokens_by_user_by_model_total", "tokens_by_user_by_model_total"} {
			got := gathered(t, reg, name)
			if name == "completion_tokens_by_user_by_model_total" {
				for k := range got {
					got[k] = want[k] // no completion tokens: only the series set is compared
				}
			}
			if len(got) != len(want) {
				t.Errorf("%s: %s: got series %q, want %q", step, name, keys(got), keys(want))
				continue
			}
			for k, v := range want {
				if n, ok := got[k]; !ok || n != v {
					t.Errorf("%s: %s{%s}: got %v (present %v), want %v", step, name, k, n, ok, v)
				}
			}
		}
	}
	check("three users, two slots", want)

	clock.Advance(idle / 2)
	m.addTokens("u2", "gpt-4o", 8, 0, 0) // u2 stays active
	clock.Advance(idle/2 + time.Second)
	m.addTokens("u3", "gpt-4o", 16, 0, 0)
	check("u1 idle for longer than UserIdle", map[string]float64{
		"model=gpt-4o,user=u2": 10, "model=gpt-4o,user=u3": 16, "model=gpt-4o,user=other": 4})

	clock.Advance(idle + time.Second)
	m.addTokens("u4", "gpt-4o", 32, 0, 0)
	m.addTokens("u5", "gpt-4o", 64, 0, 0)
	m.addTokens("u6", "gpt-4o", 128, 0, 0)
	check("everyone idle, then three new users", map[string]float64{
		"model=gpt-4o,user=u4": 32, "model=gpt-4o,user=u5": 64, "model=gpt-4o,user=other": 132})
	if got := gathered(t, reg, "prompt_tokens_by_model_total")["model=gpt-4o"]; got != 255 {
		t.Errorf("prompt tokens by model (never deleted): got %v, want 255", got)
	}
}

// TestMetricsIdleThousands: after 10,000 users have come and gone, a new
// user gets its own label, and memory holds only the live ones.
func TestMetricsIdleThousands(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	m, reg := newTestMetrics(t, metricsOptions{MaxUsers: 10000, UserIdle: time.Minute, Now: clock.Now})
	for i := range 10000 {
		m.addTokens("old-"+strconv.Itoa(i), "gpt-4o", 1, 0, 0)
	}
	m.addTokens("late", "gpt-4o", 1, 0, 0)
	if got := gathered(t, reg, "prompt_tokens_by_user_by_model_total")["model=gpt-4o,user=other"]; got != 1 {
		t.Errorf("user 10,001 before the idle time: got %v tokens under other, want 1", got)
	}
	clock.Advance(time.Minute + time.Second)
	m.addTokens("new", "gpt-4o", 1, 0, 0)
	got := gathered(t, reg, "prompt_tokens_by_user_by_model_total")
	if got["model=gpt-4o,user=new"] != 1 || len(got) != 2 {
		t.Errorf("got %d series (new: %v), want 2 (new and other)", len(got), got["model=gpt-4o,user=new"])
	}
	m.mu.RLock()
	users, series, tokens := len(m.users), m.series, len(m.tokens)
	m.mu.RUnlock()
	if users != 1 || series != 1 || tokens != 2 {
		t.Errorf("got %d users, %d series, %d cached counters; want 1, 1, 2", users, series, tokens)
	}
}

// TestMetricsSeriesCap: MaxSeries caps (user, model) pairs; past it a new
// pair counts as user "other" with its model, and a model past maxModels
// is "other" too.
func TestMetricsSeriesCap(t *testing.T) {
	m, reg := newTestMetrics(t, metricsOptions{MaxUsers: 100, MaxSeries: 3})
	m.addTokens("u1", "m1", 1, 0, 0)
	m.addTokens("u1", "m2", 2, 0, 0)
	m.addTokens("u2", "m1", 4, 0, 0)
	m.addTokens("u1", "m3", 8, 0, 0)  // fourth pair: other
	m.addTokens("u3", "m1", 16, 0, 0) // new user, no series left: other
	m.addTokens("u1", "m1", 32, 0, 0) // existing pair still counts as itself
	got := gathered(t, reg, "prompt_tokens_by_user_by_model_total")
	want := map[string]float64{
		"model=m1,user=u1": 33, "model=m2,user=u1": 2, "model=m1,user=u2": 4,
		"model=m3,user=other": 8, "model=m1,user=other": 16,
	}
	if len(got) != len(want) {
		t.Fatalf("got series %q, want %q", keys(got), keys(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}

	// Models past maxModels: ("other", "other") once the series are full.
	for i := range maxModels + 5 {
		m.addTokens("u9", "model-"+strconv.Itoa(i), 1, 0, 0)
	}
	got = gathered(t, reg, "prompt_tokens_by_user_by_model_total")
	// m1..m3 took three model slots: 997 are left, 8 models are "other".
	if n := got["model=other,user=other"]; n != 8 {
		t.Errorf("model=other,user=other: got %v, want 8", n)
	}
	if n := len(gathered(t, reg, "prompt_tokens_by_model_total")); n != maxModels+1 {
		t.Errorf("model series: got %d, want %d", n, maxModels+1)
	}
	var real int
	for k := range got {
		if !strings.HasSuffix(k, "user=other") {
			real++
		}
	}
	if real > 3 {
		t.Errorf("series of real users: got %d, want at most 3", real)
	}
}

// TestMetricsConcurrent runs addTokens from many goroutines across sweeps
// (run with -race) and checks the caps hold and no token is lost.
func TestMetricsConcurrent(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	m, reg := newTestMetrics(t, metricsOptions{MaxUsers: 50, MaxSeries: 80, UserIdle: time.Second, Now: clock.Now})
	const workers, per = 8, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				m.addTokens("u"+strconv.Itoa((w*per+i)%200), "m"+strconv.Itoa(i%7), 1, 1, 0)
				if i%100 == 0 {
					clock.Advance(200 * time.Millisecond)
				}
				if i%10 == 0 {
					m.request(routeChat, "m"+strconv.Itoa(i%7), "up0", 200, 0.1, 0.01)
				}
			}
		}()
	}
	wg.Wait()
	if got := gathered(t, reg, "tokens_total")[""]; got != 2*workers*per {
		t.Errorf("tokens_total: got %v, want %d", got, 2*workers*per)
	}
	m.mu.RLock()
	users, series := len(m.users), m.series
	var counted int
	for _, us := range m.users {
		counted += len(us.models)
	}
	m.mu.RUnlock()
	if users > 50 || series > 80 || counted != series {
		t.Errorf("got %d users, %d series (%d by user); want at most 50 and 80, equal", users, series, counted)
	}
	var real int
	for k := range gathered(t, reg, "prompt_tokens_by_user_by_model_total") {
		if !strings.HasSuffix(k, "user=other") {
			real++
		}
	}
	if real != series {
		t.Errorf("series in the registry: got %d, want %d", real, series)
	}
}

func TestMetricsAddTokensAllocs(t *testing.T) {
	m, _ := newTestMetrics(t, metricsOptions{MaxUsers: 1})
	m.addTokens("alice", "gpt-4o", 1, 1, 0)
	m.addTokens("bob", "gpt-4o", 1, 1, 0) // "other"
	for _, user := range []string{"alice", "bob"} {
		t.Run(user, func(t *testing.T) {
			if got := testing.AllocsPerRun(1000, func() { m.addTokens(user, "gpt-4o", 12, 30, 0) }); got != 0 {
				t.Errorf("allocs: got %v, want 0", got)
			}
		})
	}
}

func BenchmarkMetricsAddTokens(b *testing.B) {
	m, _ := newTestMetrics(b, metricsOptions{MaxUsers: 1})
	m.addTokens("alice", "gpt-4o", 1, 1, 0)
	for _, user := range []string{"alice", "carol"} { // carol counts as other
		b.Run(user, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.addTokens(user, "gpt-4o", 12, 30, 0)
			}
		})
	}
}

// FuzzMetricsLabels: no user, model or upstream value makes a collector
// panic, and labelValue is the identity on values that are already safe.
func FuzzMetricsLabels(f *testing.F) {
	for _, s := range []string{"alice", "", "other", "a\x00b", "bob\xff", "\xed\xa0\x80", strings.Repeat("é", 200), strings.Repeat("\xff", 300)} {
		f.Add(s, "gpt-4o", int64(3), int64(-4))
	}
	f.Add("u", strings.Repeat("日", 90)+"\xff", int64(math.MaxInt64), int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, user, model string, prompt, completion int64) {
		v := labelValue(user)
		if !utf8.ValidString(v) || len(v) > maxLabelBytes {
			t.Fatalf("labelValue(%q): got %q, want valid UTF-8 of at most %d bytes", user, v, maxLabelBytes)
		}
		if labelValue(v) != v {
			t.Fatalf("labelValue(%q): got %q, then %q", user, v, labelValue(v))
		}
		if len(user) <= maxLabelBytes && utf8.ValidString(user) && v != user {
			t.Fatalf("labelValue(%q): got %q, want it unchanged", user, v)
		}
		m, reg := newTestMetrics(t, metricsOptions{MaxUsers: 2, MaxSeries: 2})
		m.addTokens(user, model, prompt, completion, 0)
		m.addTokens(model, user, completion, prompt, 0)
		m.request(routeChat, model, "up0", int(prompt), 0.1, 0.01)
		m.usageClamped(user)
		if _, err := reg.Gather(); err != nil {
			t.Fatalf("gather: got %v, want no error", err)
		}
	})
}
