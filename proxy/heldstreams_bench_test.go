package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHeldStreams holds BENCH_STREAMS (default 10,000) slow streams
// open at once, each past its first event, and reports the memory the
// gateway holds per stream in flight: heap and stacks with the streams held
// through the gateway, minus the same streams held straight against the
// upstream (the test client and upstream live in this process too), over
// the count. Run it alone: go test -run '^$' -bench HeldStreams
// -benchtime=1x ./proxy/ (each stream takes four descriptors here; the
// benchmark raises the descriptor limit as far as it may).
func BenchmarkHeldStreams(b *testing.B) {
	n := 10000
	if s := os.Getenv("BENCH_STREAMS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	n = min(n, (fdBudget()-300)/4)
	if n < 100 {
		b.Fatalf("descriptor limit too low for a meaningful run (%d streams)", n)
	}
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, sseEvent(0))
		w.(http.Flusher).Flush()
		select { // the direct streams end when their client hangs up
		case <-release:
			fmt.Fprint(w, "data: [DONE]\n\n")
		case <-r.Context().Done():
		}
	}))
	up.Config.MaxHeaderBytes = 4096
	up.Start()
	b.Cleanup(up.Close)
	b.Cleanup(free)
	cfg := Config{Upstreams: []Upstream{{Name: "up0", URL: up.URL, Timeout: time.Hour}}, MaxConnections: n + 100}
	e := newEnv(b, cfg, nil)

	direct := heldMemory(b, strings.TrimPrefix(up.URL, "http://"), n)
	via := heldMemory(b, strings.TrimPrefix(e.srv.URL, "http://"), n)
	free()
	b.ReportMetric(float64(n), "streams")
	b.ReportMetric(float64(via-direct)/float64(n)/1024, "KiB/stream")
	b.ReportMetric(float64(via)/(1<<20), "MiB-total")
}

// heldMemory opens n streams to addr, waits until each has its first
// event, and returns heap+stack in use with all of them open; then closes
// them.
func heldMemory(b *testing.B, addr string, n int) uint64 {
	b.Helper()
	req := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nUser: u\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
	body := `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatalf("stream %d: %v", i, err)
		}
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			if _, err := fmt.Fprintf(c, req, len(body), body); err != nil {
				errs <- err
				return
			}
			br := bufio.NewReaderSize(c, 512)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					errs <- fmt.Errorf("before the first event: %w", err)
					return
				}
				if strings.HasPrefix(line, "data: ") {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// fdBudget raises the descriptor limit as far as allowed and returns it.
func fdBudget() int {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 1024
	}
	want := l
	want.Cur, want.Max = max(l.Max, 65536), max(l.Max, 65536)
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
		return int(want.Cur)
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	return int(l.Cur)
}
