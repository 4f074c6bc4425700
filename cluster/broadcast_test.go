package cluster

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// bigLossTransport drops the next UDP packets larger than 300 bytes it
// sends while armed: memberlist's probes are smaller, a delta naming a long
// user is not.
type bigLossTransport struct {
	*memberlist.NetTransport
	drop    atomic.Int64 // packets still to drop
	dropped atomic.Int64
}

func (tr *bigLossTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if len(b) > 300 && tr.drop.Add(-1) >= 0 {
		tr.dropped.Add(1)
		return time.Now(), nil
	}
	return tr.NetTransport.WriteToAddress(b, addr)
}

func (tr *bigLossTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return tr.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// TestDirectBatchSentTwice: a direct delta packet lost on the way is
// repaired by the batch's second sending within a fraction of a second,
// long before the next push/pull (30 s here; 5 s leaves room for -race on
// a loaded machine).
func TestDirectBatchSentTwice(t *testing.T) {
	t.Parallel()
	var tr *bigLossTransport
	nodes := startCluster(t, 2, func(i int, c *Config) {
		c.NodeName = "twice" + string(rune('0'+i))
		c.PushPullInterval = 30 * time.Second
		if i == 0 {
			nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
				BindAddrs: []string{"127.0.0.1"},
				Logger:    newStdLogger(testLogger(), nil, nil),
			})
			if err != nil {
				t.Fatal(err)
			}
			tr = &bigLossTransport{NetTransport: nt}
			c.Transport = tr
		}
	})
	w := window()
	user := strings.Repeat("u", 400)
	tr.drop.Store(1)
	nodes[0].Store().AddNow("l", user, w, minute, 5)
	waitFor(t, 5*time.Second, "the change despite its first packet lost", func() bool {
		return nodes[1].Store().Sum("l", user, w, minute) == 5
	})
	if got := tr.dropped.Load(); got != 1 {
		t.Errorf("packets dropped = %d, want 1", got)
	}
}
