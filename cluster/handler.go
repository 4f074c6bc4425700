package cluster

import (
	"encoding/json"
	"net/http"
)

// Status is the JSON body of GET /cluster.
type Status struct {
	Node           string   `json:"node"`
	ReplicaID      string   `json:"replica_id"`
	Members        []Member `json:"members"`
	Keys           int      `json:"keys"`
	Ready          bool     `json:"ready"`
	LiveReplicas   int      `json:"live_replicas"`
	Delivery       string   `json:"delivery"` // "direct" (deltas to every peer) or "gossip" (memberlist queue)
	QueueDepth     int      `json:"queue_depth"`
	MaxClockSkewMs int64    `json:"max_clock_skew_ms"`
}

// Status returns the node's view of the cluster. Safe for concurrent use.
func (n *Node) Status() Status {
	live := n.LiveReplicas()
	delivery := "gossip"
	if n.direct(live) {
		delivery = "direct"
	}
	return Status{
		Node:           n.cfg.NodeName,
		ReplicaID:      n.replica,
		Members:        n.memberList(),
		Keys:           n.store.Len(),
		Ready:          n.Ready(),
		LiveReplicas:   live,
		Delivery:       delivery,
		QueueDepth:     n.queue.NumQueued(),
		MaxClockSkewMs: n.skew.max().Milliseconds(),
	}
}

// Handler serves GET (and HEAD) /cluster: the node's Status as JSON.
func (n *Node) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(n.Status())
	})
}
