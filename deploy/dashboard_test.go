package deploy_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// --- dashboard and rules, statically ---------------------------------------------------------

// dashboard is the part of the Grafana JSON the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
}

type templateVar struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	AllValue   string `json:"allValue"`
	Definition string `json:"definition"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	GridPos    map[string]int `json:"gridPos"`
	Datasource map[string]any `json:"datasource"`
	Targets    []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
		Instant      bool   `json:"instant"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, "grafana/genai-gateway.json"), &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	return d
}

// dashboardQuery is one PromQL expression of the dashboard, with what it must show.
type dashboardQuery struct {
	where  string // panel title and refId
	expr   string // template variables substituted
	legend []string
}

// grafanaVarRE matches $name, ${name}, ${name:format} and [[name]].
var grafanaVarRE = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// substitute replaces Grafana's variables the way Grafana would with every template variable on
// "All" and a time range of a minute.
func substitute(t *testing.T, d dashboard, expr string) string {
	t.Helper()
	values := map[string]string{"__rate_interval": "1m", "__interval": "15s", "__range": "1m",
		"__range_s": "60", "__interval_ms": "15000"}
	for _, v := range d.Templating.List {
		if v.Type != "datasource" {
			values[v.Name] = v.AllValue
		}
	}
	var missing []string
	out := grafanaVarRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVarRE.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if missing != nil {
		t.Errorf("expression %q: undefined variables %v", expr, missing)
	}
	return out
}

// dashboardQueries returns every panel target and every query variable, substituted.
func dashboardQueries(t *testing.T, d dashboard) []dashboardQuery {
	t.Helper()
	var out []dashboardQuery
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				var legend []string
				for _, m := range regexp.MustCompile(`\{\{\s*([A-Za-z0-9_]+)\s*\}\}`).FindAllStringSubmatch(tg.LegendFormat, -1) {
					legend = append(legend, m[1])
				}
				out = append(out, dashboardQuery{where: fmt.Sprintf("panel %q %s", p.Title, tg.RefID),
					expr: substitute(t, d, tg.Expr), legend: legend})
			}
		}
	}
	walk(d.Panels)
	// label_values(SELECTOR, label) -> SELECTOR must have series carrying label.
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := regexp.MustCompile(`^label_values\((.+),\s*([A-Za-z0-9_]+)\)$`).FindStringSubmatch(strings.TrimSpace(v.Definition))
		if m == nil {
			t.Errorf("variable %s: got definition %q, want label_values(SELECTOR, LABEL)", v.Name, v.Definition)
			continue
		}
		out = append(out, dashboardQuery{where: "variable " + v.Name, expr: substitute(t, d, m[1]), legend: []string{m[2]}})
	}
	return out
}

// ruleExprs returns alert name -> expression of prometheus/rules.yml, and the labels each
// alert's annotations use.
func ruleExprs(t *testing.T) (exprs map[string]string, labels map[string][]string) {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Record      string            `yaml:"record"`
				Expr        string            `yaml:"expr"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	yamlFile(t, "prometheus/rules.yml", &f)
	exprs, labels = map[string]string{}, map[string][]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			exprs[name] = r.Expr
			for _, a := range r.Annotations {
				for _, m := range regexp.MustCompile(`\$labels\.([A-Za-z0-9_]+)`).FindAllStringSubmatch(a, -1) {
					if !slices.Contains(labels[name], m[1]) {
						labels[name] = append(labels[name], m[1])
					}
				}
			}
		}
	}
	return exprs, labels
}

func TestDashboardAndRulesStatic(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard: uid %q, title %q; want both", d.UID, d.Title)
	}
	if !slices.ContainsFunc(d.Templating.List, func(v templateVar) bool {
		return v.Name == "datasource" && v.Type == "datasource"
	}) {
		t.Error("dashboard: want a datasource variable named datasource")
	}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("panel %q: id %d missing or not unique", p.Title, p.ID)
			}
			ids[p.ID] = true
			if g := p.GridPos; g["w"] <= 0 || g["x"]+g["w"] > 24 || g["h"] <= 0 {
				t.Errorf("panel %q: gridPos %v outside the 24-column grid", p.Title, g)
			}
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q: no query", p.Title)
			}
			if p.Datasource["uid"] != "${datasource}" {
				t.Errorf("panel %q: datasource %v, want uid ${datasource}", p.Title, p.Datasource)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" || refs[tg.RefID] {
					t.Errorf("panel %q: target %q empty or refId not unique", p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
			}
		}
	}
	walk(d.Panels)

	queries := dashboardQueries(t, d)
	if len(queries) < 20 {
		t.Errorf("got %d dashboard queries, want the panels the issue asks for", len(queries))
	}
	read := map[string]bool{}
	for _, q := range queries {
		for _, n := range metricNames(q.expr) {
			read[n] = true
			if !inContract(n) {
				t.Errorf("%s reads %s, which is not a metric of the contract", q.where, n)
			}
		}
	}
	// The panels: tokens by model and user, requests by code, latency and TTFT,
	// rate limiting, cluster members and gossip.
	for _, n := range []string{"tokens_by_model_total", "tokens_by_user_by_model_total", "genai_gateway_requests_total",
		"genai_gateway_request_duration_seconds_bucket", "genai_gateway_time_to_first_token_seconds_bucket",
		"genai_gateway_rate_limited_requests_total", "genai_gateway_cluster_members", "genai_gateway_gossip_bytes_total",
		"genai_gateway_gossip_messages_total", "genai_gateway_gossip_dropped_messages_total"} {
		if !read[n] {
			t.Errorf("dashboard: no panel reads %s", n)
		}
	}

	exprs, _ := ruleExprs(t)
	if len(exprs) < 5 {
		t.Errorf("got %d rules, want at least 5", len(exprs))
	}
	for name, e := range exprs {
		for _, n := range metricNames(e) {
			if !inContract(n) {
				t.Errorf("rule %s reads %s, which is not a metric of the contract", name, n)
			}
		}
		if !strings.Contains(e, `job="genai-gateway"`) {
			t.Errorf("rule %s: want it restricted to job=\"genai-gateway\"", name)
		}
	}
}
