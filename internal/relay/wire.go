package relay

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// wireConn is the relay's own view of the SMTP byte stream, between the
// client's connection (after TLS) and go-smtp. go-smtp gets its commands
// from it one line per Read, so the reply go-smtp writes to one command is
// always seen before the next is handed over; that tells DATA and BDAT
// content from commands. It does what go-smtp offers no hook for:
//
//   - STARTTLS is terminated here and the TLS connection is handed to
//     go-smtp as a new connection (go-smtp's own upgrade would hide the
//     plaintext stream from the relay), which also resets all session
//     state as RFC 3207 §4.2 requires. Plaintext pipelined after STARTTLS
//     is refused, never read as if it came over TLS.
//   - DATA is framed by a correct RFC 5321 §4.5.2 parser (dataContent),
//     and the relay reads the content from it directly. go-smtp's reader
//     silently drops "." CR at the start of a line when no LF follows, and
//     after CR CR LF it misses the terminator and waits for more (a desync
//     that hangs the client); it also looks at every octet on its own.
//     go-smtp's DATA reader is given only the terminator, once the relay
//     is done with the content (endData).
//   - MAIL and RCPT paths with a second "@" outside a quoted local part
//     are refused with 553: go-smtp would take "a@b@c" as if the local
//     part had been quoted.
//   - go-smtp's replies for bad command sequences (502) and undecodable
//     AUTH data (454) get the codes RFC 5321 §4.3.2 (503) and RFC 4954 §4
//     (501) prescribe.
type wireConn struct {
	net.Conn // what go-smtp's bytes go through: tc, or TLS over tc
	s        *Server
	tc       *trackedConn
	listener string
	tls      *tls.Conn // nil before TLS
	r        *bufio.Reader

	shook     bool // implicit TLS: handshake done
	handedOff atomic.Bool

	mode     wireMode
	pending  []byte                      // rest of a command line that did not fit in go-smtp's buffer
	longLine bool                        // the command line being passed on is longer than the buffer
	chunk    int64                       // BDAT: octets of the chunk still to pass on
	content  atomic.Pointer[dataContent] // DATA: set by the 354 reply, until go-smtp has the terminator

	wbuf         []byte // a reply line written in parts
	dropGreeting bool   // after STARTTLS: go-smtp's new 220 is not for the client
	saslLine     bool   // after a 334: the next line is an AUTH response, not a command
}

type wireMode int

const (
	modeCommand wireMode = iota
	modeData
	modeChunk
)

type dataState int

const (
	dsLineStart dataState = iota
	dsMid
	dsDot   // "." at the start of a line
	dsDotCR // "." CR at the start of a line, CR held back
	dsCR    // CR held back until the next octet shows whether it is bare
)

// wire wraps an admitted connection for go-smtp.
func (s *Server) wire(tc *trackedConn, implicitTLS bool) net.Conn {
	w := &wireConn{Conn: tc, s: s, tc: tc, listener: tc.listener}
	if implicitTLS {
		w.tls = tls.Server(tc, s.tlsConfig)
		w.Conn = w.tls
	} else {
		w.shook = true
	}
	w.r = bufio.NewReaderSize(w.Conn, 4096)
	return w
}

func unwrapWire(c net.Conn) *wireConn {
	w, _ := c.(*wireConn)
	return w
}

// handshake runs the implicit-TLS handshake under the command timeout, as
// go-smtp does for a *tls.Conn it is given.
func (w *wireConn) handshake() error {
	if w.shook {
		return nil
	}
	w.shook = true
	d := w.s.policy.Load().cfg.Limits.CommandTimeout.Duration
	if d > 0 {
		_ = w.tc.SetDeadline(time.Now().Add(d))
		defer w.tc.SetDeadline(time.Time{})
	}
	return w.tls.Handshake()
}

func (w *wireConn) Close() error {
	if w.handedOff.Load() {
		// The connection lives on under a new wireConn.
		return nil
	}
	return w.Conn.Close()
}

func (w *wireConn) Read(p []byte) (int, error) {
	if w.handedOff.Load() {
		return 0, io.EOF
	}
	if err := w.handshake(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(w.pending) > 0 {
		n := copy(p, w.pending)
		w.pending = w.pending[n:]
		return n, nil
	}
	switch w.mode {
	case modeData:
		return w.endData(p)
	case modeChunk:
		if int64(len(p)) > w.chunk {
			p = p[:w.chunk]
		}
		n, err := w.r.Read(p)
		if w.chunk -= int64(n); w.chunk == 0 {
			w.mode = modeCommand
		}
		return n, err
	}
	for {
		line, err := w.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull || (w.longLine && err == nil) {
			// Part of a line longer than the buffer: go-smtp's line limit
			// deals with it.
			w.longLine = err == bufio.ErrBufferFull
			return w.hand(p, line), nil
		}
		if len(line) == 0 {
			return 0, err
		}
		if err != nil {
			// A last line without LF; go-smtp sees the error next.
			return w.hand(p, line), nil
		}
		if w.saslLine {
			w.saslLine = false
			return w.hand(p, line), nil
		}
		handled, err := w.command(line)
		if err != nil {
			return 0, err
		}
		if !handled {
			return w.hand(p, line), nil
		}
	}
}

// hand gives go-smtp line, keeping what does not fit for the next Read.
func (w *wireConn) hand(p, line []byte) int {
	n := copy(p, line)
	w.pending = append(w.pending[:0], line[n:]...)
	return n
}

// command looks at a command line before go-smtp gets it; handled means it
// was answered here.
func (w *wireConn) command(line []byte) (handled bool, err error) {
	cmd := strings.TrimRight(string(line), "\r\n")
	upper := strings.ToUpper(cmd)
	switch {
	case strings.HasPrefix(upper, "STARTTLS"): // as go-smtp's parseCmd matches it
		switch {
		case w.tls != nil:
			return true, w.reply("502 5.5.1 Already running TLS")
		case upper != "STARTTLS":
			return true, w.reply("501 5.5.4 STARTTLS takes no parameters")
		}
		return true, w.startTLS()
	case isPathCommand(cmd, "MAIL", "FROM:"):
		if why := pathStructure(pathArg(cmd)); why != "" {
			w.refuse("bad_sender", fmt.Sprintf("553 5.1.7 Sender address is not a valid mailbox (RFC 5321 section 4.1.2): %s", why))
			return true, nil
		}
	case isPathCommand(cmd, "RCPT", "TO:"):
		if why := pathStructure(pathArg(cmd)); why != "" {
			w.refuse("bad_recipient", fmt.Sprintf("553 5.1.3 Recipient address is not a valid mailbox (RFC 5321 section 4.1.2): %s", why))
			return true, nil
		}
	case upper == "BDAT" || strings.HasPrefix(upper, "BDAT "):
		if size, ok := bdatChunk(cmd[4:]); ok {
			// go-smtp reads the chunk whatever it replies; its octets are
			// passed on as they are (dataGuard polices them).
			w.chunk = size
			if size > 0 {
				w.mode = modeChunk
			}
		}
	}
	return false, nil
}

// isPathCommand matches MAIL FROM: and RCPT TO: as go-smtp's parseCmd and
// handleMail/handleRcpt do.
func isPathCommand(cmd, verb, prefix string) bool {
	if len(cmd) < 5 || !strings.EqualFold(cmd[:4], verb) || cmd[4] != ' ' {
		return false
	}
	arg := strings.TrimSpace(cmd[5:])
	return len(arg) >= len(prefix) && strings.EqualFold(arg[:len(prefix)], prefix)
}

// pathArg is what follows "FROM:" or "TO:".
func pathArg(cmd string) string {
	arg := strings.TrimSpace(cmd[5:])
	return arg[strings.IndexByte(arg, ':')+1:]
}

// bdatChunk tells, as go-smtp's handleBdat decides it, whether a chunk of
// size octets follows a BDAT command with these arguments.
func bdatChunk(arg string) (int64, bool) {
	args := strings.Fields(arg)
	if len(args) == 0 || len(args) > 2 || (len(args) == 2 && !strings.EqualFold(args[1], "LAST")) {
		return 0, false
	}
	size, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil {
		return 0, false
	}
	return int64(size), true
}

// pathStructure checks what go-smtp's path parser cannot: that the domain
// of a <local@domain> path holds no "@". It follows go-smtp's parser
// (optional brackets, source route, quoted or dot-string local part), so
// anything else it finds wrong go-smtp refuses itself. It returns why the
// path is refused, or "".
func pathStructure(arg string) string {
	s := strings.TrimSpace(arg)
	if strings.HasPrefix(s, "<>") {
		return ""
	}
	s = strings.TrimPrefix(s, "<")
	if strings.HasPrefix(s, "@") {
		i := strings.IndexByte(s, ':')
		if i < 0 {
			return ""
		}
		s = s[i+1:]
	}
	if strings.HasPrefix(s, `"`) {
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' {
				i++
			}
		}
		if i >= len(s) {
			return ""
		}
		s = s[i+1:]
	} else {
		i := strings.IndexByte(s, '@')
		if i < 0 {
			return ""
		}
		s = s[i:]
	}
	if !strings.HasPrefix(s, "@") {
		return ""
	}
	s = s[1:]
	if i := strings.IndexAny(s, " \t>"); i >= 0 {
		s = s[:i]
	}
	if strings.Contains(s, "@") {
		return `a second "@" outside a quoted local part`
	}
	return ""
}

// refuse answers a command go-smtp does not see.
func (w *wireConn) refuse(reason, reply string) {
	w.s.m.rejected.WithLabelValues(reason).Inc()
	if w.tc.rejects.individually() {
		w.s.log.Info("relay: rejected", "client", w.tc.ip.String(), "listener", w.listener, "reason", reason, "reply", reply)
	} else {
		w.tc.rejects.suppressed(reason)
	}
	_ = w.reply(reply)
}

// reply writes one reply line of the relay's own.
func (w *wireConn) reply(line string) error {
	if d := w.s.policy.Load().cfg.Limits.CommandTimeout.Duration; d > 0 {
		_ = w.Conn.SetWriteDeadline(time.Now().Add(d))
	}
	_, err := io.WriteString(w.Conn, line+"\r\n")
	return err
}

// startTLS answers STARTTLS, runs the handshake and hands the TLS
// connection to go-smtp as a new one; this one ends (io.EOF) without
// closing the connection.
func (w *wireConn) startTLS() error {
	if w.r.Buffered() > 0 {
		// RFC 3207 §5: nothing sent before the handshake may count as
		// sent over TLS.
		_ = w.reply("554 5.5.0 Commands sent after STARTTLS before the TLS handshake; closing")
		w.s.m.rejected.WithLabelValues("starttls_pipelining").Inc()
		w.s.log.Warn("relay: plaintext pipelined after STARTTLS; connection closed", "client", w.tc.ip.String())
		w.tc.Close()
		return io.EOF
	}
	if err := w.reply("220 2.0.0 Ready to start TLS"); err != nil {
		return err
	}
	tc := tls.Server(w.tc, w.s.tlsConfig)
	if d := w.s.policy.Load().cfg.Limits.CommandTimeout.Duration; d > 0 {
		_ = w.tc.SetDeadline(time.Now().Add(d))
	}
	if err := tc.Handshake(); err != nil {
		w.s.log.Info("relay: STARTTLS handshake failed", "client", w.tc.ip.String(), "err", err)
		w.tc.Close()
		return io.EOF
	}
	_ = w.tc.SetDeadline(time.Time{})
	next := &wireConn{Conn: tc, s: w.s, tc: w.tc, listener: w.listener, tls: tc, shook: true, dropGreeting: true}
	next.r = bufio.NewReaderSize(tc, 4096)
	w.handedOff.Store(true)
	w.s.handOff(w.listener, next)
	return io.EOF
}

// handOff gives a connection that switched to TLS to the current
// generation as a new one.
func (s *Server) handOff(name string, c net.Conn) {
	for {
		if s.shutting.Load() {
			_, _ = io.WriteString(c, "421 4.3.2 Service shutting down, try again later\r\n")
			c.Close()
			return
		}
		g := s.gen.Load()
		select {
		case g.feeds[name].ch <- c:
			return
		case <-g.feeds[name].done:
			time.Sleep(time.Millisecond)
		}
	}
}

// endData finishes a DATA transfer on go-smtp's side. The relay reads the
// content itself (dataContent); whatever it left unread, because it
// refused the message early, is read here to the terminator and dropped.
// go-smtp's own DATA reader then gets only the terminator line.
func (w *wireConn) endData(p []byte) (int, error) {
	if c := w.content.Load(); c != nil {
		if _, err := io.Copy(io.Discard, c); err != nil {
			return 0, err
		}
		w.content.Store(nil)
	}
	w.mode = modeCommand
	return w.hand(p, dataTerminator), nil
}

var dataTerminator = []byte(".\r\n")

// dataContent is the content of one DATA transfer as RFC 5321 §4.5.2
// frames it, read straight from the connection: a leading "." of a line
// is removed, and CRLF "." CRLF ends it (io.EOF). Every other octet is
// passed on as it came, bare CR and LF included, for the relay to refuse
// (dataGuard). go-smtp's own reader looks at every octet through three
// layers of readers and drops a CR after a leading "."; this one copies
// runs of ordinary octets at once, so its cost is a scan per line.
type dataContent struct {
	r    *bufio.Reader
	ds   dataState
	done bool
	err  error
}

func (d *dataContent) Read(p []byte) (int, error) {
	if d.done {
		return 0, io.EOF
	}
	if d.err != nil {
		return 0, d.err
	}
	n := 0
	for n < len(p) {
		if n > 0 && d.r.Buffered() == 0 {
			break // do not wait for more while holding some
		}
		if d.ds == dsMid {
			// A run of octets up to the next CR, at once: only a CR can
			// start the end of a line.
			buf, _ := d.r.Peek(d.r.Buffered())
			if i := bytes.IndexByte(buf, '\r'); i != 0 && len(buf) > 0 {
				if i < 0 {
					i = len(buf)
				}
				i = copy(p[n:], buf[:i])
				n += i
				_, _ = d.r.Discard(i)
				continue
			}
		}
		c, err := d.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			d.err = err
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		switch d.ds {
		case dsLineStart:
			switch c {
			case '.':
				d.ds = dsDot // removed: the sender doubled it, or it ends the data
				continue
			case '\r':
				d.ds = dsCR
			default:
				d.ds = dsMid
			}
		case dsDot:
			switch c {
			case '\r':
				d.ds = dsDotCR // held back until the next octet shows whether this is the end
				continue
			default:
				d.ds = dsMid
			}
		case dsDotCR:
			if c == '\n' {
				d.done = true
				if n > 0 {
					return n, nil
				}
				return 0, io.EOF
			}
			// "." CR and no LF: the CR is content (a bare one); the octet
			// after it is looked at again.
			_ = d.r.UnreadByte()
			c, d.ds = '\r', dsCR
		case dsCR:
			if c == '\n' {
				d.ds = dsLineStart
			} else {
				_ = d.r.UnreadByte()
				d.ds = dsMid
				continue
			}
		case dsMid:
			if c == '\r' {
				d.ds = dsCR
			}
		}
		p[n] = c
		n++
	}
	return n, nil
}

// replyRewrites are go-smtp's replies that RFC 5321 and RFC 4954 want
// otherwise.
var replyRewrites = map[string]string{
	"502 5.5.1 Missing MAIL FROM command.":               "503 5.5.1 Bad sequence of commands: MAIL FROM first",
	"502 5.5.1 Missing RCPT TO command.":                 "503 5.5.1 Bad sequence of commands: RCPT TO first",
	"502 5.5.1 Please introduce yourself first.":         "503 5.5.1 Bad sequence of commands: EHLO first",
	"502 5.5.1 MAIL not allowed during message transfer": "503 5.5.1 Bad sequence of commands: MAIL during a BDAT transfer",
	"502 5.5.1 RCPT not allowed during message transfer": "503 5.5.1 Bad sequence of commands: RCPT during a BDAT transfer",
	"502 5.5.1 DATA not allowed during message transfer": "503 5.5.1 Bad sequence of commands: DATA during a BDAT transfer",
	"454 4.7.0 Invalid base64 data":                      "501 5.5.2 Invalid base64 data (RFC 4954 section 4)",
	"502 5.5.4 Missing parameter":                        "501 5.5.4 AUTH needs a mechanism",
}

func (w *wireConn) Write(p []byte) (int, error) {
	if err := w.handshake(); err != nil {
		return 0, err
	}
	w.wbuf = append(w.wbuf, p...)
	var out []byte
	for {
		i := bytes.Index(w.wbuf, []byte("\r\n"))
		if i < 0 {
			break
		}
		line := string(w.wbuf[:i])
		w.wbuf = w.wbuf[i+2:]
		switch {
		case w.dropGreeting && strings.HasPrefix(line, "220 "):
			w.dropGreeting = false
			continue
		case w.tls != nil && line == "250-STARTTLS":
			continue
		case strings.HasPrefix(line, "354 "):
			w.mode = modeData
			w.content.Store(&dataContent{r: w.r})
		case strings.HasPrefix(line, "334 "):
			w.saslLine = true
		}
		if r, ok := replyRewrites[line]; ok {
			line = r
		}
		out = append(append(out, line...), '\r', '\n')
	}
	if len(out) > 0 {
		if _, err := w.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
