package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is the recipient's MX: a plain go-smtp server that stores every
// message it accepts as a file.
type sink struct {
	srv  *smtp.Server
	addr string // where it listens
	dir  string
	mu   sync.Mutex
	got  []string // paths of stored messages
	wake chan struct{}
}

func startSink(addr, dir, hostname string) (*sink, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &sink{dir: dir, wake: make(chan struct{}, 1)}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = hostname
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.MaxMessageBytes = 50 << 20
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// port is the port the sink listens on.
func (s *sink) port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

func (s *sink) close() { _ = s.srv.Close() }

// wait returns the path of the first message received.
func (s *sink) wait(ctx context.Context, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		if len(s.got) > 0 {
			p := s.got[0]
			s.mu.Unlock()
			return p, nil
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-deadline:
			return "", fmt.Errorf("%w within %s", errNoMail, timeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{sink: s}, nil }

type sinkSession struct {
	sink *sink
	from string
	to   []string
}

func (ss *sinkSession) AuthMechanisms() []string { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.from = from
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	s := ss.sink
	s.mu.Lock()
	p := filepath.Join(s.dir, fmt.Sprintf("%03d.eml", len(s.got)+1))
	err := os.WriteFile(p, buf.Bytes(), 0o644)
	if err == nil {
		s.got = append(s.got, p)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return err
}
func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }
