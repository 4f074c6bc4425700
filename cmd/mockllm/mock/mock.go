// Package mock is a fake OpenAI-compatible upstream with deterministic usage
// figures, which also speaks Anthropic's Messages API and Azure OpenAI's
// deployment paths, served by cmd/mockllm and usable in-process by tests:
//
//	srv := httptest.NewServer(mock.NewHandler(mock.Options{}))
//	defer srv.Close()
//
// Wire behaviour (binding; the gateway's tests rely on it):
//
//   - prompt_tokens is the number of whitespace-separated words
//     (strings.Fields) of the prompt text: every chat message's content
//     (a string, or the text of array parts), the completions prompt (a
//     string or an array of strings; a token-id array counts its length),
//     the embeddings input (likewise) or the Responses input (a string or
//     items like chat messages; instructions are not counted).
//   - The completion is N words "w1 w2 ... wN", one token each, where N is
//     max_tokens, max_completion_tokens or max_output_tokens (the first that
//     is set) or DefaultMaxTokens. finish_reason is "stop".
//   - Chat with tool_choice {"type":"function","function":{"name":T}} (or
//     "required": the first tool) answers instead one tool call of T with
//     arguments {"words": "w1 ... wN"}, content null and finish_reason
//     "tool_calls"; streamed, a first chunk carries the call's index, id,
//     type, name and empty arguments, then one chunk per word carries an
//     arguments fragment (`{"words": "w1`, ` w2`, ..., then `"}`).
//   - Embeddings have no completion; total_tokens = prompt_tokens. Vectors
//     have 8 dimensions (or `dimensions`), depend only on the input text, and
//     are sent as base64 little-endian float32 when encoding_format=base64.
//   - Streaming chat and completions send one SSE chunk per word (the first
//     chat delta carries role "assistant"; later deltas are " wI", with a
//     leading space, so the deltas concatenate to the full text), then a chunk
//     with finish_reason "stop" and, only when stream_options.include_usage is
//     true, a usage-only chunk with "choices": [], then "data: [DONE]". While
//     include_usage is true every other chunk carries "usage": null, as
//     OpenAI's do.
//   - Streaming responses send response.created, response.in_progress,
//     response.output_item.added, response.content_part.added, one
//     response.output_text.delta per word, response.output_text.done,
//     response.content_part.done, response.output_item.done and
//     response.completed, whose response carries usage (input_tokens,
//     output_tokens, total_tokens).
//   - Options.NoUsage: usage is never sent (no usage chunk, "usage": null in
//     Responses objects, no usage object elsewhere).
//   - Options.TokenLatency: the mock sleeps that long per completion word
//     (before each streamed word; N times as long before a non-streaming
//     body).
//   - Every response carries x-ratelimit-limit-requests: 10000 and
//     x-ratelimit-remaining-requests: 9999.
//   - Anthropic Messages API: POST /v1/messages (also "stream": true) and
//     POST /v1/messages/count_tokens need an anthropic-version header.
//     input_tokens is the number of words of the system prompt and of every
//     message's content (a string, or the text of text blocks and of
//     tool_result contents); the answer is max_tokens (required, as in the
//     real API) words "w1 ... wN", output_tokens = N,
//     cache_creation_input_tokens = cache_read_input_tokens = 0, and
//     stop_reason "end_turn". With tool_choice {"type":"tool","name":T} (or
//     {"type":"any"}: the first tool) the answer is instead one tool_use block
//     calling T with input {"words": "w1 ... wN"}, stop_reason "tool_use".
//     A stream sends message_start (usage with output_tokens 1),
//     content_block_start, ping, one content_block_delta per word
//     (text_delta "w1", " w2", ...; or input_json_delta fragments
//     `{"words": "w1`, ` w2`, ..., `"}`), content_block_stop, message_delta
//     (stop_reason, usage {"output_tokens": N}) and message_stop.
//     count_tokens answers {"input_tokens": N}. NoUsage leaves out every
//     usage object (count_tokens still answers). Errors on these paths use
//     the Anthropic body {"type":"error","error":{"type":...,"message":...}}.
//   - Azure OpenAI: POST /openai/deployments/{d}/chat/completions,
//     .../completions and .../embeddings behave as the /v1/ paths with the
//     model set to the deployment name {d}; the api-version query parameter
//     is required (400 without it).
//   - GET /v1/models lists a few models (with an anthropic-version header:
//     ClaudeModels in Anthropic's list shape); GET /v1/models/{id} returns
//     one.
//     Bad JSON or fields of the wrong type get 400, unknown paths 404 and
//     wrong methods 405, all with the OpenAI error body.
package mock

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures the mock.
type Options struct {
	// TokenLatency is slept per completion word; 0 answers at once.
	TokenLatency time.Duration
	// NoUsage, when true, makes the mock never send usage figures.
	NoUsage bool
	// Now returns the time used for "created" fields; nil means time.Now.
	Now func() time.Time
}

// maxBody bounds the request bodies the mock reads.
const maxBody = 64 << 20

// handler serves the mock API. It is safe for concurrent use.
type handler struct {
	opts Options
	seq  atomic.Uint64 // request sequence, for unique ids
	bufs sync.Pool     // *[]byte for request and response bodies
}

// NewHandler returns an http.Handler serving the mock OpenAI API described
// in the package documentation. The handler is safe for concurrent use and
// starts no goroutines.
func NewHandler(opts Options) http.Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &handler{opts: opts}
	h.bufs.New = func() any {
		b := make([]byte, 0, 4096)
		return &b
	}
	return h
}

// ServeHTTP routes a request to its endpoint.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	// Canonical keys set directly: no canonicalisation on the hot path.
	hdr["X-Ratelimit-Limit-Requests"] = []string{"10000"}
	hdr["X-Ratelimit-Remaining-Requests"] = []string{"9999"}

	var serve func(http.ResponseWriter, *http.Request, *request)
	method := http.MethodPost
	deployment, op, azure := azurePath(r.URL.Path)
	if azure {
		r.URL.Path = "/v1/" + op
		if r.URL.Query().Get("api-version") == "" {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "missing_api_version", "api-version",
				"Missing required query parameter 'api-version'.")
			return
		}
	}
	switch r.URL.Path {
	case "/v1/messages":
		h.anthropic(w, r, false)
		return
	case "/v1/messages/count_tokens":
		h.anthropic(w, r, true)
		return
	case "/v1/chat/completions":
		serve = h.chat
	case "/v1/completions":
		serve = h.completions
	case "/v1/embeddings":
		serve = h.embeddings
	case "/v1/responses":
		serve = h.responses
	case "/v1/models":
		method = http.MethodGet
	default:
		if id, ok := modelPath(r.URL.Path); ok && r.Method == http.MethodGet {
			h.model(w, id)
			return
		}
		writeError(w, http.StatusNotFound, "invalid_request_error", "unknown_url", "",
			"Unknown request URL: "+r.Method+" "+r.URL.Path+". Please check the URL for typos.")
		return
	}
	if r.Method != method {
		hdr["Allow"] = []string{method}
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "",
			"Method "+r.Method+" not allowed for "+r.URL.Path+"; use "+method+".")
		return
	}
	if serve == nil {
		h.models(w, r)
		return
	}

	p := h.getBuf()
	body, err := readBody(r.Body, *p)
	if err != nil {
		h.putBuf(p, body)
		if errors.Is(err, errTooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "", "", "Request body too large.")
			return
		}
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "", "Could not read the request body.")
		return
	}
	req, err := decode(body)
	// decode copies what it keeps, so the buffer can serve the response.
	h.putBuf(p, body)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	if azure {
		req.Model = deployment
	}
	serve(w, r, req)
}

// errTooLarge is returned by readBody for bodies over maxBody.
var errTooLarge = errors.New("request body too large")

// readBody reads all of r into b[:0], growing it as needed, up to maxBody.
func readBody(r io.Reader, b []byte) ([]byte, error) {
	b = b[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > maxBody {
			return b, errTooLarge
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// getBuf takes a byte buffer from the pool; give it back with putBuf.
func (h *handler) getBuf() *[]byte {
	return h.bufs.Get().(*[]byte)
}

// putBuf returns a buffer to the pool, keeping b (the buffer's possibly
// grown contents) unless it grew too large to be worth keeping.
func (h *handler) putBuf(p *[]byte, b []byte) {
	if cap(b) > 1<<20 {
		return
	}
	*p = b[:0]
	h.bufs.Put(p)
}

// quotedID appends a fresh quoted identifier with the given prefix.
func (h *handler) quotedID(b []byte, prefix string) []byte {
	b = append(b, '"')
	b = h.nextID(b, prefix)
	return append(b, '"')
}

// nextID returns a fresh identifier with the given prefix, unique within
// this handler.
func (h *handler) nextID(b []byte, prefix string) []byte {
	b = append(b, prefix...)
	n := h.seq.Add(1)
	var digits [16]byte
	for i := len(digits) - 1; i >= 0; i-- {
		digits[i] = hexDigits[n&0xf]
		n >>= 4
	}
	return append(b, digits[:]...)
}

// wait sleeps for n token latencies, or until the client goes away. It
// reports whether the client is still there.
func (h *handler) wait(r *http.Request, t *time.Timer, n int64) bool {
	if h.opts.TokenLatency <= 0 || n <= 0 {
		return r.Context().Err() == nil
	}
	t.Reset(time.Duration(n) * h.opts.TokenLatency)
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		t.Stop()
		return false
	}
}

// newTimer returns a stopped timer for wait, or nil when there is no latency.
func (h *handler) newTimer() *time.Timer {
	if h.opts.TokenLatency <= 0 {
		return nil
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// writeJSON sends body as a complete application/json response.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	hdr := w.Header()
	hdr["Content-Type"] = []string{"application/json"}
	hdr["Content-Length"] = []string{itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeBadRequest sends err (a *badRequest) as a 400 OpenAI error.
func writeBadRequest(w http.ResponseWriter, err error) {
	param := ""
	if br, ok := err.(*badRequest); ok {
		param = br.param
	}
	writeError(w, http.StatusBadRequest, "invalid_request_error", "", param, err.Error())
}

// writeError sends an OpenAI error body:
// {"error":{"message":...,"type":...,"param":...,"code":...}}. Empty param
// and code are sent as null.
func writeError(w http.ResponseWriter, status int, typ, code, param, msg string) {
	b := make([]byte, 0, 128+len(msg))
	b = append(b, `{"error":{"message":`...)
	b = appendString(b, msg)
	b = append(b, `,"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"param":`...)
	b = appendNullable(b, param)
	b = append(b, `,"code":`...)
	b = appendNullable(b, code)
	b = append(b, "}}\n"...)
	writeJSON(w, status, b)
}

// appendNullable appends s as a JSON string, or null when s is empty.
func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendString(b, s)
}

// azurePath splits an Azure OpenAI deployment path,
// /openai/deployments/{deployment}/{op}, where op is chat/completions,
// completions or embeddings.
func azurePath(path string) (deployment, op string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/openai/deployments/")
	if !ok {
		return "", "", false
	}
	deployment, op, ok = strings.Cut(rest, "/")
	if !ok || deployment == "" {
		return "", "", false
	}
	switch op {
	case "chat/completions", "completions", "embeddings":
		return deployment, op, true
	}
	return "", "", false
}

// itoa formats a non-negative int without going through fmt.
func itoa(n int) string {
	var a [20]byte
	return string(appendInt(a[:0], int64(n)))
}
