package config

import (
	"reflect"
	"testing"
	"time"
)

// Viper folds the case of every map key it holds; user and key names are
// data and must keep theirs: Alice and alice are two users.
func TestUserNamesKeepTheirCase(t *testing.T) {
	const h1 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	const h2 = "486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7"
	limits := "  limits: [{name: req, metric: requests, limit: 10, window: 1m}]\n"
	want := map[string][]Limit{
		"Alice": {{Name: "req", Metric: "requests", Limit: 1, Window: time.Minute}},
		"alice": {{Name: "req", Metric: "requests", Limit: 2, Window: time.Minute}},
	}
	tests := []struct {
		name string
		file string
		env  []string
	}{
		{"map form", "rate_limit:\n" + limits + "  overrides:\n    Alice: [{name: req, limit: 1}]\n    alice: [{name: req, limit: 2}]\n", nil},
		{"list form", "rate_limit:\n" + limits + "  overrides:\n    - {user: Alice, limits: [{name: req, limit: 1}]}\n    - {user: alice, limits: [{name: req, limit: 2}]}\n", nil},
		{"list form, keys in any case, a user from ${VAR}", "rate_limit:\n" + limits + "  overrides:\n    - {User: \"${FIRST}\", Limits: [{name: req, limit: 1}]}\n    - {user: alice, limits: [{name: req, limit: 2}]}\n",
			[]string{"FIRST=Alice"}},
		{"map form from the environment", "rate_limit:\n" + limits,
			[]string{"GENAI_GATEWAY_RATE_LIMIT_OVERRIDES={Alice: [{name: req, limit: 1}], alice: [{name: req, limit: 2}]}"}},
		{"list form from the environment", "rate_limit:\n" + limits,
			[]string{"GENAI_GATEWAY_RATE_LIMIT_OVERRIDES=[{user: Alice, limits: [{name: req, limit: 1}]}, {user: alice, limits: [{name: req, limit: 2}]}]"}},
		{"whole section from the environment", "",
			[]string{"GENAI_GATEWAY_RATE_LIMIT={limits: [{name: req, metric: requests, limit: 10, window: 1m}], overrides: {Alice: [{name: req, limit: 1}], alice: [{name: req, limit: 2}]}}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := mustLoad(t, writeConfig(t, tt.file), tt.env)
			if !reflect.DeepEqual(cfg.RateLimit.Overrides, want) {
				t.Errorf("got overrides %+v, want %+v", cfg.RateLimit.Overrides, want)
			}
		})
	}

	cfg, _ := mustLoad(t, writeConfig(t, "auth:\n  keys:\n"+
		"    - {name: Search-Team, user: Alice, sha256: "+h1+"}\n"+
		"    - {name: search-team, user: alice, sha256: "+h2+"}\n"), nil)
	var got [][2]string
	for _, k := range cfg.Auth.Keys {
		got = append(got, [2]string{k.Name, k.EffectiveUser()})
	}
	if wantKeys := [][2]string{{"Search-Team", "Alice"}, {"search-team", "alice"}}; !reflect.DeepEqual(got, wantKeys) {
		t.Errorf("auth.keys names and users: got %q, want %q", got, wantKeys)
	}
}

func TestOverridesListFormErrors(t *testing.T) {
	tests := []struct{ name, yaml, key, fragment string }{
		{"a user twice", "rate_limit:\n  overrides:\n    - {user: bob, limits: []}\n    - {user: bob, limits: []}\n",
			"rate_limit.overrides.bob", "more than once"},
		{"entry without user", "rate_limit:\n  overrides: [{limits: []}]\n", "rate_limit.overrides", "not {user, limits}"},
		{"unknown key in an entry", "rate_limit:\n  overrides: [{user: bob, limits: [], extra: 1}]\n", "rate_limit.overrides[0].extra", "unknown key"},
		{"user given twice in an entry", "rate_limit:\n  overrides: [{user: bob, User: eve, limits: []}]\n", "rate_limit.overrides[0].User", "more than once"},
		{"limits given twice in an entry", "rate_limit:\n  overrides: [{user: bob, limits: [], limits: []}]\n", "rate_limit.overrides[0].limits", "more than once"},
		{"bad limit of a user with dots", "rate_limit:\n  overrides: [{user: b.o.b, limits: [{name: x, metric: requests, limit: abc, window: 1m}]}]\n",
			`rate_limit.overrides["b.o.b"][0].limit`, `"abc" is not a number`},
		{"unknown key in a user's limit", "rate_limit:\n  overrides: {Bob: [{name: x, metric: requests, limit: 1, window: 1m, windw: 1m}]}\n",
			"rate_limit.overrides.Bob[0].windw", "did you mean window?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(writeConfig(t, tt.yaml), nil, nil)
			wantProblem(t, err, tt.key, tt.fragment)
		})
	}
}

// TestConfigHash: the hash names the file's bytes, and nothing else.
func TestConfigHash(t *testing.T) {
	a := writeConfig(t, "listen: \":1\"\n")
	b := writeConfig(t, "listen: \":2\"\n")
	ra, err := Read(a, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ra2, _ := Read(a, []string{"GENAI_GATEWAY_LOG_LEVEL=debug"}, nil)
	rb, _ := Read(b, nil, nil)
	if len(ra.Hash) != 12 || ra.Hash != ra2.Hash || ra.Hash == rb.Hash {
		t.Errorf("got hashes %q, %q (same file) and %q (other file); want 12 hex digits, equal, different", ra.Hash, ra2.Hash, rb.Hash)
	}
	r, err := Read(writeConfig(t, "bogus: 1\n"), nil, nil)
	if err == nil || r.Hash == "" {
		t.Errorf("invalid file: got hash %q, error %v; want both", r.Hash, err)
	}
}

// TestUnknownKeysWithoutValues: viper keeps no key whose value is null or
// an empty mapping, so strict decoding alone would let these pass.
func TestUnknownKeysWithoutValues(t *testing.T) {
	tests := []struct {
		yaml string
		env  []string
		key  string
		frag string
	}{
		{"listn:\n", nil, "listn", "did you mean listen?"},
		{"rate_limt: {}\n", nil, "rate_limt", "did you mean rate_limit?"},
		{"cluster: {gossip: ~}\n", nil, "cluster.gossip", "unknown key"},
		{"upstreams: [{name: a, url: \"http://a\", extra: ~}]\n", nil, "upstreams[0].extra", "unknown key"},
		{"", []string{"GENAI_GATEWAY_RATE_LIMIT={limts: {}}"}, "rate_limit.limts", "(from GENAI_GATEWAY_RATE_LIMIT)"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, _, err := Load(writeConfig(t, tt.yaml), tt.env, nil)
			wantProblem(t, err, tt.key, tt.frag)
			if n := len(errLines(err)); n != 1 {
				t.Errorf("got %d problems\n%v\nwant 1", n, err)
			}
		})
	}
	if _, _, err := Load(writeConfig(t, "log: {}\nmetrics:\ncluster: {join: []}\n"), nil, nil); err != nil {
		t.Errorf("known keys without values: got %v, want nil", err)
	}
}
