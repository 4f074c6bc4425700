package proxy

import (
	"strings"
	"testing"
)

// The reverse translation's overhead per request: the same small request
// through the gateway to cmd/mockllm's handler, as an OpenAI chat request
// to gpt-4o (BenchmarkProviderChatNative, BenchmarkProviderStreamNative)
// and as a Messages request to gpt-4o, translated to chat completions and
// back (below). The difference is what the reverse translation costs;
// BenchmarkProviderMessages is a Messages request to an anthropic
// upstream, natively.
//
//	go test ./proxy/ -run '^$' -bench 'BenchmarkProvider(ChatNative|StreamNative|MessagesToChat)' -benchmem -count=6

func BenchmarkProviderMessagesToChat(b *testing.B) {
	benchProvider(b, routeMessages, strings.Replace(benchMessages, `"claude-sonnet-4-5"`, `"gpt-4o"`, 1))
}

func BenchmarkProviderMessagesToChatStream(b *testing.B) {
	body := strings.Replace(benchMessages, `"claude-sonnet-4-5"`, `"gpt-4o"`, 1)
	benchProvider(b, routeMessages, strings.Replace(body, `"max_tokens":16`, `"max_tokens":16,"stream":true`, 1))
}
