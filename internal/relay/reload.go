package relay

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchConfig reloads the configuration whenever the config file or a file
// it refers to (include shards, TLS certificate and key, DKIM keys, peer
// certificates) changes, until ctx ends. While the shards on disk are not
// consistent with the main file (see config.ErrInconsistent) it tries again
// every second, whatever the events.
// It returns once the watches are in place; the watching goes on in the
// background.
//
// It watches the files' directories rather than the files: Kubernetes
// updates a mounted Secret by writing a new timestamped directory and
// atomically swapping the "..data" symlink, so the watched paths never see a
// write of their own. Every event only triggers a comparison of the
// contents, and the same comparison also runs every poll interval, in case
// events are lost or the filesystem delivers none.
func (s *Server) WatchConfig(ctx context.Context, poll time.Duration) {
	if s.opts.ConfigPath == "" {
		return
	}
	ready := make(chan struct{})
	go s.watchConfig(ctx, poll, ready)
	<-ready
}

func (s *Server) watchConfig(ctx context.Context, poll time.Duration, ready chan<- struct{}) {
	if poll <= 0 {
		poll = 30 * time.Second
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("relay: cannot watch config files; polling only", "err", err)
	} else {
		defer w.Close()
	}
	watched := map[string]bool{}
	syncWatches := func() {
		if w == nil {
			return
		}
		want := map[string]bool{}
		for _, f := range s.watchedFiles() {
			want[filepath.Dir(f)] = true
		}
		for d := range watched {
			if !want[d] {
				_ = w.Remove(d)
				delete(watched, d)
			}
		}
		for d := range want {
			if !watched[d] {
				if err := w.Add(d); err != nil {
					s.log.Warn("relay: cannot watch directory", "dir", d, "err", err)
					continue
				}
				watched[d] = true
			}
		}
	}
	syncWatches()
	last := s.fingerprint()
	close(ready)

	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	// Changes come in bursts (a Secret update is several renames); settle
	// first.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	check := func() {
		fp := s.fingerprint()
		if fp == last && !s.pendingShards.Load() {
			return
		}
		if fp != last {
			s.log.Info("relay: configuration files changed; reloading")
		}
		last = fp
		_ = s.Reload()
		syncWatches()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			debounce.Reset(200 * time.Millisecond)
		case err := <-errs:
			s.log.Warn("relay: config watch", "err", err)
		case <-debounce.C:
			check()
		case <-ticker.C:
			check()
		case <-retry.C:
			if s.pendingShards.Load() {
				check()
			}
		}
	}
}

// watchedFiles are the config file and every file the current config names.
func (s *Server) watchedFiles() []string {
	files := []string{s.opts.ConfigPath}
	cfg := s.policy.Load().cfg
	files = append(files, cfg.Files()...)
	files = append(files, cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if cfg.Peer != nil {
		files = append(files, cfg.Peer.CAFile, cfg.Peer.CertFile, cfg.Peer.KeyFile)
	}
	for _, d := range cfg.Domains {
		for _, k := range d.Keys {
			files = append(files, k.PrivateKeyFile)
		}
	}
	return files
}

// fingerprint hashes the contents of the watched files (a missing file
// hashes as its absence).
func (s *Server) fingerprint() [32]byte {
	h := sha256.New()
	for _, f := range s.watchedFiles() {
		h.Write([]byte(f))
		h.Write([]byte{0})
		if fh, err := os.Open(f); err == nil {
			_, _ = io.Copy(h, fh)
			fh.Close()
		} else {
			h.Write([]byte("\x00missing\x00"))
		}
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
