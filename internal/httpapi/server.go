// Package httpapi is the relay's HTTP send API on listeners.api (HTTPS
// with the tls section's certificate): POST /v1/messages (structured JSON
// built into MIME with go-message, or a raw RFC 5322 message), the
// credential's view of the suppression list, an address check, and the
// OpenAPI 3.1 document that describes them (openapi.yaml). Submission goes
// through the relay's own core (relay.Server.Submit), so sender policy,
// limits, DKIM signing and durable queueing are SMTP's; refusals are RFC
// 9457 problem documents carrying the SMTP reply. docs/http-api.md is the
// user's guide.
package httpapi

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay"
)

// OpenAPI is the API's OpenAPI 3.1 document, served at /v1/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Resolver is the DNS the address check asks: the relay's
// delivery.Resolver.
type Resolver interface {
	LookupMX(ctx context.Context, domain string) (delivery.Route, error)
	LookupIP(ctx context.Context, host string, preferIPv6 bool) ([]netip.Addr, error)
}

// Options configure a Server.
type Options struct {
	Relay        *relay.Server
	Queue        *queue.Queue
	Suppressions *delivery.Suppressions
	Resolver     Resolver
	Logger       *slog.Logger
	// Registerer receives mailroom_api_requests_total; nil: not
	// registered.
	Registerer prometheus.Registerer
	// AfterCommit, if set, runs after a message is durable and before its
	// 202 is written (tests use it to kill the process at that moment).
	AfterCommit func(id string)
}

// Server serves the API.
type Server struct {
	opts     Options
	log      *slog.Logger
	requests *prometheus.CounterVec
	mux      *http.ServeMux
	// inflight holds the Idempotency-Keys of requests being processed, so
	// a concurrent retry is told to wait instead of queueing twice.
	inflight sync.Map
	hs       *http.Server
	stop     chan struct{}
	stopOnce sync.Once
}

// New returns a Server; Serve starts it.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, mux: http.NewServeMux(), stop: make(chan struct{})}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailroom_api_requests_total", Help: "HTTP API requests, by endpoint and status code.",
	}, []string{"endpoint", "code"})
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.requests)
	}
	s.route("POST /v1/messages", "messages", s.authenticated(s.postMessage))
	s.route("GET /v1/suppressions", "suppressions", s.authenticated(s.listSuppressions))
	s.route("DELETE /v1/suppressions/{address}", "suppression", s.authenticated(s.deleteSuppression))
	s.route("POST /v1/addresses/check", "address_check", s.authenticated(s.checkAddress))
	s.route("GET /v1/openapi.yaml", "openapi", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(OpenAPI)
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.requests.WithLabelValues("other", "404").Inc()
		writeProblem(w, problem{Type: "not-found", Title: "Not found", Status: http.StatusNotFound,
			Detail: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return s
}

// route registers h under pattern, counting its requests by endpoint.
func (s *Server) route(pattern, endpoint string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		cw := &codeWriter{ResponseWriter: w, code: http.StatusOK}
		h(cw, r)
		s.requests.WithLabelValues(endpoint, strconv.Itoa(cw.code)).Inc()
	})
}

type codeWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (c *codeWriter) WriteHeader(code int) {
	if !c.wroteHeader {
		c.code, c.wroteHeader = code, true
	}
	c.ResponseWriter.WriteHeader(code)
}

// Handler is the API without TLS (Serve adds it).
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves the API on ln over TLS until Shutdown, and prunes expired
// Idempotency-Keys hourly meanwhile.
func (s *Server) Serve(ln net.Listener) error {
	s.hs = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	go s.prune()
	err := s.hs.Serve(tls.NewListener(ln, s.opts.Relay.TLSConfig()))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server, letting requests in progress finish until
// ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	if s.hs == nil {
		return nil
	}
	return s.hs.Shutdown(ctx)
}

func (s *Server) prune() {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := s.opts.Queue.PruneAPIIdempotency(10000); err != nil && !errors.Is(err, queue.ErrClosed) {
			s.log.Warn("httpapi: pruning idempotency keys", "err", err)
		} else if n > 0 {
			s.log.Info("httpapi: pruned expired idempotency keys", "count", n)
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}
