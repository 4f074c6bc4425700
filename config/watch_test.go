package config

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// watchCounter watches path and counts the calls.
func watchCounter(t *testing.T, path string, quiet time.Duration) (*Watcher, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	w, err := Watch(path, quiet, zerolog.Nop(), func() { calls.Add(1) })
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(w.Close)
	return w, &calls
}

// waitCalls polls until calls reaches want, or fails the test.
func waitCalls(t *testing.T, calls *atomic.Int64, want int64, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %d calls, want %d within 10s", what, calls.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kubeletVolume lays out dir as the kubelet lays out a ConfigMap volume:
// a timestamped directory holding the file, a ..data symlink to it, and
// the file itself a symlink through ..data.
func kubeletVolume(t *testing.T, dir, content string) string {
	t.Helper()
	ts := kubeletWrite(t, dir, content)
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubeletWrite writes content into a new timestamped directory of dir and
// returns its name.
func kubeletWrite(t *testing.T, dir, content string) string {
	t.Helper()
	ts := fmt.Sprintf("..%s", time.Now().Format("2006_01_02_15_04_05.000000000"))
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ts, "config.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return ts
}

// kubeletSwap updates the volume the way the kubelet does (AtomicWriter):
// a new timestamped directory, a ..data_tmp symlink to it renamed over
// ..data, then the old directory removed.
func kubeletSwap(t *testing.T, dir, content string) {
	t.Helper()
	old, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	ts := kubeletWrite(t, dir, content)
	if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
		t.Fatal(err)
	}
}

func TestWatchSeesEveryKindOfChange(t *testing.T) {
	t.Run("rewritten in place", func(t *testing.T) {
		path := writeConfig(t, "listen: \":1\"\n")
		_, calls := watchCounter(t, path, 20*time.Millisecond)
		if err := os.WriteFile(path, []byte("listen: \":2\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		waitCalls(t, calls, 1, "write")
	})
	t.Run("renamed over, as editors save", func(t *testing.T) {
		path := writeConfig(t, "listen: \":1\"\n")
		_, calls := watchCounter(t, path, 20*time.Millisecond)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte("listen: \":2\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		waitCalls(t, calls, 1, "rename")
	})
	t.Run("ConfigMap symlink swap", func(t *testing.T) {
		dir := t.TempDir()
		path := kubeletVolume(t, dir, "listen: \":1\"\n")
		_, calls := watchCounter(t, path, 20*time.Millisecond)
		kubeletSwap(t, dir, "listen: \":2\"\n")
		waitCalls(t, calls, 1, "first swap")
		cfg, _ := mustLoad(t, path, nil)
		if cfg.Listen != ":2" {
			t.Errorf("after the swap: got listen %q, want \":2\"", cfg.Listen)
		}
		// The watch follows the new target: a second swap is seen too.
		kubeletSwap(t, dir, "listen: \":3\"\n")
		waitCalls(t, calls, 2, "second swap")
	})
	t.Run("relative path", func(t *testing.T) {
		path := writeConfig(t, "listen: \":1\"\n")
		t.Chdir(filepath.Dir(path))
		_, calls := watchCounter(t, filepath.Base(path), 20*time.Millisecond)
		if err := os.WriteFile(path, []byte("listen: \":2\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		waitCalls(t, calls, 1, "write through a relative path")
	})
}

func TestWatchDebouncesAndStops(t *testing.T) {
	const quiet = 150 * time.Millisecond
	path := writeConfig(t, "listen: \":1\"\n")
	w, calls := watchCounter(t, path, quiet)
	for i := range 5 {
		if err := os.WriteFile(path, fmt.Appendf(nil, "listen: \":%d\"\n", i+2), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	waitCalls(t, calls, 1, "burst of writes")
	time.Sleep(2 * quiet)
	if got := calls.Load(); got != 1 {
		t.Errorf("five writes in a burst: got %d calls, want 1", got)
	}
	w.Close()
	w.Close() // idempotent
	if err := os.WriteFile(path, []byte("listen: \":9\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * quiet)
	if got := calls.Load(); got != 1 {
		t.Errorf("after Close: got %d calls, want none more", got)
	}
}

func TestWatchMissingDirectory(t *testing.T) {
	if _, err := Watch(filepath.Join(t.TempDir(), "nope", "config.yaml"), time.Millisecond, zerolog.Nop(), func() {}); err == nil {
		t.Error("watching a file in a directory that does not exist: got nil, want an error")
	}
}
