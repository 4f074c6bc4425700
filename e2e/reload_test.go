package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLimitRaisedByEditingTheFile runs three replicas, each from its own
// file as each pod mounts the same ConfigMap, raises one user's limit by
// editing the files, with no restart, and sees the new limit on every
// replica; the user of the same name in lower case keeps the old one.
func TestLimitRaisedByEditingTheFile(t *testing.T) {
	mock := startMock(t)
	limits := `rate_limit:
  enabled: true
  user_header: user
  limits:
    - {name: req, metric: requests, limit: 2, window: 1h}
`
	raised := limits + "  overrides:\n    Alice: [{name: req, limit: 6}]\n"
	var ports [3][3]int
	for i := range ports {
		ports[i] = [3]int{freePort(t), freePort(t), freePort(t)}
	}
	rs := make([]*replica, 3)
	for i := range rs {
		var join []string
		for j := range ports {
			if j != i {
				join = append(join, fmt.Sprintf("127.0.0.1:%d", ports[j][2]))
			}
		}
		rs[i] = startReplica(t, replicaSpec{name: fmt.Sprintf("r%d", i+1), upstream: mock, extra: limits, cluster: true, join: join, ports: ports[i]})
	}
	for _, r := range rs {
		waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 30*time.Second)
	}
	hashes := make([]string, len(rs))
	for i, r := range rs {
		hashes[i] = configHash(t, r)
	}

	ctx := context.Background()
	send := func(r *replica, user string, want int) {
		t.Helper()
		_, err := chat(ctx, client(r.proxy, user), 1)
		if got := statusOf(err); (want == http.StatusOK && err != nil) || (want != http.StatusOK && got != want) {
			t.Fatalf("%s through %s: got %v, want %d", user, r.name, err, want)
		}
	}
	// used waits until every replica sees user's cluster-wide usage at n.
	used := func(user string, n, limit int) {
		t.Helper()
		for _, r := range rs {
			eventually(t, 20*time.Second, func() bool {
				var u struct {
					Limits []struct{ Limit, Used int } `json:"limits"`
				}
				getJSON(t, r.ops+"/usage?user="+user, &u)
				return len(u.Limits) == 1 && u.Limits[0].Used == n && u.Limits[0].Limit == limit
			}, "%s sees %s at %d of %d", r.name, user, n, limit)
		}
	}

	send(rs[0], "Alice", http.StatusOK)
	send(rs[0], "Alice", http.StatusOK)
	used("Alice", 2, 2)
	for _, r := range rs {
		send(r, "Alice", http.StatusTooManyRequests)
	}

	for _, r := range rs {
		old, err := os.ReadFile(r.configPath)
		if err != nil {
			t.Fatal(err)
		}
		next := strings.Replace(string(old), limits, raised, 1)
		if next == string(old) {
			t.Fatalf("%s: the limits are not in its file:\n%s", r.name, old)
		}
		// As editors and config tools save: a new file renamed over the old.
		if err := os.WriteFile(r.configPath+".new", []byte(next), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(r.configPath+".new", r.configPath); err != nil {
			t.Fatal(err)
		}
	}
	used("Alice", 2, 6)
	for i, r := range rs {
		if v, _ := metricValue(t, r.ops, "genai_gateway_config_reloads_total", `{result="success"}`); v != 1 {
			t.Errorf("%s: genai_gateway_config_reloads_total{result=\"success\"}: got %v, want 1", r.name, v)
		}
		if h := configHash(t, r); h == hashes[i] {
			t.Errorf("%s: genai_gateway_config_hash: got %q after the edit, want a new hash", r.name, h)
		}
	}

	// The raised limit holds on every replica, cluster-wide.
	send(rs[1], "Alice", http.StatusOK)
	send(rs[2], "Alice", http.StatusOK)
	used("Alice", 4, 6)
	send(rs[0], "Alice", http.StatusOK)
	send(rs[1], "Alice", http.StatusOK)
	used("Alice", 6, 6)
	for _, r := range rs {
		send(r, "Alice", http.StatusTooManyRequests)
	}
	// alice is another user, still on the default limit.
	send(rs[2], "alice", http.StatusOK)
	send(rs[2], "alice", http.StatusOK)
	send(rs[2], "alice", http.StatusTooManyRequests)
	for _, r := range rs {
		select {
		case <-r.done:
			t.Errorf("%s exited: the edit must not restart it", r.name)
		default:
		}
	}
}

// TestSIGHUPReloadsAndInvalidFileIsKeptOut: SIGHUP reloads a replica even
// when its file did not change; an invalid file is refused and the replica
// keeps serving its running configuration.
func TestSIGHUPReloadsAndInvalidFileIsKeptOut(t *testing.T) {
	mock := startMock(t)
	limits := "rate_limit:\n  enabled: true\n  limits: [{name: req, metric: requests, limit: 1, window: 1h}]\n"
	r := startReplica(t, replicaSpec{name: "solo", upstream: mock, extra: limits})
	waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 30*time.Second)
	reloads := func(result string) float64 {
		v, _ := metricValue(t, r.ops, "genai_gateway_config_reloads_total", `{result="`+result+`"}`)
		return v
	}

	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return reloads("success") == 1 }, "a reload on SIGHUP")

	running := configHash(t, r)
	good, err := os.ReadFile(r.configPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(good), "limit: 1,", "limit: many,", 1) + "rate_limt: {}\n"
	if err := os.WriteFile(r.configPath, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return reloads("failure") == 1 }, "the invalid file refused")
	if h := configHash(t, r); h != running {
		t.Errorf("genai_gateway_config_hash after an invalid file: got %q, want the running %q", h, running)
	}
	c := client(r.proxy, "bob")
	if _, err := chat(context.Background(), c, 1); err != nil {
		t.Fatalf("first request: %v", err)
	}
	if _, err := chat(context.Background(), c, 1); statusOf(err) != http.StatusTooManyRequests {
		t.Fatalf("second request: got %v, want 429 under the running limit", err)
	}
	// The log is flushed every 100ms.
	for _, want := range []string{"reload refused", "rate_limit.limits[0].limit", "rate_limt: unknown key (did you mean rate_limit?)"} {
		eventually(t, 5*time.Second, func() bool { return strings.Contains(r.out.String(), want) }, "%q in the log", want)
	}
}

// configHash reads the hash label of genai_gateway_config_hash.
func configHash(t *testing.T, r *replica) string {
	t.Helper()
	resp, err := http.Get(r.ops + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	var found []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), `genai_gateway_config_hash{hash="`); ok {
			h, _, _ := strings.Cut(rest, `"`)
			found = append(found, h)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: genai_gateway_config_hash: got %q, want one series", r.name, found)
	}
	return found[0]
}
