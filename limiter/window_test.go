package limiter

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestSpanAt(t *testing.T) {
	const w = 60_000
	tests := []struct {
		name               string
		now                int64
		wantStart, wantEla int64
	}{
		{"on boundary", 10 * w, 10 * w, 0},
		{"1ms before boundary", 10*w - 1, 9 * w, w - 1},
		{"1ms after boundary", 10*w + 1, 10 * w, 1},
		{"halfway", 10*w + w/2, 10 * w, w / 2},
		{"zero", 0, 0, 0},
		{"before 1970", -1, -w, w - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := spanAt(tt.now, w)
			if s.start != tt.wantStart || s.elapsed != tt.wantEla || s.size != w {
				t.Errorf("spanAt(%d, %d) = %+v, want start %d elapsed %d", tt.now, w, s, tt.wantStart, tt.wantEla)
			}
		})
	}
}

func TestSlidingUsed(t *testing.T) {
	const w = 60_000
	tests := []struct {
		name      string
		elapsed   int64
		cur, prev int64
		want      int64
	}{
		{"on boundary: previous counts whole", 0, 0, 1000, 1000},
		{"1ms after boundary", 1, 0, 60_000, 59_999},
		{"1ms after boundary rounds up", 1, 0, 1000, 1000},                 // 999.98 -> 1000
		{"1ms before boundary", w - 1, 0, 60_000, 1},                       // 1/60000 of it
		{"1ms before boundary rounds up", w - 1, 0, 1000, 1},               // 0.0167 -> 1
		{"halfway", w / 2, 100, 1000, 600},                                 // 100 + 500
		{"halfway odd rounds up", w / 2, 0, 3, 2},                          // 1.5 -> 2
		{"current only", w / 3, 42, 0, 42},                                 //
		{"negative counts are zero", w / 2, -5, -10, 0},                    // transient PN state
		{"huge values do not overflow", w / 2, 0, 1 << 62, 1 << 61},        //
		{"saturates", 0, 1<<63 - 1, 1<<63 - 1, 1<<63 - 1},                  //
		{"quarter", w / 4, 0, 1000, 750},                                   //
		{"three quarters", 3 * w / 4, 10, 1000, 260},                       //
		{"never under-estimates", 7, 0, 999_999, ceilRef(999_999, w-7, w)}, //
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := span{size: w, start: 0, elapsed: tt.elapsed}
			if got := slidingUsed(tt.cur, tt.prev, s); got != tt.want {
				t.Errorf("slidingUsed(cur %d, prev %d, elapsed %d) = %d, want %d", tt.cur, tt.prev, tt.elapsed, got, tt.want)
			}
		})
	}
}

func ceilRef(a, b, c int64) int64 { return (a*b + c - 1) / c }

// TestWaitForMatchesBruteForce checks waitFor against a scan, millisecond by millisecond, of
// the usage over the next two windows (rolling the fixed windows over as time passes).
func TestWaitForMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		w := int64(1 + rng.IntN(50))
		cur, prev := rng.Int64N(100), rng.Int64N(100)
		s := span{size: w, elapsed: rng.Int64N(w)}
		target := rng.Int64N(220) - 10
		got, ok := waitFor(cur, prev, s, target)
		want, wantOK := bruteWait(cur, prev, s, target)
		if got != want || ok != wantOK {
			t.Fatalf("waitFor(cur %d, prev %d, W %d, elapsed %d, target %d) = %d,%v, want %d,%v",
				cur, prev, w, s.elapsed, target, got, ok, want, wantOK)
		}
	}
}

func bruteWait(cur, prev int64, s span, target int64) (int64, bool) {
	for d := int64(0); d <= 2*s.size; d++ {
		x := s.elapsed + d
		var used int64
		switch {
		case x < s.size:
			used = slidingUsed(cur, prev, span{size: s.size, elapsed: x})
		case x < 2*s.size:
			used = slidingUsed(0, cur, span{size: s.size, elapsed: x - s.size})
		}
		if used <= target {
			return d, true
		}
	}
	return 0, false
}

func TestWaitForEdges(t *testing.T) {
	const w = 60_000
	tests := []struct {
		name              string
		cur, prev, target int64
		elapsed           int64
		want              int64
		wantOK            bool
	}{
		{"already fits", 10, 10, 100, 0, 0, true},
		{"negative target never", 0, 0, -1, 0, 0, false},
		{"previous decays to fit halfway", 0, 1000, 500, 0, w / 2, true},
		{"previous decays, already a quarter in", 0, 1000, 500, w / 4, w / 4, true},
		{"needs the boundary", 500, 1000, 500, 0, w, true},
		{"needs the boundary, 1ms before it", 500, 1000, 500, w - 1, 1, true},
		{"current decays after the boundary", 1000, 0, 250, 0, w + 3*w/4, true},
		{"target zero waits two windows", 1, 0, 0, 0, 2 * w, true},
		{"target zero from the previous window", 0, 1, 0, w / 2, w / 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := span{size: w, elapsed: tt.elapsed}
			got, ok := waitFor(tt.cur, tt.prev, s, tt.target)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %d,%v, want %d,%v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestResetAfter(t *testing.T) {
	const w = 1000
	tests := []struct {
		name               string
		cur, prev, elapsed int64
		want               int64
	}{
		{"empty", 0, 0, 300, 0},
		{"previous only", 0, 5, 300, 700},
		{"current", 5, 5, 300, 1700},
		{"on boundary", 5, 0, 0, 2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resetAfter(tt.cur, tt.prev, span{size: w, elapsed: tt.elapsed}); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestFormatWindow(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{time.Hour, "1h"},
		{time.Minute, "1m"},
		{30 * time.Second, "30s"},
		{90 * time.Minute, "1h30m"},
		{90 * time.Second, "1m30s"},
		{250 * time.Millisecond, "250ms"},
		{24 * time.Hour, "24h"},
		{time.Hour + time.Second, "1h0m1s"},
	}
	for _, tt := range tests {
		if got := formatWindow(tt.d); got != tt.want {
			t.Errorf("formatWindow(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
