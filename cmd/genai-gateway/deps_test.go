package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportDirection keeps the package graph one-way: proxy may import limiter;
// limiter, cluster and config import no sibling; only cmd imports them all.
func TestImportDirection(t *testing.T) {
	const mod = "github.com/genai-gateway/genai-gateway/"
	siblings := []string{"config", "proxy", "limiter", "cluster"}
	allowed := map[string][]string{
		"config":  nil,
		"limiter": nil,
		"cluster": nil,
		"proxy":   {"limiter"},
	}
	for pkg, ok := range allowed {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", mod+pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
			}
			deps := map[string]bool{}
			for _, line := range strings.Fields(string(out)) {
				deps[line] = true
			}
			for _, s := range siblings {
				if s == pkg {
					continue
				}
				want := false
				for _, a := range ok {
					want = want || a == s
				}
				if deps[mod+s] && !want {
					t.Errorf("%s imports %s: got a dependency the layering forbids", pkg, s)
				}
			}
		})
	}
}
