package limiter

import (
	"errors"
	"testing"
	"time"
)

// ms is the Unix millisecond of a UTC instant.
func ms(y int, m time.Month, d, h, min, s, milli int) int64 {
	return time.Date(y, m, d, h, min, s, milli*1e6, time.UTC).UnixMilli()
}

func TestCalendarSpan(t *testing.T) {
	const day = int64(dayMs)
	tests := []struct {
		name      string
		c         Calendar
		now       int64
		start     int64
		days      int64
		wantElaps int64
	}{
		{"February of 28 days, last ms", CalendarMonth, ms(2027, 2, 28, 23, 59, 59, 999), ms(2027, 2, 1, 0, 0, 0, 0), 28, 28*day - 1},
		{"March 1st, first ms", CalendarMonth, ms(2027, 3, 1, 0, 0, 0, 0), ms(2027, 3, 1, 0, 0, 0, 0), 31, 0},
		{"February of 29 days (2028)", CalendarMonth, ms(2028, 2, 29, 12, 0, 0, 0), ms(2028, 2, 1, 0, 0, 0, 0), 29, 28*day + day/2},
		{"February of 28 days (2100 is not leap)", CalendarMonth, ms(2100, 2, 28, 0, 0, 0, 0), ms(2100, 2, 1, 0, 0, 0, 0), 28, 27 * day},
		{"April of 30 days", CalendarMonth, ms(2027, 4, 30, 23, 59, 59, 999), ms(2027, 4, 1, 0, 0, 0, 0), 30, 30*day - 1},
		{"January of 31 days", CalendarMonth, ms(2027, 1, 31, 6, 0, 0, 0), ms(2027, 1, 1, 0, 0, 0, 0), 31, 30*day + day/4},
		{"December, year end", CalendarMonth, ms(2027, 12, 31, 23, 59, 59, 999), ms(2027, 12, 1, 0, 0, 0, 0), 31, 31*day - 1},
		{"new year", CalendarMonth, ms(2028, 1, 1, 0, 0, 0, 0), ms(2028, 1, 1, 0, 0, 0, 0), 31, 0},
		{"day: last ms", CalendarDay, ms(2027, 2, 28, 23, 59, 59, 999), ms(2027, 2, 28, 0, 0, 0, 0), 1, day - 1},
		{"day: midnight", CalendarDay, ms(2028, 2, 29, 0, 0, 0, 0), ms(2028, 2, 29, 0, 0, 0, 0), 1, 0},
		{"day: year end", CalendarDay, ms(2027, 12, 31, 12, 0, 0, 0), ms(2027, 12, 31, 0, 0, 0, 0), 1, day / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := calendarSpan(tt.c, tt.now)
			want := span{start: tt.start, size: tt.days * day, elapsed: tt.wantElaps, fixed: true}
			if s != want {
				t.Errorf("got %+v, want %+v", s, want)
			}
		})
	}
}

// TestCalendarMonthTurns: at the last millisecond of every kind of month (28, 29, 30 and 31
// days, and December) a spent monthly budget refuses with Retry-After 1s (the minimum) and a
// reset of 1ms; /usage says the same; one millisecond later the new month admits and counts
// in a key of its own, keyed by its first millisecond and its own length, while a reservation
// made in the old month settles into the old month's key.
func TestCalendarMonthTurns(t *testing.T) {
	for _, tt := range []struct {
		name       string
		last       int64 // last millisecond of the month
		days, next int64 // days of the month and of the next
	}{
		{"February 2027 (28 days)", ms(2027, 2, 28, 23, 59, 59, 999), 28, 31},
		{"February 2028 (29 days)", ms(2028, 2, 29, 23, 59, 59, 999), 29, 31},
		{"April 2027 (30 days)", ms(2027, 4, 30, 23, 59, 59, 999), 30, 31},
		{"January 2027 (31 days)", ms(2027, 1, 31, 23, 59, 59, 999), 31, 28},
		{"December 2027 (year end)", ms(2027, 12, 31, 23, 59, 59, 999), 31, 31},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			clock := newClock(tt.last)
			p := policy(
				Limit{Name: "monthly", Metric: MetricCostUSD, Limit: NanoUSD(50), Calendar: CalendarMonth},
				Limit{Name: "req", Metric: MetricRequests, Limit: 1000, Calendar: CalendarMonth},
			)
			p.Prices = []Price{{Models: []string{"*"}, Input: 1, CachedInput: 1, Output: 1}}
			l := newTest(t, p, st, Options{Now: clock.Now})
			size := tt.days * dayMs
			start := tt.last + 1 - size
			nextStart, nextSize := tt.last+1, tt.next*dayMs

			// A request admitted in the last second, settled after the turn.
			clock.Set(tt.last - 500)
			early, err := l.Admit("u", "m", Tokens(1_000_000)) // $1
			if err != nil {
				t.Fatal(err)
			}
			st.Add("monthly", "u", start, size, NanoUSD(49)) // the budget is spent
			clock.Set(tt.last)
			_, err = l.Admit("u", "m", Tokens(1))
			var rej *Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("spent budget at the last ms: got %v, want a refusal", err)
			}
			if rej.Limit != "monthly" || rej.RetryAfter != time.Second || rej.Reset != time.Millisecond || rej.Never {
				t.Errorf("refusal: limit %s, Retry-After %v, reset %v, never %v; want monthly, 1s, 1ms, false",
					rej.Limit, rej.RetryAfter, rej.Reset, rej.Never)
			}
			for _, u := range l.Usage("u") {
				if u.Name == "monthly" && (u.Window != "calendar_month" || u.Used != NanoUSD(50) || u.ResetSeconds != 1) {
					t.Errorf("usage at the last ms: %+v, want calendar_month, used 50e9, reset 1s", u)
				}
			}

			clock.Advance(time.Millisecond) // the new month
			r, err := l.Admit("u", "m", Tokens(2_000_000))
			if err != nil {
				t.Fatalf("first ms of the new month: %v", err)
			}
			r.Settle(Usage{PromptTokens: 2_000_000})
			early.Settle(Usage{PromptTokens: 500_000}) // $0.50 into the old month
			if got := st.get("monthly", "u", nextStart, nextSize); got != NanoUSD(2) {
				t.Errorf("new month's key (%d, %d) = %d, want %d", nextStart, nextSize, got, NanoUSD(2))
			}
			if got := st.get("monthly", "u", start, size); got != NanoUSD(49.5) {
				t.Errorf("old month's key = %d, want %d (the early request settled where it was reserved)", got, NanoUSD(49.5))
			}
			for _, u := range l.Usage("u") {
				want := map[string]int64{"monthly": NanoUSD(2), "req": 1}[u.Name]
				if u.Used != want || u.ResetSeconds != nextSize/1000 {
					t.Errorf("usage in the new month: %+v, want used %d, reset %ds", u, want, nextSize/1000)
				}
			}
			// The store drops a key two sizes after its start: the old month's key is kept
			// while the month counts and dropped within one further month of its end.
			if end, drop := start+size, start+2*size; drop < end || drop > end+31*dayMs {
				t.Errorf("old key dropped at %d, want within a month after its end %d", drop, end)
			}
		})
	}
}

// TestCalendarRetryAfter: Retry-After and reset count to the turn of the window exactly, for
// a day and for a month, and a request larger than the whole budget waits a whole window.
func TestCalendarRetryAfter(t *testing.T) {
	tests := []struct {
		name      string
		lim       Limit
		now       int64
		start     int64
		size      int64
		seed, ask int64
		wantRetry time.Duration
		never     bool
	}{
		{"day, 30s before midnight", Limit{Name: "d", Metric: MetricPromptTokens, Limit: 100, Calendar: CalendarDay},
			ms(2027, 12, 31, 23, 59, 30, 0), ms(2027, 12, 31, 0, 0, 0, 0), dayMs, 100, 1, 30 * time.Second, false},
		{"month, mid-February 2028", Limit{Name: "m", Metric: MetricTotalTokens, Limit: 100, Calendar: CalendarMonth},
			ms(2028, 2, 15, 12, 0, 0, 0), ms(2028, 2, 1, 0, 0, 0, 0), 29 * dayMs, 90, 20, 14*24*time.Hour + 12*time.Hour, false},
		{"month, 2.5s before the turn rounds up", Limit{Name: "m", Metric: MetricRequests, Limit: 1, Calendar: CalendarMonth},
			ms(2027, 6, 30, 23, 59, 57, 500), ms(2027, 6, 1, 0, 0, 0, 0), 30 * dayMs, 1, 1, 2500 * time.Millisecond, false},
		{"too large: a whole month", Limit{Name: "m", Metric: MetricPromptTokens, Limit: 100, Calendar: CalendarMonth},
			ms(2027, 2, 10, 0, 0, 0, 0), ms(2027, 2, 1, 0, 0, 0, 0), 28 * dayMs, 0, 101, 28 * 24 * time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			st.Add(tt.lim.Name, "u", tt.start, tt.size, tt.seed)
			// A sliding window's previous window must not count: seed where it would be.
			st.Add(tt.lim.Name, "u", tt.start-tt.size, tt.size, 1000)
			l := newTest(t, policy(tt.lim), st, Options{Now: newClock(tt.now).Now})
			rej := rejected(t, l, "u", "m", tt.ask)
			if rej.RetryAfter != tt.wantRetry || rej.Never != tt.never {
				t.Errorf("Retry-After %v never %v, want %v %v", rej.RetryAfter, rej.Never, tt.wantRetry, tt.never)
			}
			if want := time.Duration(tt.start+tt.size-tt.now) * time.Millisecond; tt.seed > 0 && rej.Reset != want {
				t.Errorf("reset %v, want %v", rej.Reset, want)
			}
			if st.get(tt.lim.Name, "u", tt.start, tt.size) != tt.seed {
				t.Error("a refused request was reserved")
			}
		})
	}
	// One millisecond after the turn the same request is admitted.
	st := newMapStore()
	st.Add("d", "u", ms(2027, 12, 31, 0, 0, 0, 0), dayMs, 100)
	l := newTest(t, policy(Limit{Name: "d", Metric: MetricPromptTokens, Limit: 100, Calendar: CalendarDay}), st,
		Options{Now: newClock(ms(2028, 1, 1, 0, 0, 0, 0)).Now})
	if _, err := l.Admit("u", "m", Tokens(100)); err != nil {
		t.Errorf("new day: %v", err)
	}
}
