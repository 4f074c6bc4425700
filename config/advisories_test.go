package config

import (
	"strings"
	"testing"
)

func TestAdvisoryLimitsWithoutEnabled(t *testing.T) {
	const limit = "\n  limits: [{name: l, metric: requests, limit: 1, window: 1m}]"
	const override = "\n  overrides: {alice: [{name: l, limit: 2}]}"
	tests := []struct {
		name string
		file string
		want string // fragment of the warning; "" for none
	}{
		{"limits, not enabled", "rate_limit:" + limit, "rate_limit.limits is set, but rate_limit.enabled is false: nothing is limited"},
		{"limits and overrides, not enabled", "rate_limit:" + limit + override, "rate_limit.limits and rate_limit.overrides are set, but rate_limit.enabled is false"},
		{"explicitly disabled", "rate_limit:\n  enabled: false" + limit, "rate_limit.limits is set, but rate_limit.enabled is false"},
		{"enabled", "rate_limit:\n  enabled: true" + limit, ""},
		{"enabled, no limits", "rate_limit:\n  enabled: true", "rate_limit.enabled: true, but rate_limit.limits is empty: nothing is limited"},
		{"nothing set", "listen: \":8080\"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, warnings := mustLoad(t, writeConfig(t, tt.file), nil)
			var limited []string
			for _, w := range warnings {
				if strings.Contains(w, "nothing is limited") {
					limited = append(limited, w)
				}
			}
			if tt.want == "" {
				if len(limited) != 0 {
					t.Errorf("got warnings %q, want none about limits", limited)
				}
				return
			}
			if len(limited) != 1 {
				t.Errorf("got warnings %q, want exactly one about limits", limited)
			}
			wantWarning(t, warnings, tt.want)
		})
	}
}

func TestAdvisoryLimitsEnabledFromEnvironment(t *testing.T) {
	path := writeConfig(t, "rate_limit:\n  limits: [{name: l, metric: requests, limit: 1, window: 1m}]")
	_, warnings := mustLoad(t, path, []string{"GENAI_GATEWAY_RATE_LIMIT_ENABLED=true"})
	for _, w := range warnings {
		if strings.Contains(w, "nothing is limited") {
			t.Errorf("got warning %q, want none: the environment enables limiting", w)
		}
	}
}
