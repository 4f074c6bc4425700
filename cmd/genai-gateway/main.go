// Command genai-gateway runs one replica of the gateway: an HTTP proxy in front of
// OpenAI-compatible model endpoints that meters tokens per user and model, exports
// Prometheus metrics and enforces token rate limits that hold across a cluster of
// replicas joined with memberlist.
//
// Usage:
//
//	genai-gateway [--config FILE] [flags]      run a replica
//	genai-gateway check-config --config FILE   validate a file (exit 0, or 2 with every problem)
//	genai-gateway keygen --name NAME           print a new gateway API key and its auth.keys entry
//	genai-gateway healthcheck [--url URL]      exit 0 when URL answers 200 (container healthchecks)
//	genai-gateway sleep SECONDS                pause (Kubernetes preStop in images without a shell)
//	genai-gateway --version | --help
//
// This package is the only one that reads the process environment, parses flags or
// handles signals; it wires config, proxy, limiter and cluster together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/genai-gateway/genai-gateway/config"
)

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1
	exitConfig = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check-config":
			return checkConfig(args[1:], environ, stdout, stderr)
		case "keygen":
			return keygen(args[1:], stdout, stderr)
		case "healthcheck":
			return healthcheck(args[1:], stderr)
		case "sleep":
			return sleepCmd(args[1:], stderr)
		case "version":
			fmt.Fprintln(stdout, versionString())
			return exitOK
		}
	}

	fs := newFlagSet("genai-gateway", stderr)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "genai-gateway: %v (see --help)\n", err)
		return exitConfig
	}
	if *showVersion {
		fmt.Fprintln(stdout, versionString())
		return exitOK
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "genai-gateway: unknown command %q (see --help)\n", fs.Arg(0))
		return exitConfig
	}

	src := configSource{path: config.FilePath(environ, fs), environ: environ, flags: fs}
	res, err := src.read()
	if err != nil {
		fmt.Fprintf(stderr, "genai-gateway: invalid configuration:\n%v\n", err)
		return exitConfig
	}
	cfg := res.Config
	logOut := newBufferedWriter(stderr)
	defer logOut.Close()
	log := newLogger(cfg.Log, logOut)
	for _, w := range res.Warnings {
		log.Warn().Msg(w)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP and changes of the file reload the configuration. SIGHUP is
	// caught from here on, so one sent during start-up (the cluster join
	// may take seconds) is a reload once serving, not the end of the
	// process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	app, err := NewApp(cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("start-up failed")
		return exitError
	}
	app.SetConfigHash(res.Hash)
	if err := app.Start(); err != nil {
		log.Error().Err(err).Msg("start-up failed")
		_ = app.Shutdown(context.Background())
		return exitError
	}
	log.Info().Str("version", versionString()).Str("listen", app.ProxyAddr()).
		Str("metrics_listen", app.MetricsAddr()).Str("config_hash", res.Hash).Msg("genai-gateway serving")

	changed, unwatch := watchFile(src, reloadQuiet, log)
	defer unwatch()
	return serve(ctx, stop, app, src, hup, changed)
}

// watchFile reports changes of the config file on changed (never without
// a file, or when it cannot be watched: then SIGHUP still reloads), until
// unwatch.
func watchFile(src configSource, quiet time.Duration, log zerolog.Logger) (changed <-chan struct{}, unwatch func()) {
	ch := make(chan struct{}, 1)
	if src.path == "" {
		return ch, func() {}
	}
	w, err := config.Watch(src.path, quiet, log, func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	if err != nil {
		log.Warn().Err(err).Msg("the config file is not watched; reload it with SIGHUP")
		return ch, func() {}
	}
	return ch, w.Close
}

// serve runs a started replica until ctx ends (then it drains and shuts
// down, exit 0) or a server fails (exit 1). A signal on hup reloads the
// configuration; a change of the file (changed) reloads it when its
// content differs from the one running. stop ends ctx's signal handling,
// so that a second SIGTERM during the drain kills the process.
func serve(ctx context.Context, stop func(), app *App, src configSource, hup <-chan os.Signal, changed <-chan struct{}) int {
	log := app.log
	for {
		select {
		case <-hup:
			log.Info().Msg("SIGHUP: reloading the configuration")
			_ = app.ReloadFile(src, true) // ReloadFile logs and counts its outcome
		case <-changed:
			_ = app.ReloadFile(src, false)
		case err := <-app.Errors():
			log.Error().Err(err).Msg("server failed")
			_ = app.Shutdown(context.Background())
			return exitError
		case <-ctx.Done():
			stop()
			drain := app.cfg.DrainTimeout
			log.Info().Dur("drain_timeout", drain).Msg("shutting down: draining requests and streams")
			sctx, cancel := context.WithTimeout(context.Background(), drain+10*time.Second)
			err := app.Shutdown(sctx)
			cancel()
			if err != nil {
				log.Error().Err(err).Msg("shutdown incomplete")
				return exitError
			}
			log.Info().Msg("stopped")
			return exitOK
		}
	}
}

// newFlagSet returns the flag set of the gateway, with the config flags registered.
func newFlagSet(name string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	config.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `%s: an LLM gateway that meters tokens and enforces cluster-wide rate limits.

Usage:
  genai-gateway [--config FILE] [flags]      run a replica
  genai-gateway check-config --config FILE   validate a config file (exit 0, or 2 listing every problem)
  genai-gateway keygen --name NAME           print a new gateway API key and its auth.keys entry (--user USER)
  genai-gateway healthcheck [--url URL]      exit 0 when URL answers 200 (for container healthchecks)
  genai-gateway sleep SECONDS                pause (Kubernetes preStop without a shell)
  genai-gateway --version

Every key of the file can be set from the environment as GENAI_GATEWAY_<KEY_PATH>
(for example GENAI_GATEWAY_RATE_LIMIT_ENABLED=true). Precedence: flag > environment > file > default.
The file is reloaded when it changes and on SIGHUP (rate_limit, auth, prices, routing and upstreams; listen, metrics_listen and cluster need a restart).

Flags:
%s`, versionString(), fs.FlagUsages())
	}
	return fs
}

// checkConfig validates a file and prints every problem with its key.
func checkConfig(args, environ []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("genai-gateway check-config", stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "genai-gateway: %v (see --help)\n", err)
		return exitConfig
	}
	path := config.FilePath(environ, fs)
	if fs.NArg() == 1 && path == "" {
		path = fs.Arg(0)
	}
	_, warnings, err := config.Load(path, environ, fs)
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n", displayPath(path))
		for _, line := range strings.Split(err.Error(), "\n") {
			if line != "" {
				fmt.Fprintf(stderr, "  %s\n", line)
			}
		}
		return exitConfig
	}
	fmt.Fprintf(stdout, "%s: configuration is valid\n", displayPath(path))
	return exitOK
}

func displayPath(p string) string {
	if p == "" {
		return "(built-in defaults)"
	}
	return p
}

// healthcheck exits 0 when the URL answers 200; for images without curl.
func healthcheck(args []string, stderr io.Writer) int {
	fs := pflag.NewFlagSet("genai-gateway healthcheck", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080/healthz", "URL that must answer 200")
	timeout := fs.Duration("timeout", 3*time.Second, "time limit")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get(*url)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return exitError
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: %s answered %d\n", *url, resp.StatusCode)
		return exitError
	}
	return exitOK
}

// sleepCmd pauses for a number of seconds or a Go duration.
func sleepCmd(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: genai-gateway sleep SECONDS|DURATION")
		return exitConfig
	}
	d, err := time.ParseDuration(args[0])
	if err != nil {
		n, err2 := strconv.ParseFloat(args[0], 64)
		if err2 != nil || n < 0 {
			fmt.Fprintf(stderr, "sleep: invalid duration %q\n", args[0])
			return exitConfig
		}
		d = time.Duration(n * float64(time.Second))
	}
	time.Sleep(d)
	return exitOK
}

// versionString is the module version and VCS revision from the build info.
func versionString() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "genai-gateway (unknown version)"
	}
	v := info.Main.Version
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	out := "genai-gateway " + v
	if rev != "" {
		out += " (" + rev + modified + ")"
	}
	return out + " " + info.GoVersion
}
