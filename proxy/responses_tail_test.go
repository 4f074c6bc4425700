package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// responsesUpstream answers the Responses API in OpenAI's documented field
// order, where user and metadata come after usage: n words of output,
// usage 20000 in and n+3000 out, and the request's tools and metadata
// echoed, streamed (response.completed carries the whole object) or not.
func responsesUpstream(t *testing.T, n int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model    string          `json:"model"`
			Tools    json.RawMessage `json:"tools"`
			Metadata json.RawMessage `json:"metadata"`
			Stream   bool            `json:"stream"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &req)
		for _, p := range []*json.RawMessage{&req.Tools, &req.Metadata} {
			if len(*p) == 0 {
				*p = json.RawMessage("null")
			}
		}
		words := make([]string, n)
		for i := range words {
			words[i] = fmt.Sprintf(" w%d", i+1)
		}
		text, _ := json.Marshal(strings.Join(words, ""))
		resp := `{"id":"resp_1","object":"response","created_at":1,"status":"completed","error":null,"model":"` + req.Model + `",` +
			`"output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":` + string(text) + `,"annotations":[]}]}],` +
			`"tools":` + string(req.Tools) + `,"top_p":1,"truncation":"disabled",` +
			fmt.Sprintf(`"usage":{"input_tokens":20000,"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":3000},"total_tokens":%d}`, n+3000, 20000+n+3000) +
			`,"user":null,"metadata":` + string(req.Metadata) + `}`
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, resp)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i, wd := range words {
			d, _ := json.Marshal(wd)
			fmt.Fprintf(w, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":%d,\"delta\":%s}\n\n", i+1, d)
		}
		fmt.Fprintf(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":%d,\"response\":%s}\n\n", n+1, resp)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestResponsesUsageAfterMetadata: a caller cannot hide usage by filling
// metadata, which the Responses API echoes after usage, to its maximum (16
// values of 512 characters, here all escaped: about 50 KiB) when the answer
// is metered from its tail: a response.completed event too large to buffer,
// or a whole answer over the 1 MiB held in memory. The upstream's usage is
// what is charged.
func TestResponsesUsageAfterMetadata(t *testing.T) {
	var md strings.Builder
	md.WriteByte('{')
	for i := range 16 {
		if i > 0 {
			md.WriteByte(',')
		}
		fmt.Fprintf(&md, `"k%02d":"%s"`, i, strings.Repeat(`\u0001`, 512))
	}
	md.WriteByte('}')
	tools := `[{"type":"function","name":"f","description":"` + strings.Repeat("x ", 10_000) + `","parameters":{"type":"object","properties":{}}}]`
	for _, tt := range []struct {
		name   string
		words  int
		stream bool
	}{
		{"streamed, response.completed over the event buffer", 200, true},
		{"whole answer over 1 MiB", 160_000, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := responsesUpstream(t, tt.words)
			store := newMapStore()
			e := newEnv(t, Config{Upstreams: []Upstream{{Name: "oa", URL: up.URL, Timeout: time.Minute}}}, newRealLimiter(t, store, 100_000_000, 0))
			body := fmt.Sprintf(`{"model":"o3","stream":%v,"input":"hi","tools":%s,"metadata":%s}`, tt.stream, tools, md.String())
			resp, out := e.post(t, routeResponses, body, "user", "mallory")
			e.idle(t)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %.300s", resp.StatusCode, out)
			}
			if p, c := e.tokens("mallory", "o3"); p != 20000 || c != float64(tt.words+3000) {
				t.Errorf("metered %v + %v tokens, want the upstream's 20000 + %d", p, c, tt.words+3000)
			}
			if got, want := store.total("tokens", "mallory"), int64(20000+tt.words+3000); got != want {
				t.Errorf("charged %d tokens, want %d", got, want)
			}
		})
	}
}
