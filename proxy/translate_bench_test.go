package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
)

// Translation overhead per request: the same small chat request through
// the gateway to cmd/mockllm's handler, natively as OpenAI chat (gpt-*),
// natively as a Messages request (/v1/messages), and translated from chat
// to Messages and back (claude-* on an anthropic upstream). The
// difference between ChatTranslated and Messages is what translation
// costs; ChatNative is the same upstream in OpenAI's format.

const (
	benchMessages = `{"model":"claude-sonnet-4-5","max_tokens":16,"system":"You are a helpful assistant.","messages":[{"role":"user","content":"Write a haiku about gateways."}]}`
)

func benchProviderEnv(b *testing.B) (*env, *http.Client) {
	oa, claude := newMockUpstream(b, mock.Options{}), newMockUpstream(b, mock.Options{})
	oa.srv.Config.Handler, claude.srv.Config.Handler = mock.NewHandler(mock.Options{}), mock.NewHandler(mock.Options{}) // no recording
	e := newEnv(b, Config{Upstreams: []Upstream{
		{Name: "oa", URL: oa.srv.URL, Models: []string{"gpt-*"}, Timeout: time.Minute},
		{Name: "claude", URL: claude.srv.URL, Models: []string{"claude-*"}, Provider: ProviderAnthropic, Timeout: time.Minute},
	}}, nil)
	e.client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	return e, e.client
}

func benchProvider(b *testing.B, path, body string, hdr ...string) {
	e, client := benchProviderEnv(b)
	url := e.srv.URL + path
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("user", "bench")
		req.Header.Set("anthropic-version", "2023-06-01")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = drain(resp)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

func BenchmarkProviderChatNative(b *testing.B) { benchProvider(b, routeChat, benchChat) }

func BenchmarkProviderMessages(b *testing.B) { benchProvider(b, routeMessages, benchMessages) }

func BenchmarkProviderChatTranslated(b *testing.B) {
	benchProvider(b, routeChat, strings.Replace(benchChat, `"gpt-4o"`, `"claude-sonnet-4-5"`, 1))
}

func BenchmarkProviderStreamNative(b *testing.B) {
	benchProvider(b, routeChat, strings.Replace(benchChat, `"max_tokens":16`, `"max_tokens":16,"stream":true`, 1))
}

func BenchmarkProviderMessagesStream(b *testing.B) {
	benchProvider(b, routeMessages, strings.Replace(benchMessages, `"max_tokens":16`, `"max_tokens":16,"stream":true`, 1))
}

func BenchmarkProviderStreamTranslated(b *testing.B) {
	body := strings.Replace(benchChat, `"gpt-4o"`, `"claude-sonnet-4-5"`, 1)
	benchProvider(b, routeChat, strings.Replace(body, `"max_tokens":16`, `"max_tokens":16,"stream":true`, 1))
}

func drain(resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	return io.Copy(io.Discard, resp.Body)
}
