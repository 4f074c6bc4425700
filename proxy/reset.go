package proxy

import (
	"strconv"
	"time"
)

// appendReset appends d as formatReset writes it, OpenAI's format of
// x-ratelimit-reset-* ("6m0s", "1.5s", "250ms": a Go duration rounded to the
// millisecond, at least 1ms; "0s" when d is not positive), without
// allocating: it is on every metered response (x-gateway-ratelimit-reset-*).
func appendReset(b []byte, d time.Duration) []byte {
	if d <= 0 {
		return append(b, "0s"...)
	}
	ms := int64(max(d.Round(time.Millisecond), time.Millisecond) / time.Millisecond)
	if ms < 1000 {
		return append(strconv.AppendInt(b, ms, 10), "ms"...)
	}
	h, m, s, frac := ms/3_600_000, ms/60_000%60, ms/1000%60, ms%1000
	if h > 0 {
		b = append(strconv.AppendInt(b, h, 10), 'h')
	}
	if h > 0 || m > 0 {
		b = append(strconv.AppendInt(b, m, 10), 'm')
	}
	b = strconv.AppendInt(b, s, 10)
	if frac > 0 {
		digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
		n := 3
		for digits[n-1] == '0' {
			n--
		}
		b = append(append(b, '.'), digits[:n]...)
	}
	return append(b, 's')
}
