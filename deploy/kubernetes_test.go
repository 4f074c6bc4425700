package deploy_test

import (
	"encoding/base64"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// --- Kubernetes ----------------------------------------------------------------------------

// kube holds the objects of deploy/kubernetes, by kind and name.
type kube map[string]map[string]any

func (k kube) get(t *testing.T, kind, name string) map[string]any {
	t.Helper()
	o, ok := k[kind+"/"+name]
	if !ok {
		t.Fatalf("deploy/kubernetes: no %s %s", kind, name)
	}
	return o
}

func (k kube) gatewayContainer(t *testing.T) map[string]any {
	t.Helper()
	spec := podSpec(t, k.get(t, "Deployment", "genai-gateway"))
	for _, c := range asSlice(spec["containers"]) {
		if asMap(c)["name"] == "genai-gateway" {
			return asMap(c)
		}
	}
	t.Fatal("Deployment genai-gateway: no container genai-gateway")
	return nil
}

func podSpec(t *testing.T, deploy map[string]any) map[string]any {
	t.Helper()
	return asMap(asMap(asMap(deploy["spec"])["template"])["spec"])
}

// loadKubernetes reads the resources of kustomization.yaml, checking that it lists exactly
// the manifests of the directory.
func loadKubernetes(t *testing.T) kube {
	t.Helper()
	var kz struct {
		Resources []string `yaml:"resources"`
	}
	yamlFile(t, "kubernetes/kustomization.yaml", &kz)
	files, _ := filepath.Glob("kubernetes/*.yaml")
	var onDisk []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			onDisk = append(onDisk, b)
		}
	}
	if got := slices.Sorted(slices.Values(kz.Resources)); !slices.Equal(got, onDisk) {
		t.Fatalf("kustomization resources: got %v, want every manifest of the directory %v", got, onDisk)
	}
	k := kube{}
	for _, r := range kz.Resources {
		docs, err := yamlDocs(readFile(t, filepath.Join("kubernetes", r)))
		if err != nil {
			t.Fatalf("kubernetes/%s: %v", r, err)
		}
		for _, d := range docs {
			kind, name := fmt.Sprint(d["kind"]), fmt.Sprint(asMap(d["metadata"])["name"])
			if d["apiVersion"] == nil || kind == "" || name == "" {
				t.Fatalf("kubernetes/%s: object without apiVersion, kind or name", r)
			}
			if _, dup := k[kind+"/"+name]; dup {
				t.Fatalf("kubernetes/%s: %s %s defined twice", r, kind, name)
			}
			k[kind+"/"+name] = d
		}
	}
	return k
}

// k8sGatewayConfig is the gateway configuration file of the ConfigMap.
func k8sGatewayConfig(t *testing.T) string {
	t.Helper()
	docs, err := yamlDocs(readFile(t, "kubernetes/configmap.yaml"))
	if err != nil || len(docs) != 1 {
		t.Fatalf("kubernetes/configmap.yaml: %v (%d documents)", err, len(docs))
	}
	s, ok := asMap(docs[0]["data"])["config.yaml"].(string)
	if !ok || s == "" {
		t.Fatal("kubernetes/configmap.yaml: no data config.yaml")
	}
	return s
}

// containerPorts maps each named container port to "number/protocol".
func containerPorts(c map[string]any) map[string]string {
	out := map[string]string{}
	for _, p := range asSlice(c["ports"]) {
		p := asMap(p)
		proto := "TCP"
		if p["protocol"] != nil {
			proto = fmt.Sprint(p["protocol"])
		}
		out[fmt.Sprint(p["name"])] = fmt.Sprintf("%v/%s", p["containerPort"], proto)
	}
	return out
}

// selects reports whether every label of selector is on labels.
func selects(selector, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	k := loadKubernetes(t)
	d := parseDockerfile(t)
	cfg := parseGatewayConfig(t, "ConfigMap", []byte(k8sGatewayConfig(t)))
	deploy := k.get(t, "Deployment", "genai-gateway")
	spec := asMap(deploy["spec"])
	pod := podSpec(t, deploy)
	podLabels := asMap(asMap(asMap(spec["template"])["metadata"])["labels"])
	c := k.gatewayContainer(t)
	ports := containerPorts(c)
	gossip := port(t, cfg.Cluster.Bind)

	for kind, api := range map[string]string{
		"Deployment/genai-gateway": "apps/v1", "Service/genai-gateway": "v1", "ConfigMap/genai-gateway": "v1",
		"Secret/genai-gateway": "v1", "PodDisruptionBudget/genai-gateway": "policy/v1",
		"ServiceMonitor/genai-gateway": "monitoring.coreos.com/v1", "PrometheusRule/genai-gateway": "monitoring.coreos.com/v1",
		"NetworkPolicy/genai-gateway": "networking.k8s.io/v1",
	} {
		if o, ok := k[kind]; !ok || o["apiVersion"] != api {
			t.Errorf("%s: want it, with apiVersion %s", kind, api)
		}
	}

	t.Run("deployment", func(t *testing.T) {
		if spec["replicas"] != 3 {
			t.Errorf("replicas: got %v, want 3", spec["replicas"])
		}
		if !selects(asMap(asMap(spec["selector"])["matchLabels"]), podLabels) {
			t.Errorf("selector %v does not match the pod labels %v", spec["selector"], podLabels)
		}
		want := map[string]string{
			"http":       fmt.Sprintf("%d/TCP", port(t, cfg.Listen)),
			"metrics":    fmt.Sprintf("%d/TCP", port(t, cfg.MetricsListen)),
			"gossip-tcp": fmt.Sprintf("%d/TCP", gossip),
			"gossip-udp": fmt.Sprintf("%d/UDP", gossip),
		}
		if !maps.Equal(ports, want) {
			t.Errorf("container ports: got %v, want %v", ports, want)
		}
		if c["command"] != nil {
			t.Errorf("command: got %v, want none (the image's ENTRYPOINT)", c["command"])
		}
		if args := asStrings(c["args"]); args != nil && !slices.Equal(args, d.cmd) {
			t.Errorf("args: got %q, want the image's CMD %q", args, d.cmd)
		}
		for probe, wantPath := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
			get := asMap(asMap(c[probe])["httpGet"])
			if get["path"] != wantPath || ports[fmt.Sprint(get["port"])] != want["http"] {
				t.Errorf("%s: got %v, want GET %s on the proxy port (http)", probe, get, wantPath)
			}
		}

		// preStop pause with the binary itself, then drain: the grace period covers both.
		pre := asStrings(asMap(asMap(asMap(c["lifecycle"])["preStop"])["exec"])["command"])
		if len(pre) != 3 || pre[0] != d.entrypoint[0] || pre[1] != "sleep" {
			t.Fatalf("preStop: got %q, want [%s sleep SECONDS]", pre, d.entrypoint[0])
		}
		pause, err := strconv.Atoi(pre[2])
		if err != nil {
			t.Fatalf("preStop sleep %q: want whole seconds", pre[2])
		}
		grace, _ := pod["terminationGracePeriodSeconds"].(int)
		if need := time.Duration(pause)*time.Second + cfg.drain(t); time.Duration(grace)*time.Second <= need {
			t.Errorf("terminationGracePeriodSeconds: got %d, want more than preStop %ds + drain_timeout %s", grace, pause, cfg.drain(t))
		}

		// Configuration mounted where the image's CMD reads it.
		var mount map[string]any
		for _, m := range asSlice(c["volumeMounts"]) {
			if asMap(m)["mountPath"] == path.Dir(d.configPath(t)) {
				mount = asMap(m)
			}
		}
		if mount == nil {
			t.Fatalf("no volume mounted at %s", path.Dir(d.configPath(t)))
		}
		var vol map[string]any
		for _, v := range asSlice(pod["volumes"]) {
			if asMap(v)["name"] == mount["name"] {
				vol = asMap(v)
			}
		}
		cm := asMap(vol["configMap"])
		if cm["name"] != "genai-gateway" {
			t.Errorf("config volume: got %v, want ConfigMap genai-gateway", vol)
		}
		for _, it := range asSlice(cm["items"]) {
			if p := asMap(it)["path"]; p != path.Base(d.configPath(t)) {
				t.Errorf("config volume item path: got %v, want %s", p, path.Base(d.configPath(t)))
			}
		}

		// Security and resources.
		psc, csc := asMap(pod["securityContext"]), asMap(c["securityContext"])
		if psc["runAsNonRoot"] != true || csc["readOnlyRootFilesystem"] != true || csc["allowPrivilegeEscalation"] != false ||
			!slices.Equal(asStrings(asMap(csc["capabilities"])["drop"]), []string{"ALL"}) {
			t.Errorf("securityContext: pod %v, container %v; want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, drop ALL", psc, csc)
		}
		res := asMap(c["resources"])
		if asMap(res["requests"])["cpu"] == nil || asMap(res["requests"])["memory"] == nil || asMap(res["limits"])["memory"] == nil {
			t.Errorf("resources: got %v, want cpu and memory requests and a memory limit", res)
		}

		// Per-pod environment: node name, advertise address, secrets.
		env := podEnv(t)
		if env["GENAI_GATEWAY_CLUSTER_NODE_NAME"] != "genai-gateway-7d9c-x2k4f" {
			t.Errorf("GENAI_GATEWAY_CLUSTER_NODE_NAME: got %q, want the pod name (fieldRef metadata.name)", env["GENAI_GATEWAY_CLUSTER_NODE_NAME"])
		}
		if got, want := env["GENAI_GATEWAY_CLUSTER_ADVERTISE"], fmt.Sprintf("10.1.2.3:%d", gossip); got != want {
			t.Errorf("GENAI_GATEWAY_CLUSTER_ADVERTISE: got %q, want %q (pod IP and gossip port)", got, want)
		}
		// The committed Secret must hold no working key: a placeholder that is not base64, so
		// that a pod deployed without the operator's own key refuses to start.
		if v := env["GENAI_GATEWAY_CLUSTER_SECRET_KEY"]; !strings.HasPrefix(v, "REPLACE_ME") {
			t.Errorf("gossip key: got %d characters, want the REPLACE_ME placeholder (no committed key)", len(v))
		} else if _, err := base64.StdEncoding.DecodeString(v); err == nil {
			t.Errorf("gossip key placeholder %q decodes as base64, want it refused", v)
		}
		if _, ok := env["OPENAI_API_KEY"]; !ok || !strings.Contains(k8sGatewayConfig(t), "${OPENAI_API_KEY}") {
			t.Error("OPENAI_API_KEY: want it from the Secret and expanded in the config's api_key")
		}
	})

	t.Run("services", func(t *testing.T) {
		headless := k.get(t, "Service", "genai-gateway-headless")
		hs := asMap(headless["spec"])
		if hs["clusterIP"] != "None" || hs["publishNotReadyAddresses"] != true {
			t.Errorf("headless Service: clusterIP %v, publishNotReadyAddresses %v; want None and true", hs["clusterIP"], hs["publishNotReadyAddresses"])
		}
		if !selects(asMap(hs["selector"]), podLabels) {
			t.Errorf("headless Service selector %v does not match the pod labels %v", hs["selector"], podLabels)
		}
		// cluster.join names the headless Service (namespace-relative or fully qualified).
		if len(cfg.Cluster.Join) != 1 {
			t.Fatalf("cluster.join: got %q, want the headless Service alone", cfg.Cluster.Join)
		}
		host, jp, _ := strings.Cut(cfg.Cluster.Join[0], ":")
		if host != "genai-gateway-headless" && !strings.HasPrefix(host, "genai-gateway-headless.") || jp != strconv.Itoa(gossip) {
			t.Errorf("cluster.join %q: want genai-gateway-headless[.NAMESPACE.svc...]:%d", cfg.Cluster.Join[0], gossip)
		}
		var protos []string
		for _, p := range asSlice(hs["ports"]) {
			p := asMap(p)
			if p["port"] != gossip || ports[fmt.Sprint(p["targetPort"])] != fmt.Sprintf("%d/%v", gossip, p["protocol"]) {
				t.Errorf("headless Service port %v: want port %d to the container's gossip port of that protocol", p, gossip)
			}
			protos = append(protos, fmt.Sprint(p["protocol"]))
		}
		if slices.Sort(protos); !slices.Equal(protos, []string{"TCP", "UDP"}) {
			t.Errorf("headless Service protocols: got %v, want TCP and UDP", protos)
		}

		svc := k.get(t, "Service", "genai-gateway")
		ss := asMap(svc["spec"])
		if !selects(asMap(ss["selector"]), podLabels) {
			t.Errorf("Service selector %v does not match the pod labels %v", ss["selector"], podLabels)
		}
		svcPorts := map[string]bool{}
		for _, p := range asSlice(ss["ports"]) {
			p := asMap(p)
			if _, ok := ports[fmt.Sprint(p["targetPort"])]; !ok {
				t.Errorf("Service port %v: targetPort is no container port", p)
			}
			svcPorts[fmt.Sprint(p["name"])] = true
		}
		if !svcPorts["http"] || !svcPorts["metrics"] {
			t.Errorf("Service ports: got %v, want http and metrics", svcPorts)
		}

		sm := asMap(k.get(t, "ServiceMonitor", "genai-gateway")["spec"])
		if !selects(asMap(asMap(sm["selector"])["matchLabels"]), asMap(asMap(svc["metadata"])["labels"])) {
			t.Errorf("ServiceMonitor selector %v does not select Service genai-gateway", sm["selector"])
		}
		if asMap(sm["selector"])["matchLabels"] != nil && selects(asMap(asMap(sm["selector"])["matchLabels"]), asMap(asMap(headless["metadata"])["labels"])) {
			t.Error("ServiceMonitor selects the headless Service too: replicas would be scraped twice")
		}
		for _, e := range asSlice(sm["endpoints"]) {
			e := asMap(e)
			if !svcPorts[fmt.Sprint(e["port"])] || e["path"] != "/metrics" {
				t.Errorf("ServiceMonitor endpoint %v: want port metrics, path /metrics", e)
			}
		}
		pdb := asMap(k.get(t, "PodDisruptionBudget", "genai-gateway")["spec"])
		if !selects(asMap(asMap(pdb["selector"])["matchLabels"]), podLabels) {
			t.Errorf("PodDisruptionBudget selector %v does not match the pod labels", pdb["selector"])
		}
	})

	t.Run("PrometheusRule equals prometheus/rules.yml", func(t *testing.T) {
		var rules map[string]any
		yamlFile(t, "prometheus/rules.yml", &rules)
		got := asMap(k.get(t, "PrometheusRule", "genai-gateway")["spec"])["groups"]
		if !reflect.DeepEqual(got, rules["groups"]) {
			t.Error("kubernetes/prometheusrule.yaml spec.groups differ from prometheus/rules.yml groups")
		}
	})
}
