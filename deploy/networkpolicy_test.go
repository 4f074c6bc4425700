package deploy_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// networkPolicy mirrors networking.k8s.io/v1 NetworkPolicy. The manifest is decoded strictly
// into it, so a misspelt or misplaced field (which the API server would reject, or a lenient
// client drop) fails the test.
type networkPolicy struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Spec struct {
		PodSelector labelSelector `yaml:"podSelector"`
		PolicyTypes []string      `yaml:"policyTypes"`
		Ingress     []npRule      `yaml:"ingress"`
		Egress      []struct {
			To    []npPeer `yaml:"to"`
			Ports []npPort `yaml:"ports"`
		} `yaml:"egress"`
	} `yaml:"spec"`
}

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels,omitempty"`
	MatchExpressions []struct {
		Key      string   `yaml:"key"`
		Operator string   `yaml:"operator"`
		Values   []string `yaml:"values"`
	} `yaml:"matchExpressions,omitempty"`
}

// empty reports whether the selector selects everything ({}).
func (s *labelSelector) empty() bool {
	return s != nil && len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

type npRule struct {
	From  []npPeer `yaml:"from"`
	Ports []npPort `yaml:"ports"`
}

type npPeer struct {
	PodSelector       *labelSelector `yaml:"podSelector,omitempty"`
	NamespaceSelector *labelSelector `yaml:"namespaceSelector,omitempty"`
	IPBlock           *struct {
		CIDR   string   `yaml:"cidr"`
		Except []string `yaml:"except"`
	} `yaml:"ipBlock,omitempty"`
}

// String renders the peer as YAML, for failure messages.
func (p npPeer) String() string {
	b, err := yaml.Marshal(p)
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(string(b))
}

type npPort struct {
	Protocol string `yaml:"protocol"`
	Port     any    `yaml:"port"` // number or a container port's name
	EndPort  int    `yaml:"endPort"`
}

// containerPort is a named port of the gateway container.
type containerPort struct {
	name, number, protocol string
}

// admits reports whether the rule lets traffic reach port p (from the rule's peers). A rule
// without ports admits every port; a port entry without a port admits every port of its
// protocol; protocol defaults to TCP.
func (r npRule) admits(p containerPort) bool {
	if len(r.Ports) == 0 {
		return true
	}
	for _, rp := range r.Ports {
		proto := rp.Protocol
		if proto == "" {
			proto = "TCP"
		}
		if proto != p.protocol {
			continue
		}
		if rp.Port == nil {
			return true
		}
		v := fmt.Sprint(rp.Port)
		if v == p.name || v == p.number {
			return true
		}
		if rp.EndPort != 0 {
			var from, n int
			_, err1 := fmt.Sscan(v, &from)
			_, err2 := fmt.Sscan(p.number, &n)
			if err1 == nil && err2 == nil && from <= n && n <= rp.EndPort {
				return true
			}
		}
	}
	return false
}

// loadNetworkPolicy decodes kubernetes/networkpolicy.yaml strictly.
func loadNetworkPolicy(t *testing.T) networkPolicy {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, "kubernetes/networkpolicy.yaml")))
	dec.KnownFields(true)
	var np networkPolicy
	if err := dec.Decode(&np); err != nil {
		t.Fatalf("kubernetes/networkpolicy.yaml: %v", err)
	}
	return np
}

// TestKubernetesNetworkPolicy: the NetworkPolicy selects the gateway pods, leaves the proxy port
// open, admits only a Prometheus peer (by non-empty selectors, to adapt) to the operator port
// and only the gateway's own pods to the gossip port.
func TestKubernetesNetworkPolicy(t *testing.T) {
	k := loadKubernetes(t) // also checks that kustomization.yaml lists the file
	np := loadNetworkPolicy(t)
	if np.APIVersion != "networking.k8s.io/v1" || np.Kind != "NetworkPolicy" || np.Metadata.Name != "genai-gateway" {
		t.Fatalf("networkpolicy.yaml: got %s %s %s, want networking.k8s.io/v1 NetworkPolicy genai-gateway", np.APIVersion, np.Kind, np.Metadata.Name)
	}
	deploy := k.get(t, "Deployment", "genai-gateway")
	podLabels := asMap(asMap(asMap(asMap(deploy["spec"])["template"])["metadata"])["labels"])
	if np.Spec.PodSelector.empty() || len(np.Spec.PodSelector.MatchExpressions) > 0 || !selects(stringMap(np.Spec.PodSelector.MatchLabels), podLabels) {
		t.Errorf("podSelector %+v: want matchLabels that select the gateway pods %v", np.Spec.PodSelector, podLabels)
	}
	if !strings.Contains(strings.Join(np.Spec.PolicyTypes, ","), "Ingress") {
		t.Errorf("policyTypes %v: want Ingress", np.Spec.PolicyTypes)
	}

	var ports []containerPort
	for name, v := range containerPorts(k.gatewayContainer(t)) {
		number, proto, _ := strings.Cut(v, "/")
		ports = append(ports, containerPort{name, number, proto})
	}
	byName := map[string]containerPort{}
	for _, p := range ports {
		byName[p.name] = p
	}
	for _, want := range []string{"http", "metrics", "gossip-tcp", "gossip-udp"} {
		if _, ok := byName[want]; !ok {
			t.Fatalf("gateway container: no port %q (ports %v)", want, ports)
		}
	}
	// Every port a rule names must be a port of the container: a name that matches none
	// would silently admit nothing.
	for i, r := range np.Spec.Ingress {
		for _, rp := range r.Ports {
			found := false
			for _, p := range ports {
				if (rp.Protocol == "" || rp.Protocol == p.protocol) && (fmt.Sprint(rp.Port) == p.name || fmt.Sprint(rp.Port) == p.number) {
					found = true
				}
			}
			if !found {
				t.Errorf("ingress[%d] port %v/%s: no such port on the gateway container", i, rp.Port, rp.Protocol)
			}
		}
	}

	// rulesFor returns the ingress rules that admit traffic to port p.
	rulesFor := func(p containerPort) []npRule {
		var rs []npRule
		for _, r := range np.Spec.Ingress {
			if r.admits(p) {
				rs = append(rs, r)
			}
		}
		return rs
	}

	t.Run("proxy port open", func(t *testing.T) {
		open := false
		for _, r := range rulesFor(byName["http"]) {
			if len(r.From) == 0 {
				open = true
			}
		}
		if !open {
			t.Error("no ingress rule admits every client to the proxy port (http)")
		}
	})

	t.Run("operator port only from Prometheus", func(t *testing.T) {
		rs := rulesFor(byName["metrics"])
		if len(rs) == 0 {
			t.Fatal("no ingress rule admits Prometheus to the operator port (metrics): it could not scrape")
		}
		for _, r := range rs {
			if len(r.From) == 0 {
				t.Fatalf("a rule admits everyone to the operator port: %+v", r)
			}
			for _, peer := range r.From {
				switch {
				case peer.IPBlock != nil:
					t.Errorf("operator port: peer ipBlock %+v, want Prometheus by selectors", *peer.IPBlock)
				case peer.PodSelector == nil || peer.PodSelector.empty():
					t.Errorf("operator port: peer %+v admits every pod of a namespace, want Prometheus's pods only", peer)
				case peer.NamespaceSelector.empty():
					t.Errorf("operator port: peer %+v admits pods of every namespace, want Prometheus's namespace", peer)
				case selects(stringMap(peer.PodSelector.MatchLabels), podLabels):
					t.Errorf("operator port: peer %+v selects the gateway pods, want Prometheus", peer)
				}
			}
		}
		// The selectors are the operator's to adapt: the file says so.
		if !strings.Contains(string(readFile(t, "kubernetes/networkpolicy.yaml")), "ADAPT") {
			t.Error("networkpolicy.yaml: the Prometheus selectors are not marked ADAPT for operators")
		}
	})

	t.Run("gossip only from the gateway's pods", func(t *testing.T) {
		for _, name := range []string{"gossip-tcp", "gossip-udp"} {
			rs := rulesFor(byName[name])
			if len(rs) == 0 {
				t.Errorf("no ingress rule admits the replicas to %s: the cluster could not form", name)
			}
			for _, r := range rs {
				if len(r.From) == 0 {
					t.Errorf("%s: a rule admits everyone: %+v", name, r)
				}
				for _, peer := range r.From {
					if peer.IPBlock != nil || peer.NamespaceSelector != nil || peer.PodSelector == nil ||
						peer.PodSelector.empty() || len(peer.PodSelector.MatchExpressions) > 0 ||
						!selects(stringMap(peer.PodSelector.MatchLabels), podLabels) {
						t.Errorf("%s: peer %+v, want a podSelector of this namespace that selects the gateway pods", name, peer)
					}
				}
			}
		}
	})
}

func stringMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
