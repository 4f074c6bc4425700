package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for the server goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	addrc := make(chan string, 1)
	done := make(chan int, 1)
	go func() {
		done <- serve(ctx, []string{"--addr", "127.0.0.1:0", "--token-latency", "1ms", "--no-usage"}, &logs,
			func(addr string) { addrc <- addr })
	}()

	var addr string
	select {
	case addr = <-addrc:
	case code := <-done:
		t.Fatalf("serve exited with %d before listening: %s", code, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not listen within 30s")
	}

	resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"a b"}],"max_tokens":2}`))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"content":"w1 w2"`) {
		t.Fatalf("got %d %s, want 200 with \"w1 w2\"", resp.StatusCode, body)
	}
	if strings.Contains(string(body), `"usage"`) {
		t.Errorf("got usage in %s, want none with --no-usage", body)
	}
	http.DefaultClient.CloseIdleConnections()

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("got exit code %d, want 0; logs: %s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s of cancel")
	}
	if !strings.Contains(logs.String(), `"addr":"`+addr+`"`) {
		t.Errorf("got logs %q, want the bound address %s", logs.String(), addr)
	}
}

func TestServeFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"help", []string{"--help"}, 0},
		{"unknown flag", []string{"--nope"}, 2},
		{"bad duration", []string{"--token-latency", "fast"}, 2},
		{"negative latency", []string{"--token-latency", "-1s"}, 2},
		{"extra argument", []string{"serve"}, 2},
		{"bad address", []string{"--addr", "no-port"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out syncBuffer
			if got := serve(context.Background(), tt.args, &out, nil); got != tt.want {
				t.Errorf("got exit code %d, want %d; output %s", got, tt.want, out.String())
			}
		})
	}
}
