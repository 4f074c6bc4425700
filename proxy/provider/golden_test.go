package provider

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// update rewrites the golden files from the current output:
//
//	go test ./proxy/provider/ -run Golden -update
var update = flag.Bool("update", false, "rewrite testdata/*/*.golden from the current output")

// golden compares got with the file name (rewriting it with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(name, got, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		return
	}
	want, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("read %s (run with -update to create it): %v", name, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got\n%s\nwant\n%s", name, got, want)
	}
}

// inputs returns the files of testdata/dir with extension ext.
func inputs(t *testing.T, dir, ext string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*"+ext))
	if err != nil || len(files) == 0 {
		t.Fatalf("got no %s files in testdata/%s (%v), want some", ext, dir, err)
	}
	return files
}

// indent returns JSON indented for a readable golden file, failing on
// invalid JSON.
func indent(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("output is not valid JSON: %v\n%s", err, b)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// TestGoldenRequest translates testdata/request/*.json (OpenAI requests)
// into *.golden: the request info and the Messages API body.
func TestGoldenRequest(t *testing.T) {
	for _, in := range inputs(t, "request", ".json") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, info, err := TranslateChatRequest(body)
			if err != nil {
				t.Fatalf("translate: got error %v, want none", err)
			}
			infoJSON, err := json.Marshal(info)
			if err != nil {
				t.Fatal(err)
			}
			doc := []byte(`{"info":` + string(infoJSON) + `,"body":` + string(out) + `}`)
			golden(t, strings.TrimSuffix(in, ".json")+".golden", indent(t, doc))
		})
	}
}

// TestGoldenResponse translates testdata/response/*.json (Messages API
// responses) into *.golden chat completions.
func TestGoldenResponse(t *testing.T) {
	for _, in := range inputs(t, "response", ".json") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := TranslateMessagesResponse(body, 1700000000)
			if err != nil {
				t.Fatalf("translate: got error %v, want none", err)
			}
			golden(t, strings.TrimSuffix(in, ".json")+".golden", indent(t, out))
		})
	}
}

// TestGoldenStream translates testdata/stream/*.sse (Messages API event
// streams) into OpenAI chunk streams, without include_usage (*.golden) and
// with it (*.usage.golden). Every data payload but [DONE] must be JSON.
func TestGoldenStream(t *testing.T) {
	for _, in := range inputs(t, "stream", ".sse") {
		for _, includeUsage := range []bool{false, true} {
			name := strings.TrimSuffix(in, ".sse")
			if includeUsage {
				name += ".usage"
			}
			t.Run(filepath.Base(name), func(t *testing.T) {
				raw, err := os.ReadFile(in)
				if err != nil {
					t.Fatal(err)
				}
				var out bytes.Buffer
				s := NewChatStream(&out, ChatStreamOptions{IncludeUsage: includeUsage, Created: 1700000000})
				for _, ev := range readSSE(t, raw) {
					if err := s.Event(ev.name, []byte(ev.data)); err != nil {
						t.Fatalf("event: %v", err)
					}
				}
				if !s.Done() {
					t.Errorf("got Done false after the stream, want true")
				}
				checkChunks(t, out.Bytes())
				golden(t, name+".golden", out.Bytes())
			})
		}
	}
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name, data string
}

// readSSE splits an event stream into events ("event:" and "data:" lines;
// several data lines join with newlines).
func readSSE(t testing.TB, raw []byte) []sseEvent {
	t.Helper()
	var evs []sseEvent
	var cur sseEvent
	open := false
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch {
		case line == "":
			if open {
				evs = append(evs, cur)
			}
			cur, open = sseEvent{}, false
		case field == "event":
			cur.name, open = value, true
		case field == "data":
			if open && cur.data != "" {
				cur.data += "\n"
			}
			cur.data += value
			open = true
		}
	}
	if open {
		evs = append(evs, cur)
	}
	return evs
}

// checkChunks fails unless out is a sequence of `data: X\n\n` events whose
// payloads are JSON objects or [DONE].
func checkChunks(t testing.TB, out []byte) {
	t.Helper()
	for _, ev := range bytes.SplitAfter(out, []byte("\n\n")) {
		if len(ev) == 0 {
			continue
		}
		payload, ok := bytes.CutPrefix(ev, []byte("data: "))
		if !ok || !bytes.HasSuffix(payload, []byte("\n\n")) {
			t.Fatalf("got event %q, want data: ...\\n\\n", ev)
		}
		payload = bytes.TrimSuffix(payload, []byte("\n\n"))
		if string(payload) == "[DONE]" {
			continue
		}
		if !json.Valid(payload) || payload[0] != '{' {
			t.Fatalf("got payload %q, want a JSON object", payload)
		}
	}
}
