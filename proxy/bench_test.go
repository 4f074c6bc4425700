package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// benchChat is a typical small chat request.
const benchChat = `{"model":"gpt-4o","max_tokens":16,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about gateways."}]}`

func benchPost(b *testing.B, client *http.Client, url, body string) {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-bench")
	req.Header.Set("user", "bench")
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

func benchEnv(b *testing.B, up *fakeLLM) *env {
	e := newEnv(b, upstreams(up), nil)
	e.client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	return e
}

// BenchmarkProxyChat is a non-streaming chat request through the whole
// handler (client -> gateway -> httptest upstream and back). Allocations
// include the test client and upstream.
func BenchmarkProxyChat(b *testing.B) {
	up := newFakeLLM(b)
	e := benchEnv(b, up)
	b.ReportAllocs()
	for b.Loop() {
		benchPost(b, e.client, e.srv.URL+routeChat, benchChat)
	}
}

// BenchmarkProxyStream is a streaming chat request of 16 chunks, the
// gateway adding include_usage and hiding the usage chunk.
func BenchmarkProxyStream(b *testing.B) {
	up := newFakeLLM(b)
	e := benchEnv(b, up)
	body := strings.Replace(benchChat, `"max_tokens":16`, `"max_tokens":16,"stream":true`, 1)
	b.ReportAllocs()
	for b.Loop() {
		benchPost(b, e.client, e.srv.URL+routeChat, body)
	}
}

// BenchmarkUpstreamDirect is the same chat request sent straight to the
// upstream: the cost the gateway adds is BenchmarkProxyChat minus this.
func BenchmarkUpstreamDirect(b *testing.B) {
	up := newFakeLLM(b)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	b.ReportAllocs()
	for b.Loop() {
		benchPost(b, client, up.srv.URL+routeChat, benchChat)
	}
}

// BenchmarkUpstreamDirectStream is BenchmarkProxyStream's request (with
// include_usage, as the gateway sends it) straight to the upstream.
func BenchmarkUpstreamDirectStream(b *testing.B) {
	up := newFakeLLM(b)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	body := strings.Replace(benchChat, `"max_tokens":16`, `"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}`, 1)
	b.ReportAllocs()
	for b.Loop() {
		benchPost(b, client, up.srv.URL+routeChat, body)
	}
}

// BenchmarkReverseProxyBaseline is a bare httputil.ReverseProxy (Rewrite,
// no metering) in front of the same upstream: the yardstick the hand-made
// metered forwarder was measured against.
func BenchmarkReverseProxyBaseline(b *testing.B) {
	up := newFakeLLM(b)
	target, _ := url.Parse(up.srv.URL)
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }, Transport: tr}
	srv := httptest.NewServer(rp)
	ctr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(func() { srv.Close(); ctr.CloseIdleConnections(); tr.CloseIdleConnections() })
	client := &http.Client{Transport: ctr}
	b.ReportAllocs()
	for b.Loop() {
		benchPost(b, client, srv.URL+routeChat, benchChat)
	}
}
