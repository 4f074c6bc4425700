package provider

import (
	"io"
	"testing"
)

// The reverse translation's cost per request:
//
//	go test ./proxy/provider/ -run '^$' -bench 'MessagesRequest|ChatResponse|MessagesStream' -benchmem -count=6

func BenchmarkTranslateMessagesRequest(b *testing.B) {
	for _, name := range []string{"basic", "tools"} {
		body := benchFile(b, "testdata/msgrequest/"+name+".json")
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, _, err := TranslateMessagesRequest(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkTranslateChatResponse(b *testing.B) {
	for _, name := range []string{"text", "tool_calls"} {
		body := benchFile(b, "testdata/chatresponse/"+name+".json")
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := TranslateChatResponse(body, Usage{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMessagesStream translates a whole chunk stream per op;
// allocations are per stream.
func BenchmarkMessagesStream(b *testing.B) {
	for _, name := range []string{"text", "tools"} {
		evs := readSSE(b, benchFile(b, "testdata/chatstream/"+name+".sse"))
		data := make([][]byte, len(evs))
		for i, ev := range evs {
			data[i] = []byte(ev.data)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s := NewMessagesStream(io.Discard, MessagesStreamOptions{})
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
