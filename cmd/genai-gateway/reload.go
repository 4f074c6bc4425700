package main

import (
	"errors"
	"reflect"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/genai-gateway/genai-gateway/config"
)

// reloadQuiet is how long the config file must stay unchanged after an
// event before it is reloaded: editors write several times, the kubelet
// swaps a ConfigMap in four steps.
const reloadQuiet = 200 * time.Millisecond

// configSource is where the running configuration comes from; reloads read
// it again whole.
type configSource struct {
	path    string
	environ []string
	flags   *pflag.FlagSet
}

func (s configSource) read() (config.Result, error) {
	return config.Read(s.path, s.environ, s.flags)
}

// reloadMetrics tell operators which configuration each replica runs.
type reloadMetrics struct {
	reloads *prometheus.CounterVec
	hash    *prometheus.GaugeVec
}

func newReloadMetrics(reg prometheus.Registerer) reloadMetrics {
	m := reloadMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genai_gateway_config_reloads_total",
			Help: "Configuration reloads (file change or SIGHUP) by result: success, or failure (invalid file, kept out).",
		}, []string{"result"}),
		hash: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "genai_gateway_config_hash",
			Help: "Always 1; the hash label is a short SHA-256 of the configuration file this replica runs.",
		}, []string{"hash"}),
	}
	reg.MustRegister(m.reloads, m.hash)
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m
}

// SetConfigHash records the hash of the configuration file running (see
// config.Result), shown by genai_gateway_config_hash.
func (a *App) SetConfigHash(hash string) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.setHash(hash)
}

func (a *App) setHash(hash string) {
	a.hash = hash
	a.metrics.hash.Reset()
	a.metrics.hash.WithLabelValues(hash).Set(1)
}

// ReloadFile reads the configuration again (file, environment, flags),
// validates all of it and applies it with Reload. An invalid file is
// refused with every problem logged, and the running configuration is
// kept. Unless force (SIGHUP), a file whose bytes are those running is left
// alone. Safe for concurrent use: reloads happen one at a time.
func (a *App) ReloadFile(src configSource, force bool) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	res, err := src.read()
	if err == nil && res.Empty && res.Hash != a.hash {
		// A file cut short or written empty (a failed template, an editor
		// mid-save) would reload as all defaults: no auth, no limits, the
		// default upstream. A running replica keeps what it has; one that
		// started on this very file runs it already.
		err = errors.New(src.path + ": holds no settings (empty, only comments, or null); write {} to run on the built-in defaults")
	}
	if err != nil {
		a.metrics.reloads.WithLabelValues("failure").Inc()
		a.log.Error().Str("file", src.path).Strs("problems", strings.Split(err.Error(), "\n")).
			Msg("reload refused: invalid configuration; keeping the running one")
		return err
	}
	if !force && res.Hash == a.hash {
		a.log.Debug().Str("hash", res.Hash).Msg("config file event, content unchanged: nothing to reload")
		return nil
	}
	for _, w := range res.Warnings {
		a.log.Warn().Msg(w)
	}
	if err := a.reload(res.Config); err != nil {
		a.metrics.reloads.WithLabelValues("failure").Inc()
		a.log.Error().Err(err).Msg("reload failed; keeping the running configuration")
		return err
	}
	a.setHash(res.Hash)
	a.metrics.reloads.WithLabelValues("success").Inc()
	a.log.Info().Str("hash", res.Hash).Msg("configuration reloaded")
	return nil
}

// restartKeys lists the keys whose change next brings that a reload does
// not apply, one level deep (rate_limit.user_header).
func restartKeys(running, next config.Config) []string {
	var keys []string
	var walk func(a, b reflect.Value, prefix string, depth int)
	walk = func(a, b reflect.Value, prefix string, depth int) {
		for i := range a.NumField() {
			f := a.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			key := prefix + name
			x, y := a.Field(i), b.Field(i)
			switch {
			case reflect.DeepEqual(x.Interface(), y.Interface()):
			case depth == 0 && f.Type.Kind() == reflect.Struct:
				walk(x, y, key+".", depth+1)
			default:
				keys = append(keys, key)
			}
		}
	}
	walk(reflect.ValueOf(running), reflect.ValueOf(next), "", 0)
	return keys
}
