package provider

import "testing"

func TestAzureURL(t *testing.T) {
	t.Parallel()
	az := Azure{BaseURL: "https://res.openai.azure.com/", APIVersion: "2024-06-01",
		Deployments: map[string]string{"gpt-4o": "prod-4o", "gpt-4o-mini": "mini deploy"}}
	tests := []struct {
		name              string
		az                Azure
		model, path, rawQ string
		want              string
		wantErr           bool
	}{
		{"mapped deployment", az, "gpt-4o", "/v1/chat/completions", "",
			"https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-06-01", false},
		{"model is its own deployment", az, "gpt-35-turbo", "/v1/embeddings", "",
			"https://res.openai.azure.com/openai/deployments/gpt-35-turbo/embeddings?api-version=2024-06-01", false},
		{"deployment escaped", az, "gpt-4o-mini", "/v1/completions", "",
			"https://res.openai.azure.com/openai/deployments/mini%20deploy/completions?api-version=2024-06-01", false},
		{"config version replaces the client's", az, "gpt-4o", "/v1/chat/completions", "api-version=1999-01-01&x=1",
			"https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-06-01&x=1", false},
		{"client version kept without config", Azure{BaseURL: "https://r.example"}, "m", "/v1/chat/completions", "api-version=2025-01-01-preview",
			"https://r.example/openai/deployments/m/chat/completions?api-version=2025-01-01-preview", false},
		{"default version", Azure{BaseURL: "https://r.example"}, "m", "/v1/chat/completions", "",
			"https://r.example/openai/deployments/m/chat/completions?api-version=" + DefaultAzureAPIVersion, false},
		{"base with path", Azure{BaseURL: "https://gw.example/azure", APIVersion: "v"}, "m", "/v1/audio/speech", "",
			"https://gw.example/azure/openai/deployments/m/audio/speech?api-version=v", false},
		{"model-less path", az, "", "/v1/files", "",
			"https://res.openai.azure.com/openai/files?api-version=2024-06-01", false},
		{"path without v1", az, "gpt-4o", "/chat/completions", "",
			"https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-06-01", false},
		{"deployment path needs a model", az, "", "/v1/chat/completions", "", "", true},
		{"relative base", Azure{BaseURL: "res.openai.azure.com"}, "m", "/v1/chat/completions", "", "", true},
		{"dot-dot", az, "m", "/v1/../admin", "", "", true},
		{"bad query", az, "m", "/v1/chat/completions", "a=%zz", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.az.URL(tt.model, tt.path, tt.rawQ)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
