package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"

	"mailroom.io/mailroom/internal/delivery"
)

// SuppressionList is this member's copy of the pool's suppression list;
// *delivery.Suppressions implements it.
type SuppressionList interface {
	MergeAll([]delivery.Suppression) (int, error)
	Changes(since time.Time, after string, limit int) ([]delivery.Suppression, error)
	Count() int
	Sweep() error
	OnChange(func(delivery.Suppression))
}

// SuppressionOptions configure ShareSuppressions.
type SuppressionOptions struct {
	// PullInterval is how often every other member is asked for its
	// changes; default 30s.
	PullInterval time.Duration
	// SweepInterval is how often expired entries and tombstones are
	// deleted and the entries counted again; default 10m.
	SweepInterval time.Duration
	// PageSize is the number of entries per pull page; default 1000.
	PageSize int
	// PushAttempts is how many times a push to one member is tried, with
	// backoff from 200ms doubling; default 9, about 50s in all: longer
	// than cluster DNS caches a name that did not exist yet (CoreDNS's
	// default 30s), which is what a young pool's first pushes meet.
	PushAttempts int
}

// PeerNameHeader names the member making a suppression request, so that
// a member finds its own address among peer.addresses.
const PeerNameHeader = "Mailroom-Peer-Name"

// SuppressionPage is the body of GET /v1/peer/suppressions and of
// POST /v1/peer/suppressions.
type SuppressionPage struct {
	Entries []delivery.Suppression `json:"entries"`
	// Next is the cursor of the next page (the after parameter); empty on
	// the last page.
	Next string `json:"next,omitempty"`
	// Now is the answering member's clock when it began the page, in
	// Unix nanoseconds: the since of the next pull round.
	Now int64 `json:"now,omitempty"`
}

const (
	maxPageEntries = 5000
	maxPageBytes   = 16 << 20
	// pullSlack re-reads changes from a minute before the last round
	// began, so a version stored while that round was reading is not
	// missed; merging it twice is harmless.
	pullSlack = time.Minute
	pushBatch = 500
)

// suppressionSync is the pool-wide side of the suppression list.
type suppressionSync struct {
	n    *Node
	list SuppressionList
	opts SuppressionOptions

	mu      sync.Mutex
	cursors map[string]int64 // address → its clock at the start of the last complete pull
	self    map[string]bool  // addresses that turned out to be this member
	queues  map[string]chan []delivery.Suppression
	pending []delivery.Suppression
	kick    chan struct{}

	pushes, pulls *prometheus.CounterVec
	merged        prometheus.Counter
	stop          context.CancelFunc
}

// ShareSuppressions makes list pool-wide over the peer path until ctx
// ends: this member's own changes are pushed to every other member at
// once, and every other member is asked for its changes at start-up and
// every PullInterval. Call it before Serve; Shutdown stops it too.
func (n *Node) ShareSuppressions(ctx context.Context, list SuppressionList, opts SuppressionOptions) {
	if opts.PullInterval <= 0 {
		opts.PullInterval = 30 * time.Second
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = 10 * time.Minute
	}
	if opts.PageSize <= 0 || opts.PageSize > maxPageEntries {
		opts.PageSize = 1000
	}
	if opts.PushAttempts <= 0 {
		opts.PushAttempts = 9
	}
	ss := &suppressionSync{n: n, list: list, opts: opts, cursors: map[string]int64{}, self: map[string]bool{},
		queues: map[string]chan []delivery.Suppression{}, kick: make(chan struct{}, 1),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_suppression_pushes_total", Help: "Suppression list changes pushed to another pool member, by result (a batch per request).",
		}, []string{"result"}),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_suppression_pulls_total", Help: "Pages of suppression list changes asked of another pool member, by result.",
		}, []string{"result"}),
		merged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailroom_suppression_merged_total", Help: "Suppression list versions from other pool members that replaced the one here.",
		}),
	}
	for _, r := range []string{"ok", "failed"} {
		ss.pushes.WithLabelValues(r)
		ss.pulls.WithLabelValues(r)
	}
	if reg := n.opts.Registerer; reg != nil {
		reg.MustRegister(ss.pushes, ss.pulls, ss.merged, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mailroom_suppression_entries", Help: "Addresses on the pool's suppression list, as this member holds it.",
		}, func() float64 { return float64(list.Count()) }))
	}
	ctx, ss.stop = context.WithCancel(ctx)
	n.sup.Store(ss)
	list.OnChange(ss.enqueue)
	go ss.pushLoop(ctx)
	go ss.pullLoop(ctx)
}

// stopSuppressions ends ShareSuppressions' loops (Shutdown).
func (n *Node) stopSuppressions() {
	if ss := n.sup.Load(); ss != nil {
		ss.stop()
	}
}

// suppressionRoutes serves the suppression list to the other members.
func (n *Node) suppressionRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/peer/suppressions", n.withSuppressions((*suppressionSync).serveChanges))
	mux.HandleFunc("POST /v1/peer/suppressions", n.withSuppressions((*suppressionSync).receive))
}

// withSuppressions runs h for requests from another member once the list
// is shared: 404 before ShareSuppressions, 409 to this member itself.
func (n *Node) withSuppressions(h func(*suppressionSync, http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ss := n.sup.Load()
		if ss == nil {
			http.Error(w, "this member does not share a suppression list", http.StatusNotFound)
			return
		}
		if n.fromSelf(w, r) {
			return
		}
		h(ss, w, r)
	}
}

// fromSelf answers 409 to a request this member made to itself (its own
// address is among peer.addresses), which the caller then skips.
func (n *Node) fromSelf(w http.ResponseWriter, r *http.Request) bool {
	if name := r.Header.Get(PeerNameHeader); name != "" && name == n.state.Load().self {
		http.Error(w, "self", http.StatusConflict)
		return true
	}
	return false
}

func (ss *suppressionSync) serveChanges(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since time.Time
	if v := q.Get("since"); v != "" {
		ns, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ns < 0 {
			http.Error(w, "since: want Unix nanoseconds", http.StatusBadRequest)
			return
		}
		if ns > 0 {
			since = time.Unix(0, ns)
		}
	}
	limit := ss.opts.PageSize
	if v := q.Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l <= 0 || l > maxPageEntries {
			http.Error(w, fmt.Sprintf("limit: want 1 to %d", maxPageEntries), http.StatusBadRequest)
			return
		}
		limit = l
	}
	page := SuppressionPage{Now: time.Now().UnixNano()}
	es, err := ss.list.Changes(since, q.Get("after"), limit)
	if err != nil {
		ss.n.log.Error("peer: reading suppression changes", "err", err)
		http.Error(w, "reading the suppression list failed", http.StatusServiceUnavailable)
		return
	}
	page.Entries = es
	if page.Entries == nil {
		page.Entries = []delivery.Suppression{}
	}
	if len(es) == limit {
		page.Next = es[len(es)-1].Address
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(page)
}

func (ss *suppressionSync) receive(w http.ResponseWriter, r *http.Request) {
	var page SuppressionPage
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPageBytes)).Decode(&page); err != nil {
		http.Error(w, "entries: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(page.Entries) > maxPageEntries {
		http.Error(w, fmt.Sprintf("entries: at most %d per request", maxPageEntries), http.StatusRequestEntityTooLarge)
		return
	}
	n, err := ss.list.MergeAll(page.Entries)
	ss.merged.Add(float64(n))
	if err != nil {
		// Entries before the invalid one are kept; the sender's retry
		// merges them again harmlessly.
		http.Error(w, "entries: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]int{"merged": n})
}

// enqueue takes a local change for the push loop; it never blocks the
// delivery that made it.
func (ss *suppressionSync) enqueue(e delivery.Suppression) {
	ss.mu.Lock()
	ss.pending = append(ss.pending, e)
	ss.mu.Unlock()
	select {
	case ss.kick <- struct{}{}:
	default:
	}
}

// pushLoop hands batches of local changes to one sender per member, so a
// member that is down delays no other.
func (ss *suppressionSync) pushLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ss.kick:
		}
		ss.mu.Lock()
		batch := ss.pending
		ss.pending = nil
		ss.mu.Unlock()
		for len(batch) > 0 {
			k := min(len(batch), pushBatch)
			ss.fanOut(ctx, batch[:k])
			batch = batch[k:]
		}
	}
}

func (ss *suppressionSync) fanOut(ctx context.Context, batch []delivery.Suppression) {
	for _, addr := range ss.n.state.Load().addresses {
		ss.mu.Lock()
		if ss.self[addr] {
			ss.mu.Unlock()
			continue
		}
		q, ok := ss.queues[addr]
		if !ok {
			q = make(chan []delivery.Suppression, 64)
			ss.queues[addr] = q
			go ss.sender(ctx, addr, q)
		}
		ss.mu.Unlock()
		select {
		case q <- batch:
		default:
			// That member is far behind: the next pull round gives it
			// these changes.
			ss.pushes.WithLabelValues("failed").Inc()
			ss.n.log.Warn("peer: suppression push queue full; the member will pull the changes", "address", addr)
		}
	}
}

// sender pushes batches to one member, each tried PushAttempts times with
// backoff.
func (ss *suppressionSync) sender(ctx context.Context, addr string, q chan []delivery.Suppression) {
	for {
		var batch []delivery.Suppression
		select {
		case <-ctx.Done():
			return
		case batch = <-q:
		}
		body, err := json.Marshal(SuppressionPage{Entries: batch})
		if err != nil {
			continue
		}
		var last error
		backoff := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: ss.opts.PushAttempts}
		err = wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
			last = ss.post(ctx, addr, body)
			return last == nil || errors.Is(last, errSelf), nil
		})
		switch {
		case errors.Is(last, errSelf):
			ss.markSelf(addr)
		case err == nil:
			ss.pushes.WithLabelValues("ok").Inc()
		default:
			ss.pushes.WithLabelValues("failed").Inc()
			ss.n.log.Warn("peer: pushing suppression changes failed; the member will pull them", "address", addr,
				"entries", len(batch), "err", last)
		}
	}
}

var errSelf = errors.New("that address is this member")

func (ss *suppressionSync) markSelf(addr string) {
	ss.mu.Lock()
	ss.self[addr] = true
	ss.mu.Unlock()
}

func (ss *suppressionSync) post(ctx context.Context, addr string, body []byte) error {
	st := ss.n.state.Load()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/v1/peer/suppressions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(PeerNameHeader, st.self)
	resp, err := st.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusConflict:
		return errSelf
	}
	return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
}

// pullLoop asks every other member for its changes at once and then every
// PullInterval, and sweeps the list every SweepInterval.
func (ss *suppressionSync) pullLoop(ctx context.Context) {
	pull := time.NewTicker(ss.opts.PullInterval)
	defer pull.Stop()
	sweep := time.NewTicker(ss.opts.SweepInterval)
	defer sweep.Stop()
	for {
		ss.pullAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-pull.C:
		case <-sweep.C:
			if err := ss.list.Sweep(); err != nil {
				ss.n.log.Warn("peer: sweeping the suppression list", "err", err)
			}
		}
	}
}

// pullAll runs one pull round over every other member.
func (ss *suppressionSync) pullAll(ctx context.Context) {
	for _, addr := range ss.n.state.Load().addresses {
		ss.mu.Lock()
		skip := ss.self[addr]
		since := ss.cursors[addr]
		ss.mu.Unlock()
		if skip || ctx.Err() != nil {
			continue
		}
		now, err := ss.pull(ctx, addr, since)
		switch {
		case errors.Is(err, errSelf):
			ss.markSelf(addr)
		case err != nil:
			ss.n.log.Warn("peer: pulling suppression changes failed; next round retries", "address", addr, "err", err)
		default:
			ss.mu.Lock()
			ss.cursors[addr] = now
			ss.mu.Unlock()
		}
	}
}

// pull reads every page of addr's changes since its clock value since (0:
// everything) and merges them; it returns the member's clock at the start
// of the round. Only one page is held at a time.
func (ss *suppressionSync) pull(ctx context.Context, addr string, since int64) (int64, error) {
	st := ss.n.state.Load()
	from := int64(0)
	if since > 0 {
		from = max(since-int64(pullSlack), 1)
	}
	var roundStart int64
	after := ""
	for {
		page, err := ss.getPage(ctx, st, addr, from, after)
		if err != nil {
			if !errors.Is(err, errSelf) {
				ss.pulls.WithLabelValues("failed").Inc()
			}
			return 0, err
		}
		ss.pulls.WithLabelValues("ok").Inc()
		if roundStart == 0 {
			roundStart = page.Now
		}
		n, err := ss.list.MergeAll(page.Entries)
		ss.merged.Add(float64(n))
		if err != nil {
			return 0, fmt.Errorf("merging a page from %s: %w", addr, err)
		}
		if page.Next == "" {
			return roundStart, nil
		}
		if page.Next <= after {
			return 0, fmt.Errorf("%s: page cursor %q does not advance", addr, page.Next)
		}
		after = page.Next
	}
}

func (ss *suppressionSync) getPage(ctx context.Context, st *state, addr string, since int64, after string) (SuppressionPage, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	q := url.Values{"limit": {strconv.Itoa(ss.opts.PageSize)}}
	if since > 0 {
		q.Set("since", strconv.FormatInt(since, 10))
	}
	if after != "" {
		q.Set("after", after)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/v1/peer/suppressions?"+q.Encode(), nil)
	req.Header.Set(PeerNameHeader, st.self)
	resp, err := st.http.Do(req)
	if err != nil {
		return SuppressionPage{}, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusConflict:
		return SuppressionPage{}, errSelf
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return SuppressionPage{}, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var page SuppressionPage
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxPageBytes)).Decode(&page); err != nil {
		return SuppressionPage{}, fmt.Errorf("reading a page: %w", err)
	}
	return page, nil
}
