package limiter

import "time"

// Calendar names a fixed calendar window, counted in UTC. A limit with a Calendar counts what
// its user used since the window began (midnight, or 00:00 on the first of the month) and
// forgets all of it when the next one begins: finance teams count budgets that way, and a
// sliding window would make a monthly budget end on no particular day.
type Calendar string

// The calendar windows.
const (
	CalendarDay   Calendar = "calendar_day"   // from 00:00:00 UTC to the next midnight
	CalendarMonth Calendar = "calendar_month" // from 00:00:00 UTC on the 1st to the next 1st
)

// dayMs is a calendar day in Unix milliseconds: Unix time has no leap seconds, so every UTC day
// is 86,400,000 ms and days are aligned to Unix time.
const dayMs = 24 * 3600 * 1000

// calendarSpan returns the fixed window of kind c holding instant nowMs.
//
// Counter keys are (start, size) as for sliding windows, so the store needs nothing new: a day
// is the Unix-aligned window of 86,400,000 ms, a month is keyed by its first millisecond and its
// own length (28, 29, 30 or 31 days). The store drops a key two of its sizes after its start,
// long after the window stops counting, exactly as it drops sliding windows.
func calendarSpan(c Calendar, nowMs int64) span {
	if c == CalendarDay {
		s := spanAt(nowMs, dayMs)
		s.fixed = true
		return s
	}
	y, m, _ := time.UnixMilli(nowMs).UTC().Date()
	start := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	end := time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC).UnixMilli() // December + 1 is next January
	return span{size: end - start, start: start, elapsed: nowMs - start, fixed: true}
}

// text is how messages name the window.
func (c Calendar) text() string {
	if c == CalendarDay {
		return "calendar day (UTC)"
	}
	return "calendar month (UTC)"
}
