// Package peer is the pool's internal path between relays: HTTPS with
// mutual TLS, every member's certificate issued by the pool's CA, served
// on listeners.peer and never reachable by applications. It carries the
// queue handover of a draining member (a pod removed by scale-down) to the
// others, and keeps the pool's suppression list the same on every member
// (see Suppression list below).
//
// # Protocol
//
//	GET  /v1/peer/info      {"name": "relay-1", "draining": false}
//	POST /v1/peer/messages  one queued message: a JSON line (queue.Exported:
//	                        envelope, per-recipient state, attempts, next
//	                        attempt, delay-warned and held flags, original
//	                        arrival time) followed by exactly BodySize
//	                        bytes of the stored message. The header
//	                        Mailroom-Origin-Key names it: "<sender>/<queue id>".
//
// The receiver answers 200 {"id": …, "duplicate": bool} only after
// queue.Import has committed the message durably (the same fsynced commit
// as SMTP intake), and Import is idempotent on the origin key, so a retry
// after a lost answer never makes a second copy there. A draining member
// answers 409 and takes nothing; a full disk is 507. The sender removes
// its copy only after a 200.
//
// # Suppression list
//
// A hard bounce recorded by one member is honoured by every member
// (ShareSuppressions over a *delivery.Suppressions):
//
//	POST /v1/peer/suppressions          {"entries": [...]}: versions to merge
//	GET  /v1/peer/suppressions?since=N&after=A&limit=L
//	                                    {"entries": [...], "next": A', "now": N'}
//
// Each version carries its address, reply, expiry, an Updated time on the
// clock of the member that made the change, and Removed for a lifted
// suppression. The receiver keeps the later version of an address (last
// writer wins; at the same instant a removal wins), so a removal stays a
// tombstone until the entry would have expired and neither a late push
// nor a pull can bring the address back.
//
// Every change a member makes is pushed at once to each other member (one
// sender per member, each batch tried 5 times with backoff from 200ms).
// Every member also pulls: at start-up everything, then every 30 seconds
// the versions the other member stored since the "now" of its previous
// round, less a minute of overlap. Pages are ordered by address and hold
// 1000 entries, so a new member copies a list of any size in bounded
// memory, and a member that missed pushes (down, partitioned, or new
// after a scale-up) converges within one pull interval. A member removed
// by scale-down takes nothing with it: its entries are already on the
// others. Requests carry Mailroom-Peer-Name; a member answers 409 to
// itself (its own address is in peer.addresses) and is skipped from then
// on. Metrics: mailroom_suppression_entries, _pushes_total and
// _pulls_total by result, _merged_total.
//
// # Drain
//
// Drain hands every queued message to members that report themselves not
// draining, retrying with backoff until the queue is empty or ctx ends.
// The caller stops intake and delivery first, so nothing is attempted
// twice. A message keeps its original arrival time, so the retry deadline
// (delivery.retry.maxAge) and the DSN duty move with it: the receiver
// bounces it when the original deadline passes, as the sender would have.
//
// Each message goes to one member chosen by hashing its queue id over the
// sorted names of the members available now, and after an attempt whose
// outcome is unknown (a timeout after sending), to that same member again
// while it is available: its origin-key check then makes the retry
// harmless. The one way a message is delivered twice is a sender crash
// between the receiver's commit and the sender's Remove, followed by a
// change in the set of available members; a message is never lost.
//
// # Certificates
//
// peer.caFile verifies both sides; each member presents peer.certFile,
// which must carry the serverAuth and clientAuth extended key usages and
// name the member's peer address (its headless-Service DNS name). The
// files are read again on every configuration reload, so renewals apply
// without a restart.
package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
)

// Spool is the queue handover API; *queue.Queue implements it.
type Spool interface {
	IDs(after string, limit int) ([]string, error)
	Export(id string) (queue.Exported, io.ReadCloser, error)
	Import(ctx context.Context, e queue.Exported, body io.Reader, originKey string) (id string, dup bool, err error)
	Remove(id string) error
}

// OriginKeyHeader carries the idempotency key of a handed-over message.
const OriginKeyHeader = "Mailroom-Origin-Key"

// Info is what GET /v1/peer/info returns.
type Info struct {
	Name     string `json:"name"`
	Draining bool   `json:"draining"`
}

// ImportResult is the body of a 200 answer to POST /v1/peer/messages.
type ImportResult struct {
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

// Options configure a Node.
type Options struct {
	Spool      Spool
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
	// Backoff is the longest wait between handover rounds that made no
	// progress; default 5s.
	Backoff time.Duration
}

// Node is this relay's end of the peer path: server and client.
type Node struct {
	opts  Options
	log   *slog.Logger
	state atomic.Pointer[state]

	// sticky remembers, per queue id, the member an attempt with an
	// unknown outcome went to.
	mu     sync.Mutex
	sticky map[string]string
	srv    *http.Server

	handedOver *prometheus.CounterVec
	received   *prometheus.CounterVec

	sup atomic.Pointer[suppressionSync] // set by ShareSuppressions
}

type state struct {
	self      string
	addresses []string
	draining  bool
	drain     []string
	server    *tls.Config
	client    *tls.Config
	http      *http.Client
}

// New returns a Node for cfg, whose peer section must be set.
func New(opts Options, cfg *config.Config) (*Node, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 5 * time.Second
	}
	n := &Node{opts: opts, log: opts.Logger, sticky: map[string]string{},
		handedOver: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_peer_handover_total", Help: "Messages this relay tried to hand to another pool member while draining, by result.",
		}, []string{"result"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_peer_received_total", Help: "Messages handed to this relay by a draining pool member, by result.",
		}, []string{"result"}),
	}
	if err := n.Apply(cfg); err != nil {
		return nil, err
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(n.handedOver, n.received)
	}
	return n, nil
}

// Apply follows a reloaded configuration: certificates are read again,
// addresses, name and drain list replaced. On error the old state stays.
func (n *Node) Apply(cfg *config.Config) error {
	p := cfg.Peer
	if p == nil {
		return errors.New("peer: no peer section in the configuration")
	}
	ca, err := os.ReadFile(p.CAFile)
	if err != nil {
		return fmt.Errorf("peer.caFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("peer.caFile: %s holds no PEM certificate", p.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		return fmt.Errorf("peer.certFile/peer.keyFile: %w", err)
	}
	st := &state{self: p.Self, addresses: slices.Clone(p.Addresses), draining: cfg.Draining(), drain: slices.Clone(cfg.Drain),
		server: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs: pool, MinVersion: tls.VersionTLS13},
		client: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13},
	}
	st.http = &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
		TLSClientConfig: st.client, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext, ResponseHeaderTimeout: 2 * time.Minute,
	}}
	if old := n.state.Swap(st); old != nil {
		old.http.CloseIdleConnections()
	}
	return nil
}

// Serve serves the peer API on ln with mutual TLS until ln is closed.
func (n *Node) Serve(ln net.Listener) error {
	srv := &http.Server{Handler: n.Handler(), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return n.state.Load().server, nil
		}},
		ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops Serve, letting imports in progress finish until ctx ends.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopSuppressions()
	n.mu.Lock()
	srv := n.srv
	n.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// Handler is the peer API (without TLS; Serve adds it).
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/peer/info", func(w http.ResponseWriter, r *http.Request) {
		st := n.state.Load()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Info{Name: st.self, Draining: st.draining})
	})
	mux.HandleFunc("POST /v1/peer/messages", n.receive)
	n.suppressionRoutes(mux)
	return mux
}

func (n *Node) receive(w http.ResponseWriter, r *http.Request) {
	st := n.state.Load()
	if st.draining {
		n.received.WithLabelValues("refused_draining").Inc()
		http.Error(w, "this member is draining", http.StatusConflict)
		return
	}
	key := r.Header.Get(OriginKeyHeader)
	if key == "" {
		http.Error(w, OriginKeyHeader+" is required", http.StatusBadRequest)
		return
	}
	br := bufio.NewReaderSize(r.Body, 64<<10)
	line, err := br.ReadBytes('\n')
	if err != nil {
		http.Error(w, "reading the envelope: "+err.Error(), http.StatusBadRequest)
		return
	}
	var e queue.Exported
	if err := json.Unmarshal(line, &e); err != nil {
		http.Error(w, "envelope: "+err.Error(), http.StatusBadRequest)
		return
	}
	id, dup, err := n.opts.Spool.Import(r.Context(), e, br, key)
	switch {
	case errors.Is(err, queue.ErrBadExport):
		n.received.WithLabelValues("invalid").Inc()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case errors.Is(err, queue.ErrNoSpace):
		n.received.WithLabelValues("no_space").Inc()
		http.Error(w, err.Error(), http.StatusInsufficientStorage)
		return
	case err != nil:
		n.received.WithLabelValues("error").Inc()
		n.log.Error("peer: import failed", "origin", key, "err", err)
		http.Error(w, "import failed", http.StatusServiceUnavailable)
		return
	}
	if dup {
		n.received.WithLabelValues("duplicate").Inc()
	} else {
		n.received.WithLabelValues("imported").Inc()
	}
	n.log.Info("peer: message taken over", "origin", key, "queue_id", id, "duplicate", dup,
		"recipients", len(e.Message.Recipients), "received", e.Message.ReceivedAt)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ImportResult{ID: id, Duplicate: dup})
}

// member is another pool member that takes messages now.
type member struct {
	name, addr string
}

// members asks every address who it is and keeps those that are neither
// this relay nor draining, sorted by name.
func (n *Node) members(ctx context.Context, st *state) []member {
	var out []member
	for _, addr := range st.addresses {
		info, err := n.info(ctx, st, addr)
		if err != nil {
			n.log.Debug("peer: member unavailable", "address", addr, "err", err)
			continue
		}
		if info.Name == st.self || info.Name == "" || info.Draining || slices.Contains(st.drain, info.Name) {
			continue
		}
		out = append(out, member{name: info.Name, addr: addr})
	}
	slices.SortFunc(out, func(a, b member) int {
		if a.name < b.name {
			return -1
		}
		if a.name > b.name {
			return 1
		}
		return 0
	})
	return out
}

func (n *Node) info(ctx context.Context, st *state, addr string) (Info, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/v1/peer/info", nil)
	resp, err := st.http.Do(req)
	if err != nil {
		return Info{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Info{}, fmt.Errorf("info: %s", resp.Status)
	}
	var info Info
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&info)
	return info, err
}

// Drain hands every queued message to the other members until the queue
// is empty (nil) or ctx ends (ctx.Err()).
func (n *Node) Drain(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	for {
		ids, err := n.allIDs()
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			n.log.Info("peer: drained: every queued message was handed over")
			return nil
		}
		st := n.state.Load()
		progress := false
		if ms := n.members(ctx, st); len(ms) == 0 {
			n.log.Warn("peer: no pool member takes messages now; retrying", "queued", len(ids))
		} else {
			n.log.Info("peer: handing the queue over", "queued", len(ids), "members", len(ms))
			for _, id := range ids {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if n.handOver(ctx, st, ms, id) {
					progress = true
				}
			}
		}
		if progress {
			backoff = 200 * time.Millisecond
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, n.opts.Backoff)
	}
}

func (n *Node) allIDs() ([]string, error) {
	var all []string
	after := ""
	for {
		page, err := n.opts.Spool.IDs(after, 1000)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < 1000 {
			return all, nil
		}
		after = page[len(page)-1]
	}
}

// target picks the member for id: the one an unresolved attempt went to
// while it is still available, else by hash over the sorted members.
func (n *Node) target(ms []member, id string) member {
	n.mu.Lock()
	name, ok := n.sticky[id]
	n.mu.Unlock()
	if ok {
		for _, m := range ms {
			if m.name == name {
				return m
			}
		}
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return ms[int(h.Sum32()%uint32(len(ms)))]
}

// handOver sends one message and removes it locally after a 200; it
// reports whether the message left this queue.
func (n *Node) handOver(ctx context.Context, st *state, ms []member, id string) bool {
	m := n.target(ms, id)
	key := st.self + "/" + id
	res, sent, err := n.send(ctx, st, m, id, key)
	if errors.Is(err, queue.ErrNotFound) {
		return true // gone meanwhile (deleted through the admin API)
	}
	if err != nil {
		n.handedOver.WithLabelValues("retry").Inc()
		if sent {
			// The receiver may have committed it: ask the same member
			// again, whose origin-key check makes that safe.
			n.mu.Lock()
			n.sticky[id] = m.name
			n.mu.Unlock()
		}
		n.log.Warn("peer: handover failed; will retry", "queue_id", id, "member", m.name, "err", err)
		return false
	}
	if err := n.opts.Spool.Remove(id); err != nil && !errors.Is(err, queue.ErrNotFound) {
		// Taken over but still here: the next round sends it again and the
		// receiver answers duplicate.
		n.log.Error("peer: removing a handed-over message failed", "queue_id", id, "err", err)
		return false
	}
	n.mu.Lock()
	delete(n.sticky, id)
	n.mu.Unlock()
	n.handedOver.WithLabelValues("handed_over").Inc()
	n.log.Info("peer: message handed over", "queue_id", id, "member", m.name, "their_id", res.ID, "duplicate", res.Duplicate)
	return true
}

// send posts one message; sent reports whether the request body may have
// reached the receiver (so its outcome is unknown on error).
func (n *Node) send(ctx context.Context, st *state, m member, id, key string) (ImportResult, bool, error) {
	e, body, err := n.opts.Spool.Export(id)
	if err != nil {
		return ImportResult{}, false, err
	}
	defer body.Close()
	head, err := json.Marshal(e)
	if err != nil {
		return ImportResult{}, false, err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := pw.Write(append(head, '\n'))
		if err == nil {
			_, err = io.Copy(pw, body)
		}
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+m.addr+"/v1/peer/messages", pr)
	req.ContentLength = int64(len(head)+1) + e.BodySize
	req.Header.Set(OriginKeyHeader, key)
	req.Header.Set("Content-Type", "application/vnd.mailroom.handover")
	resp, err := st.http.Do(req)
	pr.Close()
	if err != nil {
		return ImportResult{}, true, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		// Only a draining member's refusal is sure to have taken nothing;
		// after any other the same member is asked again.
		return ImportResult{}, resp.StatusCode != http.StatusConflict, fmt.Errorf("%s: %s", resp.Status, b)
	}
	var res ImportResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&res); err != nil || res.ID == "" {
		return ImportResult{}, true, fmt.Errorf("reading the answer: %v", err)
	}
	return res, true, nil
}
