// Command mockllm serves a fake OpenAI-compatible API with usage figures
// that tests can predict, for the gateway's tests, demos and benchmarks.
//
// # Usage
//
//	mockllm --addr 127.0.0.1:PORT [--token-latency DUR] [--no-usage]
//
//	--addr            listen address (default 127.0.0.1:8000); port 0 picks a
//	                  free port, and the address actually bound is logged
//	--token-latency   time slept per generated word (default 0)
//	--no-usage        never send usage figures (exercises the gateway's
//	                  tokenizer fallback)
//
// It logs one JSON line to stderr when it listens ({"addr": ...}) and shuts
// down gracefully on SIGINT or SIGTERM, letting streams in flight finish.
//
// # Endpoints
//
// POST /v1/chat/completions, /v1/completions (both also with "stream": true,
// with and without stream_options.include_usage), /v1/embeddings,
// /v1/responses (also streaming), GET /v1/models and /v1/models/{id}.
// Anthropic's Messages API: POST /v1/messages (also streaming) and
// /v1/messages/count_tokens. Azure OpenAI: POST
// /openai/deployments/{deployment}/chat/completions (and completions,
// embeddings) with ?api-version=..., the model being the deployment name.
//
// # Wire behaviour (deterministic; the gateway's tests rely on it)
//
//   - prompt_tokens = the number of whitespace-separated words
//     (strings.Fields) of the prompt text: chat = every message's content (a
//     string, or the text of array parts); completions = prompt (a string or
//     an array of strings); embeddings = input (likewise); responses = input
//     (a string, or items like chat messages).
//   - The completion is N words "w1 w2 ... wN", each one token, N =
//     max_tokens | max_completion_tokens | max_output_tokens if given, else
//     16. total_tokens = prompt + completion. Embeddings have completion 0,
//     total = prompt.
//   - Streaming chat and completions: one SSE "data:" chunk per word (the
//     first chat delta carries role "assistant"), a chunk with finish_reason
//     "stop", then, only if stream_options.include_usage is true, a
//     usage-only chunk ("choices": [], "usage": {...}), then "data: [DONE]".
//   - Streaming responses use the Responses API events, with usage
//     (input_tokens, output_tokens, total_tokens) in response.completed.
//   - --no-usage: usage is never sent. --token-latency D: sleep D per word.
//   - Every response has x-ratelimit-limit-requests: 10000 and
//     x-ratelimit-remaining-requests: 9999.
//   - Messages API: input_tokens counts the words of the system prompt and
//     messages, the answer is max_tokens words (output_tokens = max_tokens),
//     or a tool_use block with input {"words": "w1 ... wN"} when tool_choice
//     forces a tool; see package mock for the event sequence of a stream.
//   - Unknown paths get 404, bad JSON 400, both with the OpenAI error body
//     (the Anthropic error body on /v1/messages).
//
// Go tests can run the same server in-process with
// httptest.NewServer(mock.NewHandler(mock.Options{})); see package
// github.com/genai-gateway/genai-gateway/cmd/mockllm/mock.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
)

// shutdownTimeout bounds how long shutdown waits for requests in flight.
const shutdownTimeout = 30 * time.Second

func main() {
	os.Exit(run())
}

// run serves until SIGINT or SIGTERM and returns the exit code.
func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, os.Args[1:], os.Stderr, nil)
}

// serve parses args, listens and serves until ctx is done, then shuts down
// gracefully. ready, when not nil, is called with the bound address once the
// listener is open. It returns the process exit code: 0 after a clean
// shutdown, 2 for bad flags, 1 for other failures.
func serve(ctx context.Context, args []string, stderr io.Writer, ready func(addr string)) int {
	fs := pflag.NewFlagSet("mockllm", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8000", "listen address (host:port; port 0 picks a free one)")
	latency := fs.Duration("token-latency", 0, "time slept per generated word")
	noUsage := fs.Bool("no-usage", false, "never send usage figures")
	fs.Usage = func() {
		_, _ = fmt.Fprintf(stderr, "Usage: mockllm --addr HOST:PORT [--token-latency DUR] [--no-usage]\n\n"+
			"Serves a fake OpenAI-compatible API (and Anthropic's Messages API and Azure's\n"+
			"deployment paths) with deterministic usage figures.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(stderr, "mockllm: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	if *latency < 0 {
		_, _ = fmt.Fprintln(stderr, "mockllm: --token-latency must not be negative")
		return 2
	}

	log := zerolog.New(stderr).With().Timestamp().Str("component", "mockllm").Logger()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error().Err(err).Str("addr", *addr).Msg("listen")
		return 1
	}
	srv := &http.Server{
		Handler:           mock.NewHandler(mock.Options{TokenLatency: *latency, NoUsage: *noUsage}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	log.Info().Str("addr", ln.Addr().String()).Dur("token_latency", *latency).
		Bool("no_usage", *noUsage).Msg("listening")
	if ready != nil {
		ready(ln.Addr().String())
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		log.Error().Err(err).Msg("serve")
		return 1
	case <-ctx.Done():
	}

	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	code := 0
	if err := srv.Shutdown(sctx); err != nil {
		log.Error().Err(err).Msg("shutdown")
		code = 1
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error().Err(err).Msg("serve")
		code = 1
	}
	log.Info().Msg("stopped")
	return code
}
