package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
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

// Load builds the configuration from, in increasing precedence, the
// built-in defaults, the YAML file at path ("" for none), the environment
// and the flags of fs (nil for none; see RegisterFlags). environ holds
// "NAME=value" entries, as from os.Environ; the process environment itself
// is never read.
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
// Load decodes strictly: an unknown key anywhere is an error. It resolves
// rate_limit.overrides into complete limits, then validates. The error
// joins every problem found, one per line, each starting with the key (or
// variable, or flag) it concerns; on error the Config is the zero value.
// The warnings are for things that work but deserve a look, such as ignored
// Redis flags. Neither ever contains a secret.
func Load(path string, environ []string, fs *pflag.FlagSet) (Config, []string, error) {
	l := &loader{env: envMap(environ), decodeKeys: map[string]bool{}, legacyEnvSet: map[string]string{}}
	cfg := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, nil, fmt.Errorf("read config file: %w", err)
		}
		d := &decoder{l: l, root: path, vars: l.env}
		d.document(data, reflect.ValueOf(&cfg).Elem(), "")
	}
	legacy := l.legacyValues(fs)
	l.applyLegacy(&cfg, legacy, false)
	l.applyEnv(&cfg)
	l.applyLegacy(&cfg, legacy, true)

	cfg.RateLimit.Overrides = resolveOverrides(cfg.RateLimit.Limits, cfg.RateLimit.Overrides)
	for _, err := range cfg.problems() {
		if !l.coveredByDecodeError(err) {
			l.errs = append(l.errs, err)
		}
	}
	l.warnings = append(l.warnings, advisories(cfg)...)

	redact := secretValues(cfg, l)
	warnings := make([]string, len(l.warnings))
	for i, w := range l.warnings {
		warnings[i] = redact(w)
	}
	if len(l.errs) > 0 {
		errs := make([]error, len(l.errs))
		for i, err := range l.errs {
			errs[i] = errors.New(redact(err.Error()))
		}
		return Config{}, warnings, errors.Join(errs...)
	}
	return cfg, warnings, nil
}

// loader accumulates the problems and warnings of one Load.
type loader struct {
	env          map[string]string
	errs         []error
	decodeKeys   map[string]bool // keys that failed to decode
	warnings     []string
	legacyEnvSet map[string]string // key path -> Rust variable that set it
}

// fail records a problem at key.
func (l *loader) fail(key, msg string) {
	l.errs = append(l.errs, &problem{key: key, msg: msg})
	l.decodeKeys[key] = true
}

// warn records a warning once.
func (l *loader) warn(msg string) {
	if !slices.Contains(l.warnings, msg) {
		l.warnings = append(l.warnings, msg)
	}
}

// coveredByDecodeError reports whether a validation problem concerns a key
// that already failed to decode, or lies under one (its value is then the
// default or zero, and a second message about it would only confuse).
func (l *loader) coveredByDecodeError(err error) bool {
	var p *problem
	if !errors.As(err, &p) {
		return false
	}
	if l.decodeKeys[p.key] {
		return true
	}
	for i := range len(p.key) {
		if (p.key[i] == '.' || p.key[i] == '[') && l.decodeKeys[p.key[:i]] {
			return true
		}
	}
	return false
}

// applyEnv applies the GENAI_GATEWAY_ variables: whole values first, then
// those reaching into a list element by index, each group in name order.
func (l *loader) applyEnv(cfg *Config) {
	var whole, indexed []string
	for name, val := range l.env {
		if !strings.HasPrefix(name, envPrefix) || name == envConfig || val == "" {
			continue
		}
		if hasIndex(name) {
			indexed = append(indexed, name)
		} else {
			whole = append(whole, name)
		}
	}
	sort.Strings(whole)
	sort.Strings(indexed)
	root := reflect.ValueOf(cfg).Elem()
	for _, name := range append(whole, indexed...) {
		target, key, found, err := findEnvTarget(root, strings.TrimPrefix(name, envPrefix), "")
		switch {
		case err != nil:
			l.fail(key, err.Error()+" (from "+name+")")
			continue
		case !found:
			l.warn(name + ": no config key of that name, ignored")
			continue
		}
		if by, ok := l.legacyEnvSet[key]; ok {
			l.warn(fmt.Sprintf("%s: overrides %s", name, by))
		}
		l.setFromEnv(target, key, name, l.env[name])
	}
}

// setFromEnv decodes the variable name's value onto target, at key.
func (l *loader) setFromEnv(target reflect.Value, key, name, val string) {
	d := &decoder{l: l, root: key, origin: " (from " + name + ")"}
	t := target.Type()
	switch {
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		if strings.HasPrefix(strings.TrimSpace(val), "[") {
			d.document([]byte(val), target, key)
			return
		}
		seq := &yaml.Node{Kind: yaml.SequenceNode}
		for part := range strings.SplitSeq(val, ",") {
			if part = strings.TrimSpace(part); part != "" {
				seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: part})
			}
		}
		d.value(seq, target, key)
	case t.Kind() == reflect.Struct, t.Kind() == reflect.Slice, t.Kind() == reflect.Map:
		d.document([]byte(val), target, key)
	default:
		d.value(&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: val}, target, key)
	}
}

// findEnvTarget finds the field that an environment variable name (without
// the prefix) sets, guided by the yaml tags of the config types:
// RATE_LIMIT_USER_HEADER is rate_limit.user_header, UPSTREAMS_0_URL is
// upstreams[0].url. err is set when the name reaches past a list's end.
func findEnvTarget(v reflect.Value, name, key string) (target reflect.Value, path string, found bool, err error) {
	t := v.Type()
	for i := range t.NumField() {
		tag := tagName(t.Field(i))
		upper := strings.ToUpper(tag)
		fv, fk := v.Field(i), joinKey(key, tag)
		if name == upper {
			return fv, fk, true, nil
		}
		rest, ok := strings.CutPrefix(name, upper+"_")
		if !ok {
			continue
		}
		switch {
		case fv.Kind() == reflect.Struct:
			if target, path, found, err = findEnvTarget(fv, rest, fk); found {
				return target, path, found, err
			}
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
			digits, after, _ := strings.Cut(rest, "_")
			idx, aerr := strconv.Atoi(digits)
			if aerr != nil || idx < 0 || digits != strconv.Itoa(idx) {
				continue
			}
			ek := fmt.Sprintf("%s[%d]", fk, idx)
			if idx >= fv.Len() {
				return reflect.Value{}, ek, true, fmt.Errorf("no such element: %s has %d", fk, fv.Len())
			}
			if after == "" {
				return fv.Index(idx), ek, true, nil
			}
			if target, path, found, err = findEnvTarget(fv.Index(idx), after, ek); found {
				return target, path, found, err
			}
		}
	}
	return reflect.Value{}, "", false, nil
}

// hasIndex reports whether a variable name has an all-digit segment.
func hasIndex(name string) bool {
	for part := range strings.SplitSeq(name, "_") {
		if part != "" && strings.Trim(part, "0123456789") == "" {
			return true
		}
	}
	return false
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
	for i, u := range c.Upstreams {
		if len(u.Models) == 0 && i < len(c.Upstreams)-1 {
			w = append(w, fmt.Sprintf("upstreams[%d]: serves every model, so metered requests never reach the upstreams after it", i))
			break
		}
	}
	return w
}

// secretValues returns a function that replaces every secret value known to
// the load (final or from the file and environment) in a message.
func secretValues(c Config, l *loader) func(string) string {
	var secrets []string
	add := func(s string) {
		if len(s) >= 6 {
			secrets = append(secrets, s)
		}
	}
	for _, u := range c.Upstreams {
		add(u.APIKey.Value())
	}
	add(c.Cluster.SecretKey.Value())
	for name, val := range l.env {
		for _, suffix := range []string{"API_KEY", "SECRET_KEY", "SECRET", "TOKEN", "PASSWORD"} {
			if name == suffix || strings.HasSuffix(name, "_"+suffix) {
				add(val)
			}
		}
	}
	return func(msg string) string {
		for _, s := range secrets {
			msg = strings.ReplaceAll(msg, s, redacted)
		}
		return msg
	}
}

// problem is one configuration problem, printed as "key: message".
type problem struct{ key, msg string }

func (p *problem) Error() string {
	return p.key + ": " + strings.ReplaceAll(p.msg, "\n", " ")
}
