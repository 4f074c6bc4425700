package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// envPrefix starts the environment variable of every config key:
// GENAI_GATEWAY_ + the key path in upper case with "_" for ".", such as
// GENAI_GATEWAY_CLUSTER_SECRET_KEY for cluster.secret_key.
const envPrefix = "GENAI_GATEWAY_"

// envConfig names the config file, like --config.
const envConfig = envPrefix + "CONFIG"

// FilePath returns the config file to load: the --config flag when it was
// given on the command line, else GENAI_GATEWAY_CONFIG from environ, else "".
// fs may be nil.
func FilePath(environ []string, fs *pflag.FlagSet) string {
	if fs != nil {
		if f := fs.Lookup(flagConfig); f != nil && f.Changed {
			return f.Value.String()
		}
	}
	return envMap(environ)[envConfig]
}

// Result is what one load found.
type Result struct {
	Config Config
	// Warnings are things that work but deserve a look, such as ignored
	// Redis flags; they never contain a secret.
	Warnings []string
	// Hash is a short hex SHA-256 of the file's bytes as read (of no bytes
	// without a file): it tells which file a replica runs.
	Hash string
	// Empty: a file was read and holds no settings (empty, only comments,
	// or null), so everything but the environment and flags is default.
	// A start may run on that; a reload refuses it (see cmd's ReloadFile).
	Empty bool
}

// Load is Read without the hash.
func Load(path string, environ []string, fs *pflag.FlagSet) (Config, []string, error) {
	r, err := Read(path, environ, fs)
	return r.Config, r.Warnings, err
}

// Read builds the configuration through viper from, in increasing
// precedence, the built-in defaults, the YAML file at path ("" for none),
// the environment and the flags of fs (nil for none; see RegisterFlags).
// environ holds "NAME=value" entries, as from os.Environ; the process
// environment itself is never read.
//
// In the file, ${VAR} expands to VAR from environ and ${VAR:-word} to word
// when VAR is unset or empty ("$${" is a literal "${"). Every key can be set
// from the environment as GENAI_GATEWAY_ + its path in upper case with "_"
// for "." (GENAI_GATEWAY_RATE_LIMIT_ENABLED=true); a list of strings takes
// comma-separated values or a YAML flow list, and a list of mappings or a
// map takes YAML (GENAI_GATEWAY_UPSTREAMS='[{name: a, url: "http://a"}]').
// An element of a list already set can be reached by its index:
// GENAI_GATEWAY_UPSTREAMS_0_API_KEY. Empty variables count as unset. The
// variables and flags of the original Rust gateway apply too (see
// RegisterFlags): a flag beats its variable, and GENAI_GATEWAY_ variables
// beat the Rust variables.
//
// Decoding is strict: an unknown key anywhere is an error. Read resolves
// rate_limit.overrides into complete limits, then validates. The error joins
// every problem found, one per line, each starting with the key (or
// variable, or flag) it concerns; on error the Config is the zero value, and
// the Result still holds the warnings. Neither ever contains a secret.
func Read(path string, environ []string, fs *pflag.FlagSet) (Result, error) {
	l := &loader{env: envMap(environ), failed: map[string]bool{}, legacyEnvSet: map[string]string{}, origins: map[string]string{}}
	v := viper.NewWithOptions(viper.WithLogger(slog.New(slog.DiscardHandler)))
	for k, val := range toTree(reflect.ValueOf(Default())).(map[string]any) {
		v.SetDefault(k, val)
	}
	var data []byte
	empty := false
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return Result{}, fmt.Errorf("read config file: %w", err)
		}
		// Not v.ReadConfig: the file's problems are named by key path and
		// ${VAR} expands from environ, so the walker reads it (see yaml.go).
		w := walker{l: l, file: path, vars: l.env}
		tree, ok := w.document(data, reflect.TypeFor[Config](), "").(map[string]any)
		if ok {
			_ = v.MergeConfigMap(tree) // cannot fail
		}
		empty = !ok
	}
	legacy := l.legacyValues(fs)
	l.applyLegacy(v, legacy, false)
	l.applyEnv(v)
	l.applyLegacy(v, legacy, true)

	var cfg Config
	strict := func(c *mapstructure.DecoderConfig) { c.WeaklyTypedInput = false }
	if err := v.UnmarshalExact(&cfg, viper.DecodeHook(decodeHook), strict); err != nil {
		l.decodeErrors(err)
	}
	cfg.RateLimit.Overrides = resolveOverrides(cfg.RateLimit.Limits, cfg.RateLimit.Overrides)
	for _, err := range cfg.problems() {
		// A key that failed to decode holds its zero value: say nothing more about it.
		if underAny(err.(*problem).key, l.failed) == "" {
			l.errs = append(l.errs, err)
		}
	}
	l.warnings = append(l.warnings, advisories(cfg)...)

	sum := sha256.Sum256(data)
	r := Result{Config: cfg, Hash: hex.EncodeToString(sum[:6]), Empty: empty}
	redact := secretValues(cfg, l.env)
	for _, w := range l.warnings {
		r.Warnings = append(r.Warnings, redact(w))
	}
	if len(l.errs) == 0 {
		return r, nil
	}
	errs := make([]error, len(l.errs))
	for i, err := range l.errs {
		errs[i] = errors.New(redact(err.Error()))
	}
	r.Config = Config{}
	return r, errors.Join(errs...)
}

// loader accumulates the problems and warnings of one load.
type loader struct {
	env          map[string]string
	errs         []error
	failed       map[string]bool // keys whose value was refused
	warnings     []string
	legacyEnvSet map[string]string // key path -> Rust variables that set it
	origins      map[string]string // key path -> GENAI_GATEWAY_ variable that set it
	legacyLimits any               // the rate_limit.limits the Rust options set
}

// fail records a problem at key.
func (l *loader) fail(key, msg string) {
	l.errs = append(l.errs, &problem{key: key, msg: msg})
	l.failed[key] = true
}

// warn records a warning once.
func (l *loader) warn(msg string) {
	if !slices.Contains(l.warnings, msg) {
		l.warnings = append(l.warnings, msg)
	}
}

// underAny returns the key of keys that is key or holds it, or "".
func underAny[V any](key string, keys map[string]V) string {
	for i := range len(key) + 1 {
		if _, ok := keys[key[:i]]; ok && (i == len(key) || key[i] == '.' || key[i] == '[') {
			return key[:i]
		}
	}
	return ""
}

// decodeErrors records the problems of viper's UnmarshalExact, which
// mapstructure returns as a tree of joined errors, each *DecodeError naming
// its field (rate_limit.limits[0].limit).
func (l *loader) decodeErrors(err error) {
	var found []*problem
	var walk func(err error)
	walk = func(err error) {
		switch e := err.(type) {
		case *mapstructure.DecodeError:
			found = append(found, &problem{key: keyOf(e.Name()), msg: e.Unwrap().Error()})
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		default:
			found = append(found, &problem{msg: err.Error()})
		}
	}
	walk(err)
	slices.SortStableFunc(found, func(a, b *problem) int { return strings.Compare(a.key, b.key) })
	for _, p := range found {
		if name := underAny(p.key, l.origins); name != "" {
			p.msg += " (from " + l.origins[name] + ")"
		}
		l.fail(p.key, p.msg)
	}
}

// overrideName splits mapstructure's name of a field under a user's
// overrides, rate_limit.overrides[USER][0].limit, where USER is any text.
var overrideName = regexp.MustCompile(`^rate_limit\.overrides\[(.*?)\]((?:\[\d+\])(?:\..*)?)?$`)

// keyOf turns mapstructure's field name into the key problems are named by:
// the same, except that a user name is written as Validate writes it (see mapKey).
func keyOf(name string) string {
	if m := overrideName.FindStringSubmatch(name); m != nil {
		return mapKey("rate_limit.overrides", m[1]) + m[2]
	}
	return name
}

// fieldByTag finds the field of struct t known by key.
func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if tagName(t.Field(i)) == key {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

// tagName is the key a struct field is known by.
func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	return name
}

// joinKey appends a struct field's key to a dotted key path.
func joinKey(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

// mapKey appends a map key (a user name) to a key path, quoting it when it
// holds characters other than letters, digits, '-' and '_'.
func mapKey(key, name string) string {
	if name == "" || strings.ContainsFunc(name, func(r rune) bool {
		return !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return fmt.Sprintf("%s[%s]", key, quote(name))
	}
	return joinKey(key, name)
}

// quote quotes a value for a message, cut to a readable length.
func quote(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}

// toTree turns a config value (the defaults, a default upstream or limit)
// into viper's tree: the shape the file gives, with strings for values. Nil
// lists, maps and pointers are left out.
func toTree(v reflect.Value) any {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		return time.Duration(v.Int()).String()
	case v.Type() == reflect.TypeFor[time.Time]():
		return v.Interface().(time.Time).Format(time.RFC3339)
	case v.Kind() == reflect.Struct:
		m := map[string]any{}
		for i := range v.NumField() {
			if val := toTree(v.Field(i)); val != nil {
				m[tagName(v.Type().Field(i))] = val
			}
		}
		return m
	case v.Kind() == reflect.Slice && !v.IsNil():
		list := make([]any, v.Len())
		for i := range list {
			list[i] = toTree(v.Index(i))
		}
		return list
	case v.Kind() == reflect.Slice, v.Kind() == reflect.Map, v.Kind() == reflect.Pointer:
		return nil
	case v.Kind() == reflect.String:
		return v.String()
	}
	return fmt.Sprint(v.Interface())
}

// envMap turns "NAME=value" entries into a map; a later entry wins.
func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if name, val, ok := strings.Cut(kv, "="); ok && name != "" {
			m[name] = val
		}
	}
	return m
}

// advisories are warnings about a loaded configuration that is valid but
// probably not what was meant.
func advisories(c Config) []string {
	var w []string
	if c.RateLimit.Enabled && len(c.RateLimit.Limits) == 0 && len(c.RateLimit.Overrides) == 0 {
		w = append(w, "rate_limit.enabled: true, but rate_limit.limits is empty: nothing is limited")
	}
	if !c.RateLimit.Enabled {
		var set []string
		if len(c.RateLimit.Limits) > 0 {
			set = append(set, "rate_limit.limits")
		}
		if len(c.RateLimit.Overrides) > 0 {
			set = append(set, "rate_limit.overrides")
		}
		switch len(set) {
		case 1:
			w = append(w, set[0]+" is set, but rate_limit.enabled is false: nothing is limited")
		case 2:
			w = append(w, set[0]+" and "+set[1]+" are set, but rate_limit.enabled is false: nothing is limited")
		}
	}
	if c.Routing.Strategy == StrategyPriority {
		for i, u := range c.Upstreams {
			if len(u.Models) == 0 && i < len(c.Upstreams)-1 {
				w = append(w, fmt.Sprintf("upstreams[%d]: serves every model, so with routing.strategy priority the upstreams after it serve only while it is cooling down or full", i))
				break
			}
		}
	}
	return w
}

// secretValues returns a function that replaces every secret value known to
// the load (final, or in a variable whose name says it holds one) in a message.
func secretValues(c Config, env map[string]string) func(string) string {
	secrets := []string{c.Cluster.SecretKey.Value()}
	for _, u := range c.Upstreams {
		secrets = append(secrets, u.APIKey.Value())
	}
	for name, val := range env {
		for _, suffix := range []string{"API_KEY", "SECRET_KEY", "SECRET", "TOKEN", "PASSWORD"} {
			if name == suffix || strings.HasSuffix(name, "_"+suffix) {
				secrets = append(secrets, val)
			}
		}
	}
	return func(msg string) string {
		for _, s := range secrets {
			if len(s) >= 6 {
				msg = strings.ReplaceAll(msg, s, redacted)
			}
		}
		return msg
	}
}

// problem is one configuration problem, printed as "key: message".
type problem struct{ key, msg string }

func (p *problem) Error() string {
	return p.key + ": " + strings.ReplaceAll(p.msg, "\n", " ")
}
