package relay

import (
	"log/slog"
	"sync"
)

// rejectLogBurst is how many refusals one connection gets logged one by
// one; the rest are counted and logged as one summary line when the
// session ends, so a client cannot make the relay write a line per
// command (1,000 refused RCPTs are 10 lines and a summary). Metrics count
// every refusal.
const rejectLogBurst = 10

// rejectLog meters one connection's refusal log lines, across the
// sessions on it (before and after STARTTLS).
type rejectLog struct {
	mu     sync.Mutex
	logged int
	counts map[string]int // reasons of refusals not logged yet
}

// individually reports whether the next refusal may have its own line.
func (r *rejectLog) individually() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.logged >= rejectLogBurst {
		return false
	}
	r.logged++
	return true
}

// suppressed counts a refusal not logged by itself.
func (r *rejectLog) suppressed(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	r.counts[reason]++
}

// flush logs the summary of refusals not logged yet, if any.
func (r *rejectLog) flush(log *slog.Logger) {
	r.mu.Lock()
	counts := r.counts
	r.counts = nil
	r.mu.Unlock()
	if len(counts) == 0 {
		return
	}
	total := 0
	attrs := []any{}
	for reason, n := range counts {
		total += n
		attrs = append(attrs, slog.Int(reason, n))
	}
	log.Info("relay: further refusals in this session, not logged one by one", "count", total,
		slog.Group("reasons", attrs...))
}
