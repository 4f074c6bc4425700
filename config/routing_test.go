package config

import (
	"reflect"
	"testing"
	"time"
)

func TestRoutingDefaults(t *testing.T) {
	cfg, _ := mustLoad(t, writeConfig(t, `upstreams: [{name: a, url: "http://127.0.0.1:8000"}]`), nil)
	want := Routing{Strategy: StrategyPriority, Retries: 2,
		RetryOn: []string{"connect", "429", "500", "502", "503", "504", "timeout"}, Cooldown: 30 * time.Second}
	if !reflect.DeepEqual(cfg.Routing, want) {
		t.Errorf("routing: got %+v, want %+v", cfg.Routing, want)
	}
	if u := cfg.Upstreams[0]; u.Weight != 1 || u.MaxInFlight != 0 {
		t.Errorf("upstreams[0]: got weight %d, max_in_flight %d, want 1, 0", u.Weight, u.MaxInFlight)
	}
}

func TestRoutingLoad(t *testing.T) {
	path := writeConfig(t, `
upstreams:
  - {name: a, url: "http://127.0.0.1:8000", models: ["gpt-4o*"], weight: 3, max_in_flight: 256}
  - {name: b, url: "http://127.0.0.1:8001", models: ["gpt-4o*"]}
routing:
  strategy: weighted
  retries: 1
  retry_on: [connect, 5xx]
  cooldown: 10s
  fallbacks:
    gpt-4o: [gpt-4o-mini, claude-sonnet-4-5]
    Meta-Llama-3.1-8B-Instruct: [gpt-4o-mini]
`)
	cfg, _ := mustLoad(t, path, []string{"GENAI_GATEWAY_ROUTING_RETRIES=0", "GENAI_GATEWAY_ROUTING_RETRY_ON=429,timeout"})
	want := Routing{Strategy: StrategyWeighted, Retries: 0, RetryOn: []string{"429", "timeout"}, Cooldown: 10 * time.Second,
		Fallbacks: map[string][]string{ // model names keep their case
			"gpt-4o":                     {"gpt-4o-mini", "claude-sonnet-4-5"},
			"Meta-Llama-3.1-8B-Instruct": {"gpt-4o-mini"},
		}}
	if !reflect.DeepEqual(cfg.Routing, want) {
		t.Errorf("routing: got %+v, want %+v", cfg.Routing, want)
	}
	if a, b := cfg.Upstreams[0], cfg.Upstreams[1]; a.Weight != 3 || a.MaxInFlight != 256 || b.Weight != 1 {
		t.Errorf("weights: got a %d (max_in_flight %d), b %d; want 3 (256), 1", a.Weight, a.MaxInFlight, b.Weight)
	}
}

func TestRoutingProblems(t *testing.T) {
	path := writeConfig(t, `
upstreams:
  - {name: a, url: "http://127.0.0.1:8000", weight: 0, max_in_flight: -1}
  - {name: b, url: "http://127.0.0.1:8001", weight: 1001}
routing:
  strategy: fastest
  retries: 11
  retry_on: [connect, 418]
  cooldown: 2h
  fallback: {}
  fallbacks: {gpt-4o: [gpt-4o-mini, gpt-4o, gpt-4o-mini, ""], gpt-4o-mini: []}
`)
	_, _, err := Load(path, nil, flags(t))
	wantProblem(t, err, "upstreams[0].weight", "from 1 to 1000", "got 0")
	wantProblem(t, err, "upstreams[0].max_in_flight", ">= 0")
	wantProblem(t, err, "upstreams[1].weight", "from 1 to 1000", "got 1001")
	wantProblem(t, err, "routing.strategy", "priority, weighted or least_busy", `"fastest"`)
	wantProblem(t, err, "routing.retries", "from 0 to 10")
	wantProblem(t, err, "routing.retry_on[1]", `"418"`)
	wantProblem(t, err, "routing.cooldown", "at most 1h")
	wantProblem(t, err, "routing.fallback", "unknown key", "fallbacks")
	wantProblem(t, err, "routing.fallbacks.gpt-4o[1]", `other than "gpt-4o"`)
	wantProblem(t, err, "routing.fallbacks.gpt-4o[2]", "earlier fallbacks", `"gpt-4o-mini"`)
	wantProblem(t, err, "routing.fallbacks.gpt-4o[3]", `got ""`)
	wantProblem(t, err, "routing.fallbacks.gpt-4o-mini", "1 to 10 models", "got 0")

	c := Default()
	c.Routing.Cooldown = 0
	wantProblem(t, c.Validate(), "routing.cooldown", "> 0")
	c = Default()
	c.Upstreams[0].Weight = 0 // a Config built in code: weight 1
	if err := c.Validate(); err != nil {
		t.Errorf("weight 0 in code: got %v, want valid", err)
	}
}
