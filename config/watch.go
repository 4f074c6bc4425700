package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
	"github.com/spf13/viper"
)

// Watcher calls a function when the config file changes, through viper's
// WatchConfig: a write, an editor's rename over the file, and the atomic
// swap of a Kubernetes ConfigMap or Secret volume (whose ..data symlink is
// renamed to a new directory) all count. Bursts of events (editors write
// several, the kubelet makes four) are coalesced into one call.
type Watcher struct {
	kick chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// Watch starts watching the file at path and calls onChange from one
// goroutine, at most once per quiet period with no further event, after
// the file has changed. onChange must not block for long; it is never
// called after Close returns.
//
// Viper's watching goroutine cannot be stopped: after Close it stays
// parked, ignoring events, until the file is removed or the process exits.
// And viper ends the process if the system refuses a new inotify instance,
// so Watch first makes sure one can be had, and returns an error (reloads
// then come from SIGHUP only) when it cannot.
func Watch(path string, quiet time.Duration, log zerolog.Logger, onChange func()) (*Watcher, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	if _, err := os.Stat(filepath.Dir(abs)); err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	probe, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	_ = probe.Close()

	w := &Watcher{kick: make(chan struct{}, 1), done: make(chan struct{})}
	codecs := viper.NewCodecRegistry()
	if err := codecs.RegisterCodec("yaml", ignoreFile{}); err != nil {
		return nil, err
	}
	v := viper.NewWithOptions(
		viper.WithDecoderRegistry(codecs),
		viper.WithLogger(slog.New(zerolog.NewSlogHandler(log.Level(max(log.GetLevel(), zerolog.WarnLevel))))),
	)
	v.SetConfigFile(abs)
	v.SetConfigType("yaml")
	v.OnConfigChange(func(fsnotify.Event) {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	})
	v.WatchConfig()

	w.wg.Add(1)
	go w.debounce(quiet, onChange)
	return w, nil
}

// debounce calls onChange once events have stopped for quiet.
func (w *Watcher) debounce(quiet time.Duration, onChange func()) {
	defer w.wg.Done()
	timer := time.NewTimer(quiet)
	timer.Stop()
	for {
		select {
		case <-w.done:
			timer.Stop()
			return
		case <-w.kick:
			timer.Reset(quiet)
		case <-timer.C:
			onChange()
		}
	}
}

// Close stops the calls and waits for one in progress. It is idempotent.
func (w *Watcher) Close() {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
}

// ignoreFile is the watching viper's decoder: on every event viper reads
// the file again, but the copy it keeps is never used, as each change is
// loaded afresh by Read with the environment and the flags.
type ignoreFile struct{}

func (ignoreFile) Decode([]byte, map[string]any) error { return nil }

func (ignoreFile) Encode(map[string]any) ([]byte, error) {
	return nil, errors.New("config: writing the file is not supported")
}
