package provider

import (
	"io"
	"os"
	"testing"
)

// Translation cost per request:
//
//	go test ./proxy/provider/ -run '^$' -bench . -benchmem -count=6

func benchFile(b *testing.B, name string) []byte {
	body, err := os.ReadFile(name)
	if err != nil {
		b.Fatal(err)
	}
	return body
}

func BenchmarkTranslateChatRequest(b *testing.B) {
	for _, name := range []string{"basic", "tools"} {
		body := benchFile(b, "testdata/request/"+name+".json")
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, _, err := TranslateChatRequest(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkTranslateMessagesResponse(b *testing.B) {
	for _, name := range []string{"text", "tool_use"} {
		body := benchFile(b, "testdata/response/"+name+".json")
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := TranslateMessagesResponse(body, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkChatStream translates a whole stream per op (the tool stream
// has 15 events); allocations are per stream.
func BenchmarkChatStream(b *testing.B) {
	for _, name := range []string{"text", "tool"} {
		evs := readSSE(b, benchFile(b, "testdata/stream/"+name+".sse"))
		data := make([][]byte, len(evs))
		for i, ev := range evs {
			data[i] = []byte(ev.data)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s := NewChatStream(io.Discard, ChatStreamOptions{IncludeUsage: true})
				for i, ev := range evs {
					if err := s.Event(ev.name, data[i]); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(evs)), "ns/event")
		})
	}
}

func BenchmarkAnthropicStreamMeter(b *testing.B) {
	evs := readSSE(b, benchFile(b, "testdata/stream/tool.sse"))
	m := NewAnthropicStreamMeter(nil)
	b.ReportAllocs()
	for b.Loop() {
		m.Reset(nil)
		for _, ev := range evs {
			m.Event(ev.name, []byte(ev.data))
		}
	}
}
