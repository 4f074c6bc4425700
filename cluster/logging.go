package cluster

import (
	"bytes"
	"log"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// logEvery is how often one kind of warning or error about gossip is logged:
// a flood of junk or wrongly keyed packets writes one line per reason per
// logEvery, with the count of lines suppressed since. The dropped-messages
// metric still counts every one.
const logEvery = 10 * time.Second

// maxLogReasons bounds the reasons a logLimiter tells apart; past it, new
// reasons share one budget (a reason may hold text a peer chose).
const maxLogReasons = 64

// logLimiter lets one line per reason through per period. Safe for
// concurrent use; a nil *logLimiter lets every line through.
type logLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	every   time.Duration
	reasons map[string]*logBudget
}

type logBudget struct {
	last       time.Time
	suppressed int
}

func newLogLimiter(now func() time.Time, every time.Duration) *logLimiter {
	return &logLimiter{now: now, every: every, reasons: map[string]*logBudget{}}
}

// allow reports whether a line of reason may be logged now and, when it
// may, how many lines of that reason were suppressed since the last one.
func (l *logLimiter) allow(reason string) (ok bool, suppressed int) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.reasons[reason]
	if b == nil && len(l.reasons) >= maxLogReasons {
		for r, old := range l.reasons { // forget reasons quiet for a period
			if now.Sub(old.last) >= l.every && old.suppressed == 0 {
				delete(l.reasons, r)
			}
		}
		if len(l.reasons) >= maxLogReasons {
			reason = otherReason
			b = l.reasons[reason]
		}
	}
	if b == nil {
		l.reasons[reason] = &logBudget{last: now}
		return true, 0
	}
	if now.Sub(b.last) < l.every {
		b.suppressed++
		return false, 0
	}
	suppressed, b.last, b.suppressed = b.suppressed, now, 0
	return true, suppressed
}

// otherReason is the budget shared by reasons past maxLogReasons.
const otherReason = "\x00other"

// logWriter turns memberlist's "[LEVEL] memberlist: text" lines into zerolog
// events of the matching level. Warnings and errors are rate-limited per
// reason (the text before its first ": "), so that junk packets, each of
// which memberlist reports, cannot flood the log. A key mismatch, which
// memberlist reports as a decryption error, is logged as a warning that
// says so.
type logWriter struct {
	log     zerolog.Logger
	lim     *logLimiter // nil: no limit
	refused func()      // counts a packet refused for a key mismatch; nil: not counted
}

func newStdLogger(l zerolog.Logger, lim *logLimiter, refused func()) *log.Logger {
	return log.New(logWriter{l, lim, refused}, "", 0)
}

func (w logWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimSpace(p)
	lvl := zerolog.InfoLevel
	for _, l := range []struct {
		tag string
		lvl zerolog.Level
	}{{"[DEBUG]", zerolog.DebugLevel}, {"[INFO]", zerolog.InfoLevel}, {"[WARN]", zerolog.WarnLevel}, {"[ERR]", zerolog.ErrorLevel}} {
		if bytes.HasPrefix(msg, []byte(l.tag)) {
			lvl, msg = l.lvl, bytes.TrimSpace(msg[len(l.tag):])
			break
		}
	}
	msg = bytes.TrimPrefix(msg, []byte("memberlist: "))
	if lvl < zerolog.WarnLevel {
		w.log.WithLevel(lvl).Msg(string(msg))
		return len(p), nil
	}
	text := string(msg)
	reason, _, _ := bytes.Cut(msg, []byte(": "))
	if len(reason) > 64 {
		reason = reason[:64]
	}
	mismatch := isKeyMismatch(text)
	if mismatch {
		lvl, reason = zerolog.WarnLevel, []byte("key mismatch")
		if w.refused != nil {
			// memberlist drops such packets before any delegate sees them;
			// its log line is the only place they show.
			w.refused()
		}
	}
	ok, suppressed := w.lim.allow("memberlist: " + string(reason))
	if !ok {
		return len(p), nil
	}
	e := w.log.WithLevel(lvl)
	if suppressed > 0 {
		e = e.Int("suppressed", suppressed)
	}
	if mismatch {
		// memberlist's text names the peer (from=ip:port) and the failure, never a key.
		e.Str("detail", text).Msg("gossip refused: a peer does not share our cluster.secret_key (a different key, or none on one side)")
		return len(p), nil
	}
	e.Msg(text)
	return len(p), nil
}
