package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestRestartedNodeHearsDeltas: a node that crashes (no Leave, as kill -9)
// and comes back under its name on its address must hear the deltas its
// peers send afterwards, not only the next full-state exchange. Push/pull is
// slowed to 30s so that nothing but deltas and the join's resync can deliver
// within the deadline (2s: room for -race on a loaded 2-core machine).
func TestRestartedNodeHearsDeltas(t *testing.T) {
	tests := []struct {
		name      string
		waitDead  bool // restart only after the peers declared the old run dead
		sender    int  // 0: the seed the restarted node joins, 1: another node
		encrypted bool
	}{
		{"at once, seed sends", false, 0, true},
		{"at once, other sends", false, 1, true},
		{"at once, other sends, plaintext", false, 1, false},
		{"after death, seed sends", true, 0, true},
		{"after death, other sends", true, 1, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			prefix := fmt.Sprintf("r%d-", i)
			nodes := startCluster(t, 3, func(j int, c *Config) {
				c.NodeName = fmt.Sprintf("%s%d", prefix, j)
				c.PushPullInterval = 30 * time.Second
				if !tt.encrypted {
					c.SecretKey = nil // cluster.insecure
				}
			})
			w := window()
			nodes[0].Store().Add("l", "u", w, minute, 4)
			waitSums(t, "convergence", nodes, w, 4)

			addr := nodes[2].addr()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := nodes[2].shutdown(ctx, false); err != nil { // no Leave: a crash
				t.Fatal(err)
			}
			if tt.waitDead {
				waitFor(t, waitLong, "the crashed run declared dead", func() bool {
					return nodes[0].members.alive() == 2 && nodes[1].members.alive() == 2
				})
			}
			cfg := testConfig(prefix + "2")
			cfg.Bind = addr
			cfg.Join = []string{nodes[0].addr()}
			cfg.PushPullInterval = 30 * time.Second
			if !tt.encrypted {
				cfg.SecretKey = nil
			}
			again := startNode(t, cfg)
			waitFor(t, waitLong, "restarted node ready", again.Ready)
			if got := again.Store().Sum("l", "u", w, minute); got != 4 {
				t.Fatalf("restarted node Sum at Ready = %d, want 4", got)
			}

			start := time.Now()
			nodes[tt.sender].Store().AddNow("l", "u", w, minute, 6)
			deadline := start.Add(2 * time.Second)
			for again.Store().Sum("l", "u", w, minute) != 10 {
				if time.Now().After(deadline) {
					t.Fatalf("restarted node Sum %v after the change = %d, want 10 (peers' members: %v; %v)",
						time.Since(start), again.Store().Sum("l", "u", w, minute), nodes[0].memberList(), nodes[1].memberList())
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
