package cluster

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func BenchmarkStoreAddSum(b *testing.B) {
	s := NewStore("a/1", nil)
	s.track = true
	w := window()
	for u := range 1000 {
		s.Add("total-minute", fmt.Sprint(u), w, minute, 1)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.Add("total-minute", "42", w, minute, 10)
			_ = s.Sum("total-minute", "42", w, minute)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			users := []string{"1", "22", "333", "444", "555", "666", "777", "888"}
			i := 0
			for pb.Next() {
				u := users[i%len(users)]
				s.Add("total-minute", u, w, minute, 10)
				_ = s.Sum("total-minute", u, w, minute)
				i++
			}
		})
	})
}

// benchCluster starts n nodes with production timings: LAN memberlist
// defaults, gossip interval 100ms; direct = false forces the gossip queue.
func benchCluster(b *testing.B, n int, direct bool) []testNode {
	b.Helper()
	return startCluster(b, n, func(i int, c *Config) {
		c.NodeName = fmt.Sprintf("b%d-%d-%v", i, n, direct)
		c.GossipInterval = 100 * time.Millisecond
		c.PushPullInterval = 5 * time.Second
		c.Tune = nil
		if !direct {
			c.directMax = -1
		}
	})
}

// BenchmarkConvergence measures, for each write on a random node, the time
// until every node sees it. Writes are pipelined (one every 10 ms, one
// write per b.N); run with -benchtime=200x for stable percentiles. "direct"
// and "gossip" are the two delivery modes for ordinary changes (Add, batched
// on the 100ms gossip interval); "now" is a change near a limit (AddNow,
// sent at once) in the direct mode.
func BenchmarkConvergence(b *testing.B) {
	for _, mode := range []string{"now", "direct", "gossip"} {
		for _, n := range []int{3, 5, 10} {
			b.Run(fmt.Sprintf("%s/nodes=%d", mode, n), func(b *testing.B) {
				nodes := benchCluster(b, n, mode != "gossip")
				w := window() // one window for writes and checks, even across a minute boundary
				add := func(s *Store, user string) { s.Add("l", user, w, minute, 1) }
				if mode == "now" {
					add = func(s *Store, user string) { s.AddNow("l", user, w, minute, 1) }
				}
				type write struct {
					user string
					at   time.Time
				}
				var pending []write
				var lat []time.Duration
				issued, next := 0, time.Now()
				deadline := time.Now().Add(time.Duration(b.N)*10*time.Millisecond + 30*time.Second)
				b.ResetTimer()
				for len(lat) < b.N {
					now := time.Now()
					if issued < b.N && !now.Before(next) {
						u := fmt.Sprintf("u%d", issued)
						add(nodes[rand.N(n)].Store(), u)
						pending = append(pending, write{u, now})
						issued++
						next = now.Add(10 * time.Millisecond)
					}
					pending = slices.DeleteFunc(pending, func(p write) bool {
						if !allEqual(sums(nodes, "l", p.user, w, minute), 1) {
							return false
						}
						lat = append(lat, now.Sub(p.at))
						return true
					})
					if now.After(deadline) {
						b.Fatalf("%d writes never converged", len(pending))
					}
					time.Sleep(time.Millisecond)
				}
				b.StopTimer()
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

func sentBytes(b *testing.B, reg *prometheus.Registry) float64 { return gossipBytes(b, reg, "sent") }

func receivedBytes(b *testing.B, reg *prometheus.Registry) float64 {
	return gossipBytes(b, reg, "received")
}

func gossipBytes(b *testing.B, reg *prometheus.Registry, direction string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "genai_gateway_gossip_bytes_total" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == direction {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// BenchmarkGossipBytes measures the gossip payload each node sends per
// second when 10,000 active users each make one request per second (one
// Add per user per second, spread over the nodes and the second). One b.N is
// one second of load.
func BenchmarkGossipBytes(b *testing.B) {
	const users = 10_000
	for _, mode := range []string{"direct", "gossip"} {
		b.Run(mode+"/nodes=5", func(b *testing.B) {
			nodes := benchCluster(b, 5, mode == "direct")
			w := window()
			start := make([]float64, len(nodes))
			for i, n := range nodes {
				start[i] = sentBytes(b, n.reg)
			}
			t0 := time.Now()
			b.ResetTimer()
			for range b.N {
				tick := time.NewTicker(10 * time.Millisecond)
				for step := range 100 {
					<-tick.C
					for u := step * users / 100; u < (step+1)*users/100; u++ {
						nodes[rand.N(len(nodes))].Store().Add("l", fmt.Sprint(u), w, minute, 1)
					}
				}
				tick.Stop()
			}
			elapsed := time.Since(t0).Seconds()
			var total float64
			for i, n := range nodes {
				total += sentBytes(b, n.reg) - start[i]
			}
			b.ReportMetric(total/float64(len(nodes))/elapsed, "bytes/s/node")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// fillStore puts keys keys with one slot from each of replicas replicas in s:
// random 16-hex-digit user IDs (poorly compressible, as real ones), a few
// limits and windows, random token counts.
func fillStore(s *Store, keys, replicas int) {
	r := rand.New(rand.NewPCG(1, 2))
	w := window()
	limits := []string{"prompt-hourly", "total-minute", "req-minute"}
	var ds []slotDelta
	now := s.nowMs()
	for k := range keys {
		user := fmt.Sprintf("%016x", r.Uint64())
		for i := range replicas {
			ds = append(ds, slotDelta{limits[k%3], user, w - int64(k%2)*minute, minute,
				fmt.Sprintf("gateway-%d/%08x", i, i*7919), r.Uint64N(100_000), r.Uint64N(5_000)})
		}
		if len(ds) >= 1<<16 {
			s.merge(ds, now)
			ds = ds[:0]
		}
	}
	s.merge(ds, now)
}

// BenchmarkStoreMemory reports the heap held per key with 1, 3, 8 and 32
// replicas writing every key (goal: <= 128 B/key with one).
func BenchmarkStoreMemory(b *testing.B) {
	const keys = 100_000
	for _, writers := range []int{1, 3, 8, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			var ms runtime.MemStats
			for b.Loop() {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				before := ms.HeapAlloc
				s := NewStore("gateway-0/00000000", nil)
				fillStore(s, keys, writers)
				runtime.GC()
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(ms.HeapAlloc-before)/keys, "B/key")
				runtime.KeepAlive(s)
			}
		})
	}
}

// answerBytes encodes every bucket of s as an answer to a pull would, and
// returns the bytes of its chunks.
func answerBytes(b *testing.B, s *Store) (total, chunks int) {
	enc := chunkEncoder{sender: s.replica}
	flush := func() {
		msg, err := compressChunk(header{Sender: s.replica}, chunkHead{ID: 1, Seq: uint64(chunks)}, enc.raw)
		if err != nil {
			b.Fatal(err)
		}
		total += len(msg)
		chunks++
		enc.raw = enc.raw[:0]
	}
	s.buckets(func(int) bool { return true }, func(ds []slotDelta) bool {
		for i := range ds {
			enc.add(&ds[i])
			if enc.full() {
				flush()
			}
		}
		return true
	})
	flush()
	return total, chunks
}

// BenchmarkStateBytes reports what anti-entropy sends for 100,000 keys of 3
// replica slots each: the push/pull digest (whatever the keys) and, when
// every bucket differs (a joiner), the chunks of the answer; ns/op is the
// time to encode the answer.
func BenchmarkStateBytes(b *testing.B) {
	const keys = 100_000
	s := NewStore("gateway-0/00000000", nil)
	fillStore(s, keys, 3)
	var total, chunks int
	for b.Loop() {
		total, chunks = answerBytes(b, s)
	}
	ds := make([]bucketDigest, numBuckets)
	s.digests(ds)
	b.ReportMetric(float64(total)/keys, "state-B/key")
	b.ReportMetric(float64(total), "state-bytes")
	b.ReportMetric(float64(chunks), "chunks")
	b.ReportMetric(float64(len(appendDigest(nil, header{Sender: s.replica}, ds))), "digest-bytes")
}
