package limiter

import "math/bits"

// Sliding windows are made of two fixed windows aligned to Unix time. For a window of size W
// milliseconds at instant t, the current fixed window starts at s = floor(t/W)*W and
//
//	used(t) = cur + ceil(prev * (W - (t-s)) / W)
//
// where cur and prev are the counts of the current and previous fixed windows. The previous
// window's weight falls linearly from 1 (at t = s) towards 0 (at t = s+W); at s+W the current
// window becomes the previous one. Rounding up means used is never under-estimated, and
// over-estimated by less than one token. All arithmetic is in integers with 128-bit
// intermediates, so no product overflows.
//
// Calendar windows (calendar.go) are fixed, not sliding: their span is marked fixed, usage is
// the current window alone, and everything is released when it ends.

// span is where an instant falls among a limit's fixed windows, in Unix milliseconds.
type span struct {
	size    int64 // window length W
	start   int64 // start of the current fixed window: floor(t/W)*W
	elapsed int64 // t - start, in [0, W)
	fixed   bool  // a calendar window: the previous window does not count
}

// spanAt returns the span of instant nowMs for windows of size ms.
func spanAt(nowMs, size int64) span {
	e := nowMs % size
	if e < 0 { // floor, not truncation, before 1970
		e += size
	}
	return span{size: size, start: nowMs - e, elapsed: e}
}

// slidingUsed returns the sliding usage of a window whose current and previous fixed windows
// hold cur and prev. Negative counts (transiently possible with a PN-counter) count as 0.
func slidingUsed(cur, prev int64, s span) int64 {
	if s.fixed {
		return max(cur, 0)
	}
	return satAdd(max(cur, 0), mulDiv(max(prev, 0), s.size-s.elapsed, s.size, true))
}

// waitFor returns how many milliseconds from now the sliding usage falls to target or below,
// assuming nothing more is added: 0 if it already is, and ok=false if it never will (target < 0).
//
// The usage is piecewise linear in time. Before the next boundary (x = t-s in [elapsed, W))
// it is cur + ceil(prev*(W-x)/W), which is <= target exactly when
// W-x <= floor((target-cur)*W/prev). After it (x' = t-(s+W) in [0, W)) the old current window
// is the previous one and the usage is ceil(cur*(W-x')/W), <= target exactly when
// W-x' <= floor(target*W/cur). From s+2W on the usage is 0.
func waitFor(cur, prev int64, s span, target int64) (ms int64, ok bool) {
	if target < 0 {
		return 0, false
	}
	cur, prev = max(cur, 0), max(prev, 0)
	if slidingUsed(cur, prev, s) <= target {
		return 0, true
	}
	w := s.size
	if s.fixed { // everything is released when the window ends
		return w - s.elapsed, true
	}
	// Before the boundary: possible only if the current window alone fits. Since it does not
	// fit now, prev > 0 and target-cur < prev, so the quotient is below W.
	if d := target - cur; d >= 0 && prev > 0 && d < prev {
		if x := w - mulDiv(d, w, prev, false); x < w {
			return x - s.elapsed, true
		}
	}
	// After the boundary.
	if cur <= target {
		return w - s.elapsed, true
	}
	x := w - mulDiv(target, w, cur, false) // target < cur, so x in (0, W]
	return w - s.elapsed + x, true
}

// resetAfter returns how many milliseconds from now the sliding usage falls to 0, assuming
// nothing more is added: the end of the window after the current one while the current window
// holds anything, else the next boundary while the previous one does. A fixed window is
// released at its end.
func resetAfter(cur, prev int64, s span) int64 {
	switch {
	case cur > 0 && s.fixed:
		return s.size - s.elapsed
	case cur > 0:
		return 2*s.size - s.elapsed
	case prev > 0:
		return s.size - s.elapsed
	}
	return 0
}

// mulDiv returns a*b/c rounded down, or up when ceil is set, for a, b >= 0 and c > 0, computed
// with a 128-bit product. The quotient must fit in an int64: callers ensure b <= c (the result is
// then at most a) or a < c (the result is then below b).
func mulDiv(a, b, c int64, ceil bool) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	q, r := bits.Div64(hi, lo, uint64(c))
	if ceil && r != 0 {
		q++
	}
	return int64(q)
}

// ceilDiv returns ceil(a/b) for a >= 0, b > 0.
func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 {
		q++
	}
	return q
}

// satAdd returns a+b for non-negative a and b, saturating at the largest int64.
func satAdd(a, b int64) int64 {
	if s := a + b; s >= a {
		return s
	}
	return 1<<63 - 1
}
