package delivery

import (
	"bytes"
	"context"
	"net"
	"sync"
	"time"
)

// clientConn is the TCP connection beneath go-smtp's client. It does three
// things that client cannot:
//
//  1. Timeouts. go-smtp sets a deadline around each command and clears it
//     afterwards, so while a message body streams there is none, and a
//     receiver that stops reading would hang the attempt forever.
//     clientConn gives every write a deadline of one data-block timeout
//     (RFC 5321 §4.5.3.2.5: 3 minutes per block), caps every deadline by
//     the attempt's context (cancelling the context fails the I/O at
//     once), and while smtp.NewClientStartTLS runs - before its Client
//     exists to be configured - replaces its fixed 5-minute command
//     timeout by ours.
//  2. The EHLO name before STARTTLS. smtp.NewClientStartTLS greets as
//     "localhost" on purpose (emersion/go-smtp#297: the pre-TLS name is
//     unauthenticated anyway), but receiving MTAs and smarthosts such as
//     smtp-relay.gmail.com refuse or score down a non-FQDN HELO. The
//     single command line "EHLO localhost" (or the "HELO localhost"
//     fallback) written before STARTTLS is replaced by the pool's
//     hostname; after STARTTLS the client says Hello(hostname) itself.
//  3. Knowing what happened when setup fails: whether STARTTLS was sent
//     and whether any I/O failed, so a server that does not offer
//     STARTTLS is told apart from one that broke the connection.
type clientConn struct {
	net.Conn
	ehloName string
	block    time.Duration // write deadline per block

	mu           sync.Mutex
	setupTimeout time.Duration // >0: replaces go-smtp's command deadlines
	rewrite      bool          // still before STARTTLS
	sentSTARTTLS bool
	ioErr        error
	smtpDeadline time.Time // what go-smtp asked for, after setupTimeout
	ctxDeadline  time.Time
	cancelled    bool
	stop         func() bool
}

func newClientConn(c net.Conn, ehloName string, block time.Duration) *clientConn {
	return &clientConn{Conn: c, ehloName: ehloName, block: block, rewrite: true}
}

var past = time.Unix(1, 0)

// bind ties the connection to ctx until unbind: its deadline caps every
// I/O deadline and its cancellation fails pending I/O.
func (c *clientConn) bind(ctx context.Context) {
	c.mu.Lock()
	c.ctxDeadline, _ = ctx.Deadline()
	c.cancelled = false
	c.mu.Unlock()
	c.stop = context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cancelled = true
		c.mu.Unlock()
		_ = c.Conn.SetDeadline(past)
	})
	c.apply()
}

func (c *clientConn) unbind() {
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
	c.mu.Lock()
	c.ctxDeadline, c.cancelled = time.Time{}, false
	c.mu.Unlock()
	c.apply()
}

// clamp returns the deadline to use for t; c.mu is held.
func (c *clientConn) clamp(t time.Time) time.Time {
	if c.cancelled {
		return past
	}
	if !c.ctxDeadline.IsZero() && (t.IsZero() || c.ctxDeadline.Before(t)) {
		return c.ctxDeadline
	}
	return t
}

func (c *clientConn) apply() {
	c.mu.Lock()
	d := c.clamp(c.smtpDeadline)
	c.mu.Unlock()
	_ = c.Conn.SetDeadline(d)
}

func (c *clientConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	if !t.IsZero() && c.setupTimeout > 0 {
		t = time.Now().Add(c.setupTimeout)
	}
	c.smtpDeadline = t
	d := c.clamp(t)
	c.mu.Unlock()
	return c.Conn.SetDeadline(d)
}

func (c *clientConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	d := c.clamp(t)
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(d)
}

func (c *clientConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	d := c.clamp(t)
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(d)
}

var (
	ehloLocalhost = []byte("EHLO localhost\r\n")
	heloLocalhost = []byte("HELO localhost\r\n")
	startTLSCmd   = []byte("STARTTLS\r\n")
)

func (c *clientConn) Write(p []byte) (int, error) {
	out := p
	c.mu.Lock()
	if c.rewrite {
		switch {
		case bytes.Equal(p, ehloLocalhost):
			out = []byte("EHLO " + c.ehloName + "\r\n")
		case bytes.Equal(p, heloLocalhost):
			out = []byte("HELO " + c.ehloName + "\r\n")
		case bytes.EqualFold(p, startTLSCmd):
			c.sentSTARTTLS, c.rewrite = true, false
		}
	}
	d := time.Now().Add(c.block)
	if !c.smtpDeadline.IsZero() && c.smtpDeadline.Before(d) {
		d = c.smtpDeadline
	}
	d = c.clamp(d)
	c.mu.Unlock()

	_ = c.Conn.SetWriteDeadline(d)
	n, err := c.Conn.Write(out)
	if err != nil {
		c.fail(err)
	}
	if len(out) != len(p) {
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return n, err
}

func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.fail(err)
	}
	return n, err
}

func (c *clientConn) fail(err error) {
	c.mu.Lock()
	if c.ioErr == nil {
		c.ioErr = err
	}
	c.mu.Unlock()
}

// state returns what setup did: whether STARTTLS was sent and the first
// I/O error.
func (c *clientConn) state() (sentSTARTTLS bool, ioErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sentSTARTTLS, c.ioErr
}

// endSetup stops replacing go-smtp's deadlines and rewriting EHLO.
func (c *clientConn) endSetup() {
	c.mu.Lock()
	c.setupTimeout = 0
	c.rewrite = false
	c.mu.Unlock()
}
