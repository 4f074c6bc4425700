package deploy_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// --- the files agree with each other -------------------------------------------------------

// dockerfile is what the tests read from deploy/Dockerfile.
type dockerfile struct {
	stages      []string // FROM images
	runs        []string
	copies      [][]string // COPY arguments
	expose      []string   // "8080/tcp", ...
	healthcheck []string   // CMD array
	entrypoint  []string
	cmd         []string
	user        string
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	var d dockerfile
	text := strings.ReplaceAll(string(readFile(t, "Dockerfile")), "\\\n", " ")
	jsonArray := func(s string) []string {
		var a []string
		if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &a); err != nil {
			t.Fatalf("Dockerfile: %q is not a JSON array (exec form): %v", s, err)
		}
		return a
	}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			d.stages = append(d.stages, strings.Fields(rest)[0])
		case "RUN":
			d.runs = append(d.runs, rest)
		case "COPY":
			d.copies = append(d.copies, strings.Fields(rest))
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				d.expose = append(d.expose, p)
			}
		case "HEALTHCHECK":
			_, c, ok := strings.Cut(rest, "CMD ")
			if !ok {
				t.Fatalf("Dockerfile: HEALTHCHECK without CMD: %q", rest)
			}
			d.healthcheck = jsonArray(c)
		case "ENTRYPOINT":
			d.entrypoint = jsonArray(rest)
		case "CMD":
			d.cmd = jsonArray(rest)
		case "USER":
			d.user = rest
		}
	}
	return d
}

// configPath is the --config argument of the image's CMD.
func (d dockerfile) configPath(t *testing.T) string {
	t.Helper()
	i := slices.Index(d.cmd, "--config")
	if i < 0 || i+1 >= len(d.cmd) {
		t.Fatalf("Dockerfile CMD %q: want --config PATH", d.cmd)
	}
	return d.cmd[i+1]
}

// wantExpose is the EXPOSE set a gateway configuration implies.
func wantExpose(t *testing.T, c gatewayConfig) []string {
	t.Helper()
	g := port(t, c.Cluster.Bind)
	e := []string{
		fmt.Sprintf("%d/tcp", port(t, c.Listen)), fmt.Sprintf("%d/tcp", port(t, c.MetricsListen)),
		fmt.Sprintf("%d/tcp", g), fmt.Sprintf("%d/udp", g),
	}
	sort.Strings(e)
	return e
}

func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t)
	k8s := parseGatewayConfig(t, "ConfigMap", []byte(k8sGatewayConfig(t)))
	compose := parseGatewayConfig(t, "compose/config.yaml", readFile(t, "compose/config.yaml"))

	if len(d.stages) < 2 {
		t.Fatalf("got stages %v, want a multi-stage build", d.stages)
	}
	final := d.stages[len(d.stages)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("runtime image: got %s, want gcr.io/distroless/static-debian12:nonroot or scratch", final)
	}
	if d.user != "65532:65532" && d.user != "65532" && d.user != "nonroot" && d.user != "nonroot:nonroot" {
		t.Errorf("USER: got %q, want a non-root user (65532)", d.user)
	}

	// The build runs exactly `make build`, and the Makefile's build target is the static build.
	var buildRun string
	for _, r := range d.runs {
		if strings.Contains(r, "make build") {
			buildRun = r
		}
	}
	if buildRun == "" {
		t.Errorf("got RUN %q, want one running `make build`", d.runs)
	}
	if !slices.ContainsFunc(d.runs, func(r string) bool {
		return regexp.MustCompile(`(apt-get install|apk add)\b.*\bmake\b`).MatchString(r)
	}) {
		t.Errorf("got RUN %q, want make installed in the build stage", d.runs)
	}
	makefile := string(readFile(t, filepath.Join(repoRoot, "Makefile")))
	recipe := regexp.MustCompile(`(?m)^build:.*\n((?:\t.*\n)+)`).FindStringSubmatch(makefile)
	if recipe == nil {
		t.Fatal("Makefile: no build target")
	}
	for _, want := range []string{"CGO_ENABLED=0", "go build", "-trimpath", "./cmd/..."} {
		if !strings.Contains(strings.ReplaceAll(recipe[1], "$(GO)", "go"), want) {
			t.Errorf("Makefile build recipe %q: want %q in it", recipe[1], want)
		}
	}
	binDir := "bin"
	if m := regexp.MustCompile(`(?m)^BIN\s*\??=\s*(\S+)`).FindStringSubmatch(makefile); m != nil {
		binDir = m[1]
	}
	if !strings.Contains(strings.ReplaceAll(recipe[1], "$(BIN)", binDir), "-o "+binDir+"/") ||
		binDir != "bin" {
		t.Errorf("Makefile build recipe %q: want -o bin/ (the Dockerfile copies bin/*)", recipe[1])
	}
	for target, want := range map[string]string{"image": "deploy/Dockerfile", "demo": "deploy/demo.sh"} {
		m := regexp.MustCompile(`(?m)^` + target + `:.*\n((?:\t.*\n)+)`).FindStringSubmatch(makefile)
		if m == nil || !strings.Contains(m[1], want) {
			t.Errorf("Makefile: want a %s target using %s", target, want)
		}
	}

	// Both binaries are copied from the build stage to the root of the image; every other COPY
	// source exists in the build context (the repository root).
	var copied []string
	for _, c := range d.copies {
		if strings.HasPrefix(c[0], "--from=") {
			copied = append(copied, c[len(c)-1])
			if !strings.Contains(c[1], "/bin/") && !strings.HasPrefix(c[1], "bin/") {
				t.Errorf("COPY %q: want a binary from bin/", c)
			}
			continue
		}
		args := slices.DeleteFunc(slices.Clone(c), func(a string) bool { return strings.HasPrefix(a, "--") })
		for _, src := range args[:len(args)-1] {
			if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
				t.Errorf("COPY %s: not in the build context: %v", src, err)
			}
		}
	}
	if want := []string{"/genai-gateway", "/mockllm"}; !slices.Equal(copied, want) {
		t.Errorf("binaries copied: got %q, want %q", copied, want)
	}

	// The image ships a configuration where its CMD reads it, serving the exposed ports.
	var builtin string
	for _, c := range d.copies {
		if !strings.HasPrefix(c[0], "--") && c[len(c)-1] == d.configPath(t) {
			builtin = c[0]
		}
	}
	if builtin == "" {
		t.Errorf("no COPY of a default configuration to %s: the image's CMD would fail without a mount", d.configPath(t))
	} else {
		ic := parseGatewayConfig(t, builtin, readFile(t, filepath.Join(repoRoot, builtin)))
		for _, addr := range []string{ic.Listen, ic.MetricsListen} {
			if p := fmt.Sprintf("%d/tcp", port(t, addr)); !slices.Contains(d.expose, p) {
				t.Errorf("%s listens on %s, which the image does not EXPOSE (%v)", builtin, addr, d.expose)
			}
		}
	}

	if got, want := slices.Sorted(slices.Values(d.expose)), wantExpose(t, k8s); !slices.Equal(got, want) {
		t.Errorf("EXPOSE: got %v, want %v (the ports of the ConfigMap's config)", got, want)
	}
	if got, want := slices.Sorted(slices.Values(d.expose)), wantExpose(t, compose); !slices.Equal(got, want) {
		t.Errorf("EXPOSE: got %v, want %v (the ports of compose/config.yaml)", got, want)
	}

	if !slices.Equal(d.entrypoint, []string{"/genai-gateway"}) {
		t.Errorf("ENTRYPOINT: got %q, want [/genai-gateway]", d.entrypoint)
	}
	if got := d.configPath(t); got != "/etc/genai-gateway/config.yaml" {
		t.Errorf("CMD config: got %s, want /etc/genai-gateway/config.yaml", got)
	}

	// HEALTHCHECK: the binary itself, probing /healthz on the proxy port.
	hc := d.healthcheck
	if len(hc) < 2 || hc[0] != "/genai-gateway" || hc[1] != "healthcheck" {
		t.Fatalf("HEALTHCHECK CMD: got %q, want /genai-gateway healthcheck --url ...", hc)
	}
	u := healthcheckURL(t, hc)
	if u.Path != "/healthz" || u.Port() != strconv.Itoa(port(t, k8s.Listen)) {
		t.Errorf("HEALTHCHECK URL: got %s, want /healthz on port %d", u, port(t, k8s.Listen))
	}
}

// healthcheckURL is the --url of the HEALTHCHECK command.
func healthcheckURL(t *testing.T, hc []string) *url.URL {
	t.Helper()
	i := slices.Index(hc, "--url")
	if i < 0 || i+1 >= len(hc) {
		t.Fatalf("HEALTHCHECK %q: want --url URL", hc)
	}
	u, err := url.Parse(hc[i+1])
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func composeFile(t *testing.T) map[string]any {
	t.Helper()
	var c map[string]any
	yamlFile(t, "docker-compose.yml", &c)
	return c
}

func composeServices(t *testing.T) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for name, s := range asMap(composeFile(t)["services"]) {
		out[name] = asMap(s)
	}
	return out
}

// composeVolumes maps each bind-mount target of a service to its source, relative to deploy/.
func composeVolumes(t *testing.T, svc map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, v := range asSlice(svc["volumes"]) {
		parts := strings.Split(fmt.Sprint(v), ":")
		if len(parts) < 2 {
			t.Fatalf("volume %q: want SOURCE:TARGET", v)
		}
		out[parts[1]] = parts[0]
	}
	return out
}

func TestCompose(t *testing.T) {
	d := parseDockerfile(t)
	services := composeServices(t)
	cfg := parseGatewayConfig(t, "compose/config.yaml", readFile(t, "compose/config.yaml"))

	var gateways []string
	for name := range services {
		if strings.HasPrefix(name, "gateway-") {
			gateways = append(gateways, name)
		}
	}
	sort.Strings(gateways)
	if want := []string{"gateway-1", "gateway-2", "gateway-3"}; !slices.Equal(gateways, want) {
		t.Fatalf("gateway services: got %v, want %v", gateways, want)
	}
	for _, need := range []string{"mockllm", "nginx", "prometheus", "grafana"} {
		if services[need] == nil {
			t.Errorf("docker-compose.yml: no %s service", need)
		}
	}

	// Every bind-mounted source exists.
	for name, svc := range services {
		for target, src := range composeVolumes(t, svc) {
			if !strings.HasPrefix(src, ".") {
				continue // a named volume
			}
			if _, err := os.Stat(src); err != nil {
				t.Errorf("service %s: volume %s -> %s: %v", name, src, target, err)
			}
		}
	}

	// Gateways: built from deploy/Dockerfile in the repository root, the shared config mounted
	// where the image's CMD reads it, a distinct node name each, joining all three by name.
	var wantJoin []string
	for _, g := range gateways {
		svc := services[g]
		build := asMap(svc["build"])
		if filepath.Clean(filepath.Join(".", fmt.Sprint(build["context"]))) != filepath.Clean(repoRoot) ||
			build["dockerfile"] != "deploy/Dockerfile" {
			t.Errorf("%s build: got %v, want context .. and dockerfile deploy/Dockerfile", g, build)
		}
		if src := composeVolumes(t, svc)[d.configPath(t)]; filepath.Clean(src) != "compose/config.yaml" {
			t.Errorf("%s: got %q mounted at %s, want ./compose/config.yaml", g, src, d.configPath(t))
		}
		env := composeEnv(t, g, map[string]string{"GOSSIP_KEY": testGossipKey})
		if env["GENAI_GATEWAY_CLUSTER_NODE_NAME"] != g {
			t.Errorf("%s: GENAI_GATEWAY_CLUSTER_NODE_NAME: got %q, want %q", g, env["GENAI_GATEWAY_CLUSTER_NODE_NAME"], g)
		}
		var expose []string
		for _, e := range asSlice(svc["expose"]) {
			s := fmt.Sprint(e)
			if !strings.Contains(s, "/") {
				s += "/tcp"
			}
			expose = append(expose, s)
		}
		if got, want := slices.Sorted(slices.Values(expose)), wantExpose(t, cfg); !slices.Equal(got, want) {
			t.Errorf("%s expose: got %v, want %v", g, got, want)
		}
		grace, err := time.ParseDuration(fmt.Sprint(svc["stop_grace_period"]))
		if err != nil || grace <= cfg.drain(t) {
			t.Errorf("%s stop_grace_period: got %v, want more than drain_timeout %s", g, svc["stop_grace_period"], cfg.drain(t))
		}
		wantJoin = append(wantJoin, fmt.Sprintf("%s:%d", g, port(t, cfg.Cluster.Bind)))
	}
	if !cfg.Cluster.Enabled || !slices.Equal(cfg.Cluster.Join, wantJoin) {
		t.Errorf("compose/config.yaml cluster: enabled %v, join %q; want enabled, join %q",
			cfg.Cluster.Enabled, cfg.Cluster.Join, wantJoin)
	}
	if cfg.Cluster.NodeName != "" {
		t.Errorf("compose/config.yaml: node_name %q is shared by all replicas; want it from the environment", cfg.Cluster.NodeName)
	}

	// mockllm listens where the config's upstream points.
	mock := services["mockllm"]
	args := append(asStrings(mock["entrypoint"]), asStrings(mock["command"])...)
	i := slices.Index(args, "--addr")
	if len(args) == 0 || args[0] != "/mockllm" || i < 0 || i+1 >= len(args) {
		t.Fatalf("mockllm: got %q, want /mockllm --addr HOST:PORT", args)
	}
	if len(cfg.Upstreams) == 0 {
		t.Fatal("compose/config.yaml: no upstream")
	}
	up, err := url.Parse(cfg.Upstreams[len(cfg.Upstreams)-1].URL)
	if err != nil || up.Hostname() != "mockllm" || up.Port() != strconv.Itoa(port(t, args[i+1])) {
		t.Errorf("compose upstream %v: want http://mockllm:%d", up, port(t, args[i+1]))
	}

	// nginx balances over the three proxy ports and listens on the port it publishes.
	conf := string(readFile(t, "compose/nginx.conf"))
	var servers []string
	for _, m := range regexp.MustCompile(`(?m)^\s*server\s+([^\s;{]+)[^;{]*;`).FindAllStringSubmatch(conf, -1) {
		servers = append(servers, m[1])
	}
	var wantServers []string
	for _, g := range gateways {
		wantServers = append(wantServers, fmt.Sprintf("%s:%d", g, port(t, cfg.Listen)))
	}
	if !slices.Equal(servers, wantServers) {
		t.Errorf("nginx upstream servers: got %v, want %v", servers, wantServers)
	}
	if !strings.Contains(conf, "proxy_buffering off") {
		t.Error("nginx.conf: want proxy_buffering off, or streams are held back")
	}
	listen := regexp.MustCompile(`(?m)^\s*listen\s+(\d+)`).FindStringSubmatch(conf)
	nginxVols := composeVolumes(t, services["nginx"])
	if listen == nil || !slices.ContainsFunc(asStrings(services["nginx"]["ports"]), func(p string) bool {
		return strings.HasSuffix(p, ":"+listen[1])
	}) || filepath.Clean(nginxVols["/etc/nginx/nginx.conf"]) != "compose/nginx.conf" {
		t.Errorf("nginx: listen %v, ports %v, volumes %v: want the listen port published and compose/nginx.conf mounted",
			listen, services["nginx"]["ports"], nginxVols)
	}

	// Prometheus scrapes every gateway's operator port, with rules.yml next to its config.
	prom := services["prometheus"]
	promVols := composeVolumes(t, prom)
	var promCfgPath string
	for _, a := range asStrings(prom["command"]) {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			promCfgPath = v
		}
	}
	if src := promVols[path.Dir(promCfgPath)]; filepath.Clean(src) != "prometheus" || path.Base(promCfgPath) != "prometheus.yml" {
		t.Errorf("prometheus: --config.file=%s with volumes %v; want deploy/prometheus mounted at its directory", promCfgPath, promVols)
	}
	var wantTargets []string
	for _, g := range gateways {
		wantTargets = append(wantTargets, fmt.Sprintf("%s:%d", g, port(t, cfg.MetricsListen)))
	}
	if got := scrapeTargets(t, gatewayJob(t, promConfig(t))); !slices.Equal(got, wantTargets) {
		t.Errorf("prometheus.yml genai-gateway targets: got %v, want %v", got, wantTargets)
	}

	// Grafana: the provisioning directory, and the dashboard where the provider looks for it.
	graf := composeVolumes(t, services["grafana"])
	if filepath.Clean(graf["/etc/grafana/provisioning"]) != "grafana/provisioning" {
		t.Errorf("grafana: got volumes %v, want grafana/provisioning at /etc/grafana/provisioning", graf)
	}
	var provider struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	yamlFile(t, "grafana/provisioning/dashboards/genai-gateway.yaml", &provider)
	if len(provider.Providers) != 1 {
		t.Fatalf("dashboard providers: got %d, want 1", len(provider.Providers))
	}
	dashTarget := path.Join(provider.Providers[0].Options.Path, "genai-gateway.json")
	if filepath.Clean(graf[dashTarget]) != "grafana/genai-gateway.json" {
		t.Errorf("grafana: got volumes %v, want grafana/genai-gateway.json at %s", graf, dashTarget)
	}
	var ds struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	yamlFile(t, "grafana/provisioning/datasources/prometheus.yaml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana data sources: got %+v, want the compose prometheus at http://prometheus:9090", ds.Datasources)
	}
}

func promConfig(t *testing.T) map[string]any {
	t.Helper()
	var c map[string]any
	yamlFile(t, "prometheus/prometheus.yml", &c)
	return c
}

// gatewayJob is the scrape config of job genai-gateway.
func gatewayJob(t *testing.T, cfg map[string]any) map[string]any {
	t.Helper()
	for _, sc := range asSlice(cfg["scrape_configs"]) {
		if asMap(sc)["job_name"] == "genai-gateway" {
			return asMap(sc)
		}
	}
	t.Fatal("prometheus.yml: no scrape config with job_name genai-gateway (rules and dashboard use that job)")
	return nil
}

func scrapeTargets(t *testing.T, job map[string]any) []string {
	t.Helper()
	var out []string
	for _, sc := range asSlice(job["static_configs"]) {
		out = append(out, asStrings(asMap(sc)["targets"])...)
	}
	return out
}
