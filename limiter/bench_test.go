package limiter

import (
	"testing"
	"time"
)

func benchLimiter(b *testing.B) (*Limiter, *mapStore) {
	st := newMapStore()
	l := newTest(b, policy(
		Limit{Name: "prompt-hourly", Metric: MetricPromptTokens, Limit: 1 << 60, Window: time.Hour},
		Limit{Name: "total-minute", Metric: MetricTotalTokens, Limit: 1 << 60, Window: time.Minute, Models: []string{"gpt-4o*"}},
		Limit{Name: "req-minute", Metric: MetricRequests, Limit: 1 << 60, Window: time.Minute},
	), st, Options{Now: time.Now, Replicas: func() int { return 3 }})
	if _, err := l.Admit("alice", "gpt-4o-mini", Tokens(100)); err != nil { // create the keys
		b.Fatal(err)
	}
	return l, st
}

// BenchmarkAdmit measures check-and-reserve on existing keys with 3 limits and a map store, the
// bound deciding.
func BenchmarkAdmit(b *testing.B) {
	l, _ := benchLimiter(b)
	estimate := Estimate{Bound: 400, Cheap: 100, Exact: func() int64 { return 100 }}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Admit("alice", "gpt-4o-mini", estimate); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAdmitExact is BenchmarkAdmit with an estimate that has no bound: Exact decides, as
// every Admit did before Estimate had a bound.
func BenchmarkAdmitExact(b *testing.B) {
	l, _ := benchLimiter(b)
	estimate := Estimate{Exact: func() int64 { return 100 }}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Admit("alice", "gpt-4o-mini", estimate); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAdmitSettle is a whole request's limiter work: admit, then settle.
func BenchmarkAdmitSettle(b *testing.B) {
	l, _ := benchLimiter(b)
	estimate := Estimate{Bound: 400, Cheap: 100, Exact: func() int64 { return 100 }}
	u := Usage{PromptTokens: 90, CompletionTokens: 20}
	b.ReportAllocs()
	for b.Loop() {
		r, err := l.Admit("alice", "gpt-4o-mini", estimate)
		if err != nil {
			b.Fatal(err)
		}
		r.Settle(u)
	}
}

// BenchmarkAdmitParallel is Admit from every P on distinct users.
func BenchmarkAdmitParallel(b *testing.B) {
	l, _ := benchLimiter(b)
	estimate := Estimate{Bound: 400, Cheap: 100, Exact: func() int64 { return 100 }}
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := l.Admit(users[i%len(users)], "gpt-4o-mini", estimate); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// constStore answers every Sum with 1 and drops Adds: the limiter's own cost, without a store.
type constStore struct{}

func (constStore) Add(limit, user string, start, size, delta int64) {}
func (constStore) Sum(limit, user string, start, size int64) int64  { return 1 }

// BenchmarkAdmitNoStore is BenchmarkAdmit without the store's cost.
func BenchmarkAdmitNoStore(b *testing.B) {
	l := newTest(b, policy(
		Limit{Name: "prompt-hourly", Metric: MetricPromptTokens, Limit: 1 << 60, Window: time.Hour},
		Limit{Name: "total-minute", Metric: MetricTotalTokens, Limit: 1 << 60, Window: time.Minute, Models: []string{"gpt-4o*"}},
		Limit{Name: "req-minute", Metric: MetricRequests, Limit: 1 << 60, Window: time.Minute},
	), constStore{}, Options{Now: time.Now, Replicas: func() int { return 3 }})
	estimate := Estimate{Bound: 400, Cheap: 100, Exact: func() int64 { return 100 }}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Admit("alice", "gpt-4o-mini", estimate); err != nil {
			b.Fatal(err)
		}
	}
}
