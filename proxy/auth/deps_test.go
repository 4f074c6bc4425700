package auth

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNoGatewayPackage keeps proxy/auth a leaf: the proxy imports it,
// cmd converts config.Auth into its Config, and it imports neither.
func TestImportsNoGatewayPackage(t *testing.T) {
	const mod = "github.com/genai-gateway/genai-gateway/"
	out, err := exec.Command("go", "list", "-deps", mod+"proxy/auth").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, mod) && dep != mod+"proxy/auth" {
			t.Errorf("proxy/auth imports %s: got a gateway package, want none", dep)
		}
	}
}
