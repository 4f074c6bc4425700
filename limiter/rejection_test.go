package limiter

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// rejected admits and returns the *Rejection, failing if the request was admitted.
func rejected(t *testing.T, l *Limiter, user, model string, n int64) *Rejection {
	t.Helper()
	_, err := l.Admit(user, model, est(n, nil))
	var rej *Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("Admit(%s, %d): got %v, want a *Rejection", user, n, err)
	}
	return rej
}

func TestRejectionFields(t *testing.T) {
	const min10 = 10 * 60_000
	tests := []struct {
		name      string
		lim       Limit
		prev, cur int64
		ask       int64
		want      Rejection
	}{
		{
			name: "prompt tokens",
			lim:  Limit{Name: "prompt-hourly", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour},
			cur:  990, ask: 50,
			want: Rejection{
				Limit: "prompt-hourly", Metric: MetricPromptTokens, Type: "tokens",
				LimitValue: 1000, Remaining: 10, Reset: 110 * time.Minute,
				// the 990 must decay to 950 after the next boundary: 1h - 10m + 1h*(1-950/990)
				RetryAfter: 50*time.Minute + 145_455*time.Millisecond,
				Message:    "Rate limit reached for user alice on limit prompt-hourly (prompt_tokens): limit 1000, used 990, requested 50. Please try again in 52m26s.",
			},
		},
		{
			name: "requests, previous window decaying",
			lim:  Limit{Name: "req-minute", Metric: MetricRequests, Limit: 10, Window: time.Hour},
			prev: 20, cur: 0, ask: 1,
			want: Rejection{
				Limit: "req-minute", Metric: MetricRequests, Type: "requests",
				LimitValue: 10, Remaining: 0, Reset: 50 * time.Minute,
				// used = ceil(20*(60-x)/60) <= 9 from x = 33m: 23m from now
				RetryAfter: 23 * time.Minute,
				Message:    "Rate limit reached for user alice on limit req-minute (requests): limit 10, used 17, requested 1. Please try again in 23m.",
			},
		},
		{
			name: "completion tokens",
			lim:  Limit{Name: "c", Metric: MetricCompletionTokens, Limit: 100, Window: time.Hour},
			prev: 0, cur: 150, ask: 5,
			want: Rejection{
				Limit: "c", Metric: MetricCompletionTokens, Type: "tokens",
				LimitValue: 100, Remaining: 0, Reset: 110 * time.Minute,
				// 150 must decay to 99 after the boundary: 50m + floor-based 20m24s
				RetryAfter: 50*time.Minute + 20*time.Minute + 24*time.Second,
				Message:    "Rate limit reached for user alice on limit c (completion_tokens): limit 100, used 150. Please try again in 1h10m24s.",
			},
		},
		{
			name: "oversize: window length",
			lim:  Limit{Name: "t", Metric: MetricTotalTokens, Limit: 100, Window: 30 * time.Minute},
			ask:  101,
			want: Rejection{
				Limit: "t", Metric: MetricTotalTokens, Type: "tokens",
				LimitValue: 100, Remaining: 100, Reset: 0, RetryAfter: 30 * time.Minute,
				Message: "Request too large for user alice on limit t (total_tokens): it needs 101 tokens but the whole limit is 100 per 30m, so it can never be admitted. Reduce the prompt.",
				Never:   true,
			},
		},
		{
			name: "short window clamps RetryAfter to 1s",
			lim:  Limit{Name: "fast", Metric: MetricRequests, Limit: 1, Window: 200 * time.Millisecond},
			cur:  1, ask: 1,
			want: Rejection{
				Limit: "fast", Metric: MetricRequests, Type: "requests",
				LimitValue: 1, Remaining: 0, Reset: 400 * time.Millisecond, RetryAfter: time.Second,
				Message: "Rate limit reached for user alice on limit fast (requests): limit 1, used 1, requested 1. Please try again in 1s.",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			size := tt.lim.Window.Milliseconds()
			now := t0 + min10%size
			cs := spanAt(now, size).start
			st.Add(tt.lim.Name, "alice", cs-size, size, tt.prev)
			st.Add(tt.lim.Name, "alice", cs, size, tt.cur)
			l := newTest(t, policy(tt.lim), st, Options{Now: newClock(now).Now})
			got := rejected(t, l, "alice", "m", tt.ask)
			if *got != tt.want {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
			if got.Error() != got.Message {
				t.Errorf("Error() = %q, want the message", got.Error())
			}
		})
	}
}

// TestRetryAfterIsEarliest checks, on random states, that the request is still refused just
// before RetryAfter and admitted at RetryAfter (for refusals that can clear).
func TestRetryAfterIsEarliest(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	metrics := []Metric{MetricPromptTokens, MetricTotalTokens, MetricCompletionTokens, MetricRequests}
	checked := 0
	for i := 0; i < 400; i++ {
		lim := Limit{Name: "x", Metric: metrics[rng.IntN(len(metrics))], Limit: 1 + rng.Int64N(1000), Window: time.Duration(1+rng.IntN(120)) * time.Second}
		size := lim.Window.Milliseconds()
		now := t0 + rng.Int64N(10*size)
		cs := spanAt(now, size).start
		prev, cur, ask := rng.Int64N(2*lim.Limit), rng.Int64N(2*lim.Limit), rng.Int64N(lim.Limit+1)

		st := newMapStore()
		st.Add("x", "u", cs-size, size, prev)
		st.Add("x", "u", cs, size, cur)
		clk := newClock(now)
		l := newTest(t, policy(lim), st, Options{Now: clk.Now})
		_, err := l.Admit("u", "m", est(ask, nil))
		if err == nil {
			continue
		}
		rej := err.(*Rejection)
		if rej.RetryAfter < time.Second {
			t.Fatalf("RetryAfter = %v, want >= 1s", rej.RetryAfter)
		}
		if rej.RetryAfter > time.Second {
			clk.Set(now + (rej.RetryAfter - time.Millisecond).Milliseconds())
			if _, err := l.Admit("u", "m", est(ask, nil)); err == nil {
				t.Fatalf("%+v prev %d cur %d ask %d: admitted 1ms before RetryAfter %v", lim, prev, cur, ask, rej.RetryAfter)
			}
			clk.Set(now + (rej.RetryAfter - time.Second).Milliseconds())
			if _, err := l.Admit("u", "m", est(ask, nil)); err == nil {
				t.Fatalf("%+v prev %d cur %d ask %d: admitted 1s before RetryAfter %v", lim, prev, cur, ask, rej.RetryAfter)
			}
		}
		clk.Set(now + rej.RetryAfter.Milliseconds())
		if _, err := l.Admit("u", "m", est(ask, nil)); err != nil {
			t.Fatalf("%+v prev %d cur %d ask %d: at RetryAfter %v: %v", lim, prev, cur, ask, rej.RetryAfter, err)
		}
		checked++
	}
	if checked < 100 {
		t.Fatalf("only %d refusals checked, want at least 100", checked)
	}
}

func TestRejectionReportsLongestWait(t *testing.T) {
	st := newMapStore()
	st.Add("minute", "u", t0, 60_000, 10)
	st.Add("hour", "u", t0, hour, 10)
	st.Add("big", "u", t0, hour, 10)
	l := newTest(t, policy(
		Limit{Name: "minute", Metric: MetricRequests, Limit: 10, Window: time.Minute},
		Limit{Name: "hour", Metric: MetricRequests, Limit: 10, Window: time.Hour},
		Limit{Name: "big", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour},
	), st, Options{Now: newClock(t0 + 1000).Now})
	if got := rejected(t, l, "u", "m", 5); got.Limit != "hour" {
		t.Errorf("refusing limit = %s, want hour (longest wait)", got.Limit)
	}
	if got := rejected(t, l, "u", "m", 5000); got.Limit != "big" || !strings.HasPrefix(got.Message, "Request too large") {
		t.Errorf("refusing limit = %s (%q), want big: a request that never fits comes first", got.Limit, got.Message)
	}
	if n := st.adds; n != 3 {
		t.Errorf("store adds = %d, want 3 (nothing reserved on refusal)", n)
	}
}
