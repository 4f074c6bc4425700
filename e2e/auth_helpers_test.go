package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// gatewayKey is a key made by `genai-gateway keygen` and its auth.keys entry.
type gatewayKey struct {
	name  string
	key   string // the plaintext, as its owner holds it
	entry string // the YAML list item keygen printed
}

// keygen runs `genai-gateway keygen --name NAME` and reads the key and the
// entry from its output, as an operator copies them.
func keygen(t *testing.T, name string) gatewayKey {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "genai-gateway"), "keygen", "--name", name).Output()
	if err != nil {
		t.Fatalf("keygen --name %s: %v", name, err)
	}
	k := gatewayKey{name: name}
	var entry []string
	inEntry := false
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "ggw_"):
			k.key = line
		case strings.HasPrefix(line, "# Add this entry"):
			inEntry = true
		case inEntry && strings.TrimSpace(line) != "":
			entry = append(entry, line)
		}
	}
	k.entry = strings.Join(entry, "\n") + "\n"
	if k.key == "" || !strings.HasPrefix(k.entry, "- name: "+name) {
		t.Fatalf("keygen --name %s: no key or entry in its output:\n%s", name, out)
	}
	return k
}

// authKeysYAML is an auth section holding the entries of keys.
func authKeysYAML(keys ...gatewayKey) string {
	var b strings.Builder
	b.WriteString("auth:\n  keys:\n")
	for _, k := range keys {
		for _, line := range strings.Split(strings.TrimRight(k.entry, "\n"), "\n") {
			b.WriteString("    " + line + "\n")
		}
	}
	return b.String()
}

// keyClient is an official OpenAI client that sends apiKey, as a team
// given a gateway key configures it.
func keyClient(base, apiKey string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(base + "/v1/"),
		option.WithAPIKey(apiKey),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(20 * time.Second),
	}, opts...)...)
}

// apiError returns the SDK's error, or fails the test when err is not one.
func apiError(t *testing.T, err error, what string) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: got %v, want an API error from the SDK", what, err)
	}
	return e
}

// wantRefused checks an SDK error: HTTP status and OpenAI error code.
func wantRefused(t *testing.T, err error, status int, code, what string) {
	t.Helper()
	e := apiError(t, err, what)
	if e.StatusCode != status || e.Code != code {
		t.Errorf("%s: got %d %q (%s), want %d %q", what, e.StatusCode, e.Code, e.Message, status, code)
	}
}

// rewriteConfig replaces the replica's config file the way an operator's
// tooling does: a new file renamed over the old one.
func (r *replica) rewriteConfig(t *testing.T, edit func(string) string) {
	t.Helper()
	b, err := os.ReadFile(r.configPath)
	if err != nil {
		t.Fatal(err)
	}
	next := edit(string(b))
	if next == string(b) {
		t.Fatalf("%s: the edit changed nothing in %s", r.name, r.configPath)
	}
	tmp := r.configPath + ".new"
	if err := os.WriteFile(tmp, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, r.configPath); err != nil {
		t.Fatal(err)
	}
}

// hangUp sends SIGHUP, the reload signal, and fails the test if the process
// is no longer running.
func (r *replica) hangUp(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
		t.Fatalf("%s exited before SIGHUP: %v", r.name, r.err)
	default:
	}
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP %s: %v", r.name, err)
	}
}

// startCluster starts n clustered replicas in front of upstream with the
// same extra YAML, and waits until every one is ready and sees n members
// alive.
func startCluster(t *testing.T, n int, upstream, extra string) []*replica {
	t.Helper()
	ports := make([][3]int, n)
	for i := range ports {
		ports[i] = [3]int{freePort(t), freePort(t), freePort(t)}
	}
	rs := make([]*replica, n)
	for i := range rs {
		var join []string
		for j := range ports {
			if j != i {
				join = append(join, fmt.Sprintf("127.0.0.1:%d", ports[j][2]))
			}
		}
		rs[i] = startReplica(t, replicaSpec{name: fmt.Sprintf("r%d", i+1), upstream: upstream, extra: extra,
			cluster: true, join: join, ports: ports[i]})
	}
	for _, r := range rs {
		waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 30*time.Second)
	}
	for _, r := range rs {
		eventually(t, 20*time.Second, func() bool { return aliveMembers(t, r.ops) == n },
			"%d alive members in %s's /cluster", n, r.name)
	}
	return rs
}

func aliveMembers(t *testing.T, ops string) int {
	t.Helper()
	var c struct {
		Members []struct{ State string } `json:"members"`
	}
	getJSON(t, ops+"/cluster", &c)
	alive := 0
	for _, m := range c.Members {
		if m.State == "alive" {
			alive++
		}
	}
	return alive
}

// usage is the /usage document.
type usage struct {
	User   string `json:"user"`
	Limits []struct {
		Name      string `json:"name"`
		Metric    string `json:"metric"`
		Limit     int64  `json:"limit"`
		Used      int64  `json:"used"`
		Remaining int64  `json:"remaining"`
	} `json:"limits"`
}

// used returns the used figure of the named limit in u, or -1.
func (u usage) used(limit string) int64 {
	for _, l := range u.Limits {
		if l.Name == limit {
			return l.Used
		}
	}
	return -1
}

// attempt is one HTTP exchange the SDK made.
type attempt struct {
	status int
	header http.Header
}

// attempts is an SDK middleware that records every HTTP attempt the client
// makes (retries included): status and response headers.
type attempts struct {
	mu   sync.Mutex
	list []attempt
}

func (a *attempts) middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	resp, err := next(req)
	if resp != nil {
		a.mu.Lock()
		a.list = append(a.list, attempt{resp.StatusCode, resp.Header.Clone()})
		a.mu.Unlock()
	}
	return resp, err
}

// take returns the attempts recorded so far and forgets them.
func (a *attempts) take() []attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.list
	a.list = nil
	return l
}

// chatModel sends "hello there general kenobi" (4 prompt tokens at
// mockllm) to model asking for n tokens.
func chatModel(ctx context.Context, c openai.Client, model string, n int64) (*openai.ChatCompletion, error) {
	return c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:     model,
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there general kenobi")},
		MaxTokens: openai.Int(n),
	})
}
