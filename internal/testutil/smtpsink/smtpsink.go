// Package smtpsink is a receiving SMTP server for tests: a real go-smtp
// server on a loopback address whose answers a test scripts per phase and
// per recipient, and which records what it received.
//
// A Script says what happens at each phase of a session: when a connection
// arrives (before the greeting), at MAIL, at RCPT (per recipient address)
// and at the end of DATA. At each phase the sink can accept, answer with a
// chosen reply (a 4xx "N times, then accept" via Action.Times), stall
// without answering until the sink is closed, or drop the connection (at
// DATA: half-way through the message). An Action can also wait for a
// channel first, which lets a test hold several sessions open at once.
//
// STARTTLS is offered when Options.TLS is set (certificates come from a
// test CA, see NewCA); ImplicitTLS serves TLS from the first byte, as a
// port-465 smarthost does. AUTH PLAIN is offered when Options.Users is set.
//
// The sink records every message (envelope, MAIL/RCPT parameters, data,
// EHLO name, TLS state, authenticated user) and every connection, with the
// client's cleartext commands (up to STARTTLS) so tests can check what was
// said before encryption.
package smtpsink

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Action is what the sink does at one phase.
type Action struct {
	// Reply is sent instead of accepting (at Connect: instead of the
	// greeting, after which the connection is closed).
	Reply *smtp.SMTPError
	// Stall leaves the client waiting without an answer until the sink is
	// closed.
	Stall bool
	// Drop closes the connection without an answer. At Data the sink
	// closes it after reading only part of the message.
	Drop bool
	// Times limits the action to the first Times occurrences (per
	// recipient at Rcpt); later ones are accepted. 0: every time.
	Times int
	// Wait, when set, is waited for (until closed) before the phase is
	// answered, whatever the answer.
	Wait <-chan struct{}
}

// Script is the sink's behaviour. The zero Script accepts everything.
type Script struct {
	Connect Action
	Mail    Action
	// Rcpt maps lower-case recipient addresses to their action; "*" is
	// the action for any other recipient.
	Rcpt map[string]Action
	Data Action
}

// Reply is shorthand for an SMTP reply with an enhanced status code given
// as "5.1.1" (or "" for none).
func Reply(code int, enhanced, text string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: text}
	if enhanced != "" {
		parts := strings.Split(enhanced, ".")
		if len(parts) == 3 {
			for i, p := range parts {
				e.EnhancedCode[i], _ = strconv.Atoi(p)
			}
		}
	}
	return e
}

// Options configure a sink.
type Options struct {
	// Hostname is the name in the greeting; default "sink.test".
	Hostname string
	// TLS, when set, makes the sink offer STARTTLS with this configuration.
	TLS *tls.Config
	// ImplicitTLS serves TLS from the first byte (TLS must be set).
	ImplicitTLS bool
	// MaxMessageBytes is advertised with SIZE and enforced; 0: SIZE
	// without a limit.
	MaxMessageBytes int64
	// MaxRecipients per transaction; more get 452 4.5.3. 0: no limit.
	MaxRecipients int
	// SMTPUTF8 and DSN advertise those extensions.
	SMTPUTF8 bool
	DSN      bool
	// Users enables AUTH PLAIN with these username/password pairs.
	Users map[string]string
	// AllowInsecureAuth offers AUTH on cleartext connections too.
	AllowInsecureAuth bool
	// Script is the initial behaviour; see SetScript.
	Script Script
}

// Message is one message the sink accepted (or answered at end of DATA).
type Message struct {
	ConnID      int
	Helo        string // EHLO name in effect for the transaction
	TLS         bool
	TLSVersion  uint16
	ServerName  string // SNI the client sent
	AuthUser    string
	From        string
	MailOptions smtp.MailOptions
	Rcpts       []string
	RcptOptions []smtp.RcptOptions
	Data        []byte
	// Accepted is false when the sink did not answer the end of DATA
	// with 250 (an error reply, a stall, a drop).
	Accepted bool
}

// Conn is one accepted connection.
type Conn struct {
	ID     int
	Remote string
	// Transcript is the client's command lines sent in cleartext: all of
	// them on a connection without TLS, those up to STARTTLS otherwise.
	// Message data is not included.
	Transcript []string
}

// Sink is a running receiving SMTP server.
type Sink struct {
	// Addr is "ip:port".
	Addr string
	// Port is Addr's port.
	Port int

	opts   Options
	srv    *smtp.Server
	ln     net.Listener
	closed chan struct{}
	logw   *testLog

	mu           sync.Mutex
	script       Script
	counts       map[string]int
	messages     []Message
	conns        []*Conn
	active, peak int
	authFailures int
}

// Start listens on addr ("127.0.0.2:0", "127.0.0.3:2525", ...) and serves
// until the test ends.
func Start(t testing.TB, addr string, opts Options) *Sink {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("smtpsink: listen %s: %v", addr, err)
	}
	return Serve(t, ln, opts)
}

// ListenShared binds the same free port on every given IP, as tests that
// point several MX hosts (127.0.0.2, 127.0.0.3, ...) at one port override
// need. It returns the listeners in the order of ips.
func ListenShared(t testing.TB, ips ...string) []net.Listener {
	t.Helper()
	var lastErr error
	for range 20 {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatalf("smtpsink: listen %s: %v", ips[0], err)
		}
		port := strconv.Itoa(first.Addr().(*net.TCPAddr).Port)
		lns := []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				lastErr = err
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(ips) {
			return lns
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatalf("smtpsink: no port free on all of %v: %v", ips, lastErr)
	return nil
}

// Serve serves on ln until the test ends.
func Serve(t testing.TB, ln net.Listener, opts Options) *Sink {
	t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = "sink.test"
	}
	if opts.ImplicitTLS && opts.TLS == nil {
		t.Fatal("smtpsink: ImplicitTLS needs TLS")
	}
	s := &Sink{
		Addr:   ln.Addr().String(),
		Port:   ln.Addr().(*net.TCPAddr).Port,
		opts:   opts,
		closed: make(chan struct{}),
		script: opts.Script,
		counts: map[string]int{},
		logw:   &testLog{t: t},
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = opts.Hostname
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = opts.MaxRecipients
	srv.EnableSMTPUTF8 = opts.SMTPUTF8
	srv.EnableDSN = opts.DSN
	srv.AllowInsecureAuth = opts.AllowInsecureAuth
	srv.ErrorLog = log.New(s.logw, "smtpsink "+s.Addr+": ", 0)
	if !opts.ImplicitTLS {
		srv.TLSConfig = opts.TLS
	}
	s.srv = srv

	var l net.Listener = newListener(ln, s)
	if opts.ImplicitTLS {
		l = tls.NewListener(l, opts.TLS)
	}
	s.ln = l
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		close(s.closed) // releases stalled phases
		_ = srv.Close()
		<-done
		s.logw.stop()
	})
	return s
}

// SetScript replaces the behaviour for what happens next; occurrence
// counts (for Action.Times) start again from zero.
func (s *Sink) SetScript(sc Script) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = sc
	s.counts = map[string]int{}
}

// Messages returns the messages received so far.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.messages))
	copy(out, s.messages)
	return out
}

// Accepted returns the messages the sink accepted.
func (s *Sink) Accepted() []Message {
	var out []Message
	for _, m := range s.Messages() {
		if m.Accepted {
			out = append(out, m)
		}
	}
	return out
}

// Conns returns the connections accepted so far, including those answered
// at Connect.
func (s *Sink) Conns() []Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Conn, len(s.conns))
	for i, c := range s.conns {
		out[i] = *c
		out[i].Transcript = append([]string(nil), c.Transcript...)
	}
	return out
}

// Active returns the number of connections open now; Peak the most that
// were open at once.
func (s *Sink) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// Peak returns the largest number of connections that were open at once.
func (s *Sink) Peak() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// Waiting returns how many sessions are waiting in the given phase
// ("connect", "mail", "rcpt", "data") on an Action.Wait channel.
func (s *Sink) Waiting(phase string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts["waiting:"+phase]
}

// AuthFailures returns the number of rejected AUTH attempts.
func (s *Sink) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFailures
}

// act applies a phase's action. It returns the reply to send (nil:
// accept) or errDropped when the connection was closed.
func (s *Sink) act(phase, key string, pick func(Script) Action, conn net.Conn) error {
	s.mu.Lock()
	a := pick(s.script)
	s.counts[key]++
	n := s.counts[key]
	s.mu.Unlock()

	if a.Wait != nil {
		s.mu.Lock()
		s.counts["waiting:"+phase]++
		s.mu.Unlock()
		select {
		case <-a.Wait:
		case <-s.closed:
		}
		s.mu.Lock()
		s.counts["waiting:"+phase]--
		s.mu.Unlock()
	}
	if a.Times > 0 && n > a.Times {
		return nil
	}
	switch {
	case a.Stall:
		<-s.closed
		return errDropped
	case a.Drop:
		conn.Close()
		return errDropped
	case a.Reply != nil:
		return a.Reply
	}
	return nil
}

var errDropped = errors.New("smtpsink: connection dropped by script")

// listener applies the Connect action to each arriving connection in its
// own goroutine, so that a stalled or waiting connection does not hold up
// the others, and hands the accepted ones to the go-smtp server.
type listener struct {
	net.Listener
	s     *Sink
	ready chan net.Conn
	errc  chan error
}

func newListener(ln net.Listener, s *Sink) *listener {
	l := &listener{Listener: ln, s: s, ready: make(chan net.Conn), errc: make(chan error, 1)}
	go l.run()
	return l
}

func (l *listener) run() {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			l.errc <- err
			return
		}
		go l.handle(raw)
	}
}

func (l *listener) handle(raw net.Conn) {
	s := l.s
	s.mu.Lock()
	c := &Conn{ID: len(s.conns) + 1, Remote: raw.RemoteAddr().String()}
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	rc := &recordingConn{Conn: raw, s: s, info: c, record: !s.opts.ImplicitTLS}
	s.opened()

	err := s.act("connect", "connect", func(sc Script) Action { return sc.Connect }, rc)
	var reply *smtp.SMTPError
	switch {
	case err == nil:
		select {
		case l.ready <- rc:
		case <-s.closed:
			rc.Close()
		}
	case errors.As(err, &reply):
		fmt.Fprintf(rc, "%d %s\r\n", reply.Code, replyText(reply))
		rc.Close()
	default:
		rc.Close()
	}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errc:
		l.errc <- err
		return nil, err
	case <-l.s.closed:
		return nil, net.ErrClosed
	}
}

func replyText(e *smtp.SMTPError) string {
	if e.EnhancedCode == smtp.NoEnhancedCode || e.EnhancedCode == (smtp.EnhancedCode{}) {
		return e.Message
	}
	return fmt.Sprintf("%d.%d.%d %s", e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

func (s *Sink) opened() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active++
	s.peak = max(s.peak, s.active)
}

// recordingConn counts open connections and records the client's
// cleartext command lines.
type recordingConn struct {
	net.Conn
	s         *Sink
	info      *Conn
	closeOnce sync.Once

	record bool // still cleartext
	inData bool
	buf    []byte
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.record {
		c.buf = append(c.buf, p[:n]...)
		for {
			i := bytes.Index(c.buf, []byte("\r\n"))
			if i < 0 {
				break
			}
			line := string(c.buf[:i])
			c.buf = c.buf[i+2:]
			c.line(line)
		}
	}
	return n, err
}

func (c *recordingConn) line(line string) {
	if c.inData {
		c.inData = line != "."
		return
	}
	c.s.mu.Lock()
	c.info.Transcript = append(c.info.Transcript, line)
	c.s.mu.Unlock()
	switch strings.ToUpper(line) {
	case "DATA":
		c.inData = true
	case "STARTTLS":
		c.record = false
		c.buf = nil
	}
}

func (c *recordingConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.s.mu.Lock()
		c.s.active--
		c.s.mu.Unlock()
	})
	return err
}

// session is one SMTP session (go-smtp starts a new one after STARTTLS).
type session struct {
	s        *Sink
	c        *smtp.Conn
	connID   int
	authUser string
	msg      *Message
}

func (s *Sink) newSession(c *smtp.Conn) (smtp.Session, error) {
	id := 0
	if rc := findRecording(c.Conn()); rc != nil {
		id = rc.info.ID
	}
	return &session{s: s, c: c, connID: id}, nil
}

func findRecording(c net.Conn) *recordingConn {
	for {
		switch v := c.(type) {
		case *recordingConn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

func (ss *session) AuthMechanisms() []string {
	if len(ss.s.opts.Users) == 0 {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || len(ss.s.opts.Users) == 0 {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if want, ok := ss.s.opts.Users[username]; ok && want == password && (identity == "" || identity == username) {
			ss.authUser = username
			return nil
		}
		ss.s.mu.Lock()
		ss.s.authFailures++
		ss.s.mu.Unlock()
		return smtp.ErrAuthFailed
	}), nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if len(ss.s.opts.Users) > 0 && ss.authUser == "" {
		return smtp.ErrAuthRequired
	}
	if err := ss.s.act("mail", "mail", func(sc Script) Action { return sc.Mail }, ss.c.Conn()); err != nil {
		return err
	}
	m := &Message{ConnID: ss.connID, Helo: ss.c.Hostname(), AuthUser: ss.authUser, From: from}
	if opts != nil {
		m.MailOptions = *opts
	}
	if st, ok := ss.c.TLSConnectionState(); ok {
		m.TLS, m.TLSVersion, m.ServerName = true, st.Version, st.ServerName
	}
	ss.msg = m
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	addr := strings.ToLower(to)
	pick := func(sc Script) Action {
		if a, ok := sc.Rcpt[addr]; ok {
			return a
		}
		return sc.Rcpt["*"]
	}
	if err := ss.s.act("rcpt", "rcpt:"+addr, pick, ss.c.Conn()); err != nil {
		return err
	}
	ss.msg.Rcpts = append(ss.msg.Rcpts, to)
	var o smtp.RcptOptions
	if opts != nil {
		o = *opts
	}
	ss.msg.RcptOptions = append(ss.msg.RcptOptions, o)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	ss.s.mu.Lock()
	a := ss.s.script.Data
	ss.s.mu.Unlock()
	if a.Drop && (a.Times == 0 || ss.s.peekCount("data") < a.Times) {
		// Half-way through the message: read a little, then hang up.
		_, _ = io.ReadFull(bufio.NewReader(r), make([]byte, 1))
		return ss.s.act("data", "data", func(sc Script) Action { return sc.Data }, ss.c.Conn())
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := *ss.msg
	m.Data = data
	// Recorded before the action, so that a test can see a message whose
	// end of data is stalled.
	ss.s.mu.Lock()
	idx := len(ss.s.messages)
	ss.s.messages = append(ss.s.messages, m)
	ss.s.mu.Unlock()
	actErr := ss.s.act("data", "data", func(sc Script) Action { return sc.Data }, ss.c.Conn())
	ss.s.mu.Lock()
	ss.s.messages[idx].Accepted = actErr == nil
	ss.s.mu.Unlock()
	return actErr
}

func (s *Sink) peekCount(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

func (ss *session) Reset() { ss.msg = nil }

func (ss *session) Logout() error { return nil }

// testLog sends go-smtp's error log to the test log while the test runs.
type testLog struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}
