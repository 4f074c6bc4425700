package main

import (
	"bufio"
	"io"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/genai-gateway/genai-gateway/config"
)

// newLogger builds the process logger from the log section: JSON lines or a
// human-readable console format, at the configured level.
func newLogger(c config.Log, out io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(strings.ToLower(c.Level))
	if err != nil || level == zerolog.NoLevel {
		level = zerolog.InfoLevel
	}
	w := out
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339, NoColor: !isTerminal(terminalOf(out))}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// terminalOf is the writer a bufferedWriter writes to, or w.
func terminalOf(w io.Writer) io.Writer {
	if b, ok := w.(*bufferedWriter); ok {
		return b.out
	}
	return w
}

// isTerminal reports whether w is a character device (a terminal): colours
// only there, never in files or pipes.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// newStdLogger adapts a zerolog logger for libraries that take a *log.Logger.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(stdWriter{l}, "", 0)
}

type stdWriter struct{ l zerolog.Logger }

func (w stdWriter) Write(p []byte) (int, error) {
	w.l.Warn().Msg(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// logFlushInterval bounds how long a log line waits in the buffer.
const logFlushInterval = 100 * time.Millisecond

// bufferedWriter gathers log lines in memory and writes them out when the
// buffer fills, every logFlushInterval, and on Close: one write(2) for many
// access-log lines instead of one each. Safe for concurrent use; its
// goroutine is stopped by Close.
type bufferedWriter struct {
	mu   sync.Mutex
	out  io.Writer
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

func newBufferedWriter(out io.Writer) *bufferedWriter {
	b := &bufferedWriter{out: out, w: bufio.NewWriterSize(out, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

func (b *bufferedWriter) loop() {
	defer close(b.done)
	t := time.NewTicker(logFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.Flush()
		case <-b.stop:
			return
		}
	}
}

// Flush writes out what is buffered.
func (b *bufferedWriter) Flush() {
	b.mu.Lock()
	_ = b.w.Flush()
	b.mu.Unlock()
}

// Close stops the flusher and writes out what is left. Lines written after
// Close are still buffered and written by a later Flush.
func (b *bufferedWriter) Close() {
	close(b.stop)
	<-b.done
	b.Flush()
}
