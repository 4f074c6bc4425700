package cluster

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

var debugSlow = flag.Bool("cluster.debugslow", false, "log the nodes a slow write has not reached")

var writeEvery = flag.Duration("cluster.writeevery", 25*time.Millisecond,
	"BenchmarkDissemination's pace: one write every this long, on a random node (all nodes share this process's cores)")

var benchLoss = flag.Float64("cluster.loss", 0.01, "share of UDP packets the scale benchmarks lose")

// lossyTransport is the gateway's transport (leanTransport) on 127.0.0.1
// dropping a share of the UDP packets it sends (streams are TCP: never lost,
// only slowed).
type lossyTransport struct {
	*leanTransport
	loss    float64
	packets *atomic.Int64 // UDP packets handed to the network (dropped ones too)
}

func newLossyTransport(t testing.TB, loss float64, packets *atomic.Int64) *lossyTransport {
	t.Helper()
	lt, err := newLeanTransport("127.0.0.1", 0, newStdLogger(testLogger(), nil, nil))
	if err != nil {
		t.Fatalf("transport: %v", err)
	}
	return &lossyTransport{leanTransport: lt, loss: loss, packets: packets}
}

func (tr *lossyTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	tr.packets.Add(1)
	if rand.Float64() < tr.loss {
		return time.Now(), nil // lost on the wire
	}
	return tr.leanTransport.WriteToAddress(b, addr)
}

func (tr *lossyTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return tr.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// scaleCluster starts n nodes with production timings (LAN memberlist
// defaults, gossip interval 100ms, push/pull 5s) on transports that lose
// loss of their UDP packets; mode "gossip" sends deltas through memberlist's
// queue only, "direct" to every peer (the default up to defaultDirectMax).
func scaleCluster(b *testing.B, n int, mode string, loss float64, packets *atomic.Int64) []testNode {
	b.Helper()
	return startCluster(b, n, func(i int, c *Config) {
		c.NodeName = fmt.Sprintf("s%d-%d-%s", i, n, mode)
		c.GossipInterval = 100 * time.Millisecond
		c.PushPullInterval = 5 * time.Second
		c.Tune = nil
		c.Transport = newLossyTransport(b, loss, packets)
		switch mode {
		case "gossip":
			c.directMax = -1
		case "direct":
			c.directMax = 1 << 10
		}
	})
}

// BenchmarkDissemination measures, for changes near a limit (AddNow) on
// random nodes of 32- and 64-node clusters losing 1 % of UDP packets, the
// time until every node sees the change (goal: p99 <= 300 ms). Writes are
// pipelined, one every 25 ms (-cluster.writeevery), one per b.N: run with
// -benchtime=300x. All nodes share this process's cores: cpu-cores says how
// much CPU it got (idle-cpu-cores: the cluster's own, before the writes), and
// min-alive the fewest members any node held alive (a starved member declared
// dead gets no deltas until it is back).
func BenchmarkDissemination(b *testing.B) {
	for _, mode := range []string{"default", "gossip", "direct"} {
		for _, n := range []int{32, 64} {
			b.Run(fmt.Sprintf("%s/nodes=%d", mode, n), func(b *testing.B) {
				var packets atomic.Int64
				nodes := scaleCluster(b, n, mode, *benchLoss, &packets)
				w := window()
				type write struct {
					user string
					at   time.Time
					seen []bool // nodes that hold it: polled no more
					left int
				}
				var pending []*write
				var lat []time.Duration
				minAlive := n               // fewest members any node held alive during the writes
				time.Sleep(3 * time.Second) // let the joins settle
				cpu0, wall0 := processCPU(), time.Now()
				time.Sleep(3 * time.Second) // the cluster's own cost, idle
				idle := (processCPU() - cpu0).Seconds() / time.Since(wall0).Seconds()
				cpu0, wall0 = processCPU(), time.Now()
				issued, next := 0, time.Now()
				deadline := time.Now().Add(time.Duration(b.N)*(*writeEvery) + 60*time.Second)
				b.ResetTimer()
				for len(lat) < b.N {
					now := time.Now()
					if issued < b.N && !now.Before(next) {
						u := fmt.Sprintf("u%d", issued)
						nodes[rand.N(n)].Store().AddNow("l", u, w, minute, 1)
						pending = append(pending, &write{u, now, make([]bool, n), n})
						issued++
						next = now.Add(*writeEvery)
					}
					pending = slices.DeleteFunc(pending, func(p *write) bool {
						for i, nd := range nodes {
							if !p.seen[i] && nd.Store().Sum("l", p.user, w, minute) == 1 {
								p.seen[i] = true
								p.left--
							}
						}
						if p.left > 0 {
							if *debugSlow && now.Sub(p.at) > 300*time.Millisecond && now.Sub(p.at) < 302*time.Millisecond {
								var missing []int
								for i, ok := range p.seen {
									if !ok {
										missing = append(missing, i)
									}
								}
								b.Logf("%s after %v: missing on %v", p.user, now.Sub(p.at), missing)
							}
							return false
						}
						lat = append(lat, now.Sub(p.at))
						return true
					})
					if now.After(deadline) {
						p := pending[0]
						var missing []string
						for i, ok := range p.seen {
							if !ok {
								nd := nodes[i]
								missing = append(missing, fmt.Sprintf("%d (sees %d alive, ready %v, %d pulls)",
									i, nd.members.alive(), nd.Ready(), len(nd.ae.pulls)))
							}
						}
						b.Fatalf("%d writes never converged; the first, %s, misses on %v", len(pending), p.user, missing)
					}
					if issued%20 == 0 {
						for _, nd := range nodes {
							minAlive = min(minAlive, nd.members.alive())
						}
					}
					time.Sleep(time.Millisecond)
				}
				b.StopTimer()
				b.ReportMetric(idle, "idle-cpu-cores")
				b.ReportMetric(float64(minAlive), "min-alive")
				b.ReportMetric((processCPU()-cpu0).Seconds()/time.Since(wall0).Seconds(), "cpu-cores")
				slices.Sort(lat)
				pct := func(p float64) float64 {
					return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
				}
				b.ReportMetric(pct(0.50), "p50-ms")
				b.ReportMetric(pct(0.99), "p99-ms")
				b.ReportMetric(pct(1), "max-ms")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// processCPU returns the CPU time (user and system) this process has used:
// on a shared machine, a benchmark that got less than the cores it needs
// says so by this figure.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
