package cluster

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Drop reasons of genai_gateway_gossip_dropped_messages_total.
const (
	reasonMalformed   = "malformed"     // does not decode
	reasonVersion     = "version"       // unknown wire version
	reasonTooLarge    = "too_large"     // over the size cap
	reasonOutOfWindow = "out_of_window" // one slot of an expired, invalid or far-future window
	reasonUnencodable = "unencodable"   // own slot whose limit/user/replica is too long to gossip
	// reasonUndecryptable: plaintext, wrongly keyed or garbage packets that
	// memberlist's keyring refused.
	reasonUndecryptable = "undecryptable"
)

// metrics are the node's collectors; counters live here, gauges are read at
// scrape time by nodeCollector.
type metrics struct {
	messages *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	dropped  *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genai_gateway_gossip_messages_total",
			Help: "Gossip messages (deltas, digests, pulls and chunks) sent and received by this replica.",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genai_gateway_gossip_bytes_total",
			Help: "Payload bytes of gossip messages sent and received by this replica (memberlist framing excluded).",
		}, []string{"direction"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genai_gateway_gossip_dropped_messages_total",
			Help: "Gossip messages (or single slots, for out_of_window and unencodable) dropped, by reason.",
		}, []string{"reason"}),
	}
	for _, d := range []string{"sent", "received"} {
		m.messages.WithLabelValues(d)
		m.bytes.WithLabelValues(d)
	}
	for _, r := range []string{reasonMalformed, reasonVersion, reasonTooLarge, reasonOutOfWindow, reasonUnencodable, reasonUndecryptable} {
		m.dropped.WithLabelValues(r)
	}
	return m
}

func (m *metrics) sent(n int) {
	m.messages.WithLabelValues("sent").Inc()
	m.bytes.WithLabelValues("sent").Add(float64(n))
}

func (m *metrics) received(n int) {
	m.messages.WithLabelValues("received").Inc()
	m.bytes.WithLabelValues("received").Add(float64(n))
}

func (m *metrics) drop(reason string, n int) {
	if n > 0 {
		m.dropped.WithLabelValues(reason).Add(float64(n))
	}
}

// dropReason maps a decode error to its metric label.
func dropReason(err error) string {
	switch {
	case errors.Is(err, errVersion):
		return reasonVersion
	case errors.Is(err, errTooLarge):
		return reasonTooLarge
	default:
		return reasonMalformed
	}
}

// errNoPeer: the member to answer is no longer alive.
var errNoPeer = errors.New("peer not alive")

var (
	descMembers = prometheus.NewDesc("genai_gateway_cluster_members",
		"Cluster members known to this replica, by state (suspect stays 0: memberlist reports no suspicion event; a suspect counts as alive until declared dead).", []string{"state"}, nil)
	descKeys = prometheus.NewDesc("genai_gateway_counter_keys",
		"Counter keys (limit, user, window) held by this replica.", nil, nil)
	descQueue = prometheus.NewDesc("genai_gateway_gossip_queue_depth",
		"Slot updates waiting in the gossip broadcast queue.", nil, nil)
	descSkew = prometheus.NewDesc("genai_gateway_clock_skew_seconds",
		"Largest absolute clock difference observed to a peer in the last minute (includes network delay).", nil, nil)
)

// nodeCollector reads the node's gauges at scrape time.
type nodeCollector struct{ n *Node }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMembers
	ch <- descKeys
	ch <- descQueue
	ch <- descSkew
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
	for _, m := range c.n.memberList() {
		counts[m.State]++
	}
	for state, v := range counts {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(v), state)
	}
	ch <- prometheus.MustNewConstMetric(descKeys, prometheus.GaugeValue, float64(c.n.store.Len()))
	ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(c.n.queue.NumQueued()))
	ch <- prometheus.MustNewConstMetric(descSkew, prometheus.GaugeValue, c.n.skew.max().Seconds())
}

// register registers every collector of n on reg (nil = none).
func (m *metrics) register(reg prometheus.Registerer, n *Node) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.messages, m.bytes, m.dropped, nodeCollector{n}} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register cluster metrics: %w", err)
		}
	}
	return nil
}
