package config

import (
	"strings"
	"testing"
)

// TestUpstreamProviders loads the provider keys of every kind of upstream
// from a file: provider, Azure deployments (model names keep their case)
// and api_version; openai is the default.
func TestUpstreamProviders(t *testing.T) {
	path := writeConfig(t, `
upstreams:
  - {name: oa, url: "https://api.openai.com", models: ["gpt-*"]}
  - name: claude
    url: https://api.anthropic.com
    provider: anthropic
    models: ["claude-*"]
    api_key: sk-ant-test-key
  - name: az
    url: https://example.openai.azure.com
    provider: azure
    api_version: "2024-10-21"
    deployments: {GPT-4o-Mini: prod-mini, o3: o3-east}
`)
	cfg, _ := mustLoad(t, path, nil)
	if got := len(cfg.Upstreams); got != 3 {
		t.Fatalf("upstreams: got %d, want 3", got)
	}
	oa, cl, az := cfg.Upstreams[0], cfg.Upstreams[1], cfg.Upstreams[2]
	if oa.Provider != "" || oa.EffectiveProvider() != ProviderOpenAI {
		t.Errorf("default provider: got %q (effective %q), want empty (openai)", oa.Provider, oa.EffectiveProvider())
	}
	if cl.EffectiveProvider() != ProviderAnthropic {
		t.Errorf("claude provider: got %q, want anthropic", cl.Provider)
	}
	if az.EffectiveProvider() != ProviderAzure || az.APIVersion != "2024-10-21" {
		t.Errorf("azure: got provider %q api_version %q", az.Provider, az.APIVersion)
	}
	if got := az.Deployments["GPT-4o-Mini"]; got != "prod-mini" {
		t.Errorf("deployments[GPT-4o-Mini]: got %q, want prod-mini (all: %v)", got, az.Deployments)
	}
	if got := az.Deployments["o3"]; got != "o3-east" {
		t.Errorf("deployments[o3]: got %q, want o3-east", got)
	}

	bad := writeConfig(t, `
upstreams:
  - {name: a, url: "http://a", provider: vertex}
  - {name: b, url: "http://b", api_version: "2024-10-21"}
`)
	_, _, err := Load(bad, nil, flags(t))
	if err == nil {
		t.Fatal("Load: got no error, want provider and api_version problems")
	}
	for _, want := range []string{"upstreams[0].provider: must be openai, anthropic or azure", "upstreams[1].api_version: applies to provider azure only"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error: got\n%v\nwant it to contain %q", err, want)
		}
	}
}
