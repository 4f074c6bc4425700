package deploy_test

import (
	"encoding/json"
	"fmt"
	"math"
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
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	GridPos     map[string]int `json:"gridPos"`
	Datasource  map[string]any `json:"datasource"`
	TimeFrom    string         `json:"timeFrom"` // the panel's own relative time range ("now/d": today so far)
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
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
	// No two panels of the top level share a cell of the grid, so none hides another.
	for i, p := range d.Panels {
		for _, q := range d.Panels[i+1:] {
			if overlap(p.GridPos, q.GridPos) {
				t.Errorf("panels %q %v and %q %v overlap on the grid", p.Title, p.GridPos, q.Title, q.GridPos)
			}
		}
	}

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
	// rate limiting, cluster members and gossip, spend.
	for _, n := range []string{"tokens_by_model_total", "tokens_by_user_by_model_total", "genai_gateway_requests_total",
		"genai_gateway_request_duration_seconds_bucket", "genai_gateway_time_to_first_token_seconds_bucket",
		"genai_gateway_rate_limited_requests_total", "genai_gateway_cluster_members", "genai_gateway_gossip_bytes_total",
		"genai_gateway_gossip_messages_total", "genai_gateway_gossip_dropped_messages_total", "genai_gateway_cost_usd_total"} {
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

// overlap reports whether two gridPos rectangles share a cell.
func overlap(a, b map[string]int) bool {
	return a["x"] < b["x"]+b["w"] && b["x"] < a["x"]+a["w"] && a["y"] < b["y"]+b["h"] && b["y"] < a["y"]+a["h"]
}

// rowPanels returns the panels under the top-level row titled title, up to the next row, or
// nil when the dashboard has no such row.
func rowPanels(d dashboard, title string) []panel {
	var row *panel
	for i, p := range d.Panels {
		if p.Type == "row" && p.Title == title {
			row = &d.Panels[i]
		}
	}
	if row == nil {
		return nil
	}
	if len(row.Panels) > 0 { // collapsed: the row holds them
		return row.Panels
	}
	end := math.MaxInt
	for _, p := range d.Panels {
		if y := p.GridPos["y"]; p.Type == "row" && y > row.GridPos["y"] && y < end {
			end = y
		}
	}
	var out []panel
	for _, p := range d.Panels {
		if y := p.GridPos["y"]; p.Type != "row" && y > row.GridPos["y"] && y < end {
			out = append(out, p)
		}
	}
	return out
}

// costMetric is the spend counter, in US dollars by user and model.
const costMetric = "genai_gateway_cost_usd_total"

// costRead matches the spend counter read the way a counter must be read: through rate or
// increase over a range.
var costRead = regexp.MustCompile(`\b(rate|increase)\(` + costMetric + `\{[^}]*\}\[[^\]]+\]\)`)

// TestDashboardSpendRow checks the spend row issue #12 asks for: spend per user and per model
// over time, the top spenders and the spend of today, every figure in dollars. Each of its
// queries is also run against a live Prometheus by TestMonitoringLive, like every panel.
func TestDashboardSpendRow(t *testing.T) {
	d := loadDashboard(t)
	ps := rowPanels(d, "Spend")
	if len(ps) == 0 {
		t.Fatal(`dashboard: no row "Spend" with panels`)
	}
	type want struct {
		what string
		ok   func(p panel, expr string) bool
	}
	groups := func(expr string, labels ...string) bool {
		return slices.Equal(groupingLabels(expr), labels)
	}
	wants := []want{
		{"spend per user over time (rate by user, a time series)", func(p panel, e string) bool {
			return p.Type == "timeseries" && groups(e, "user") && strings.Contains(e, "rate(")
		}},
		{"spend per model over time (rate by model, a time series)", func(p panel, e string) bool {
			return p.Type == "timeseries" && groups(e, "model") && strings.Contains(e, "rate(")
		}},
		{"top spenders (topk of the increase by user over the time range)", func(p panel, e string) bool {
			return strings.HasPrefix(e, "topk(") && groups(e, "user") && strings.Contains(e, "increase(") &&
				strings.Contains(e, "[$__range]")
		}},
		{"spend today (the increase over the panel's range, today so far)", func(p panel, e string) bool {
			return p.TimeFrom == "now/d" && strings.Contains(e, "increase(") && strings.Contains(e, "[$__range]")
		}},
	}
	found := make([]bool, len(wants))
	for _, p := range ps {
		if p.FieldConfig.Defaults.Unit != "currencyUSD" {
			t.Errorf("panel %q: unit %q, want currencyUSD", p.Title, p.FieldConfig.Defaults.Unit)
		}
		for _, tg := range p.Targets {
			e := tg.Expr
			if got := metricNames(e); !slices.Equal(got, []string{costMetric}) {
				t.Errorf("panel %q %s: reads %v, want %s alone", p.Title, tg.RefID, got, costMetric)
			}
			if n, m := strings.Count(e, costMetric), len(costRead.FindAllString(e, -1)); n != m {
				t.Errorf("panel %q %s: %q reads the counter %d times, %d of them through rate or increase over a range; want all",
					p.Title, tg.RefID, e, n, m)
			}
			// A rate is dollars per second: shown per hour, the figure people budget with.
			if strings.Contains(e, "rate(") != (strings.Contains(e, "3600 *") && strings.Contains(p.Title, "per hour")) {
				t.Errorf("panel %q %s: %q; want a rate shown as 3600 * rate with \"per hour\" in the title, and only a rate", p.Title, tg.RefID, e)
			}
			if strings.Contains(e, "increase(") && !tg.Instant {
				t.Errorf("panel %q %s: an increase over the range, want an instant query", p.Title, tg.RefID)
			}
			for i, w := range wants {
				if w.ok(p, e) {
					found[i] = true
				}
			}
		}
	}
	for i, w := range wants {
		if !found[i] {
			t.Errorf("spend row: no panel shows %s", w.what)
		}
	}
	if !slices.ContainsFunc(ps, func(p panel) bool { return p.TimeFrom == "now/M" }) {
		t.Error(`spend row: no panel shows the month so far (timeFrom "now/M"), the window of a monthly budget`)
	}
}
