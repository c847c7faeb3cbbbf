package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// tlsPolicy is the TLS a connection must have.
type tlsPolicy int

const (
	// tlsOpportunistic uses STARTTLS when offered, without requiring a
	// valid certificate (RFC 7435), and falls back to cleartext when
	// STARTTLS is missing or fails.
	tlsOpportunistic tlsPolicy = iota
	// tlsRequired needs STARTTLS with a certificate valid for the host
	// name; otherwise the host is not used.
	tlsRequired
	// tlsImplicit speaks TLS from the first byte (port 465), verified.
	tlsImplicit
	// tlsNone never uses TLS.
	tlsNone
)

// target is one server to connect to.
type target struct {
	host  string // MX or smarthost name: SNI, verification, logs
	ip    netip.Addr
	port  int
	tls   tlsPolicy
	sts   bool // TLS is required by MTA-STS: failures are ReasonMTASTS
	smart bool // the smarthost: authenticate if credentials are configured
}

func (t target) addr() string { return netip.AddrPortFrom(t.ip, uint16(t.port)).String() }

// session is an established SMTP session on one connection.
type session struct {
	c          *smtp.Client
	conn       *clientConn
	host       string
	ip         string
	tlsVersion string // "" in cleartext
	verified   bool   // the certificate is valid for host
	uses       int
	lastUsed   time.Time
	dirty      bool // a transaction may be open: RSET before the next
	replied    bool // the server answered in the current transaction
	broken     bool // the connection failed: close without QUIT
}

// open connects to t and sets up a session: greeting, EHLO, TLS as t
// requires, and AUTH for the smarthost.
func (d *Deliverer) open(ctx context.Context, t target) (*session, *failure) {
	addr := t.addr()
	raw, err := d.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		f := &failure{status: Deferred, reason: ReasonConnection, code: "4.4.1", host: t.host, ip: t.ip.String(),
			detail: fmt.Sprintf("connect to %s [%s]: %v", t.host, addr, err)}
		f.markDown = ctx.Err() == nil
		return nil, f
	}
	conn := newClientConn(raw, d.opts.Hostname, d.opts.Timeouts.DataBlock)
	conn.bind(ctx)
	s, f, retryCleartext := d.setup(ctx, conn, t)
	if f != nil || retryCleartext {
		conn.unbind()
		raw.Close()
	}
	if retryCleartext {
		t.tls = tlsNone
		return d.open(ctx, t)
	}
	if f != nil {
		f.host, f.ip = t.host, t.ip.String()
		return nil, f
	}
	d.metrics.open.Inc()
	d.metrics.connections.WithLabelValues(tlsLabel(s.tlsVersion), strconv.FormatBool(s.verified)).Inc()
	return s, nil
}

// setup speaks SMTP on a new connection up to a session ready for MAIL.
// retryCleartext asks for a new connection without TLS: opportunistic
// STARTTLS was not offered or did not work.
func (d *Deliverer) setup(ctx context.Context, conn *clientConn, t target) (s *session, f *failure, retryCleartext bool) {
	addr := t.addr()
	fail := func(reason Reason, code, detail string) *failure {
		return &failure{status: Deferred, reason: reason, code: code, detail: detail}
	}
	tlsFail := ReasonTLS
	if t.sts {
		tlsFail = ReasonMTASTS
	}
	s = &session{conn: conn, host: t.host, ip: t.ip.String()}

	var c *smtp.Client
	switch {
	case t.tls == tlsImplicit:
		tc := tls.Client(conn, d.verifiedTLS(t.host))
		hctx, cancel := context.WithTimeout(ctx, d.opts.Timeouts.Command)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return nil, fail(tlsFail, "4.7.5", fmt.Sprintf("TLS handshake with %s [%s]: %v", t.host, addr, err)), false
		}
		c = smtp.NewClient(tc)
		d.configure(c)
		if err := c.Hello(d.opts.Hostname); err != nil {
			return nil, helloFailure(ctx, err, t), false
		}
		s.verified = true

	case t.tls == tlsNone || t.tls == tlsOpportunistic && d.noTLSRemembered(addr):
		c = smtp.NewClient(conn)
		d.configure(c)
		if err := c.Hello(d.opts.Hostname); err != nil {
			return nil, helloFailure(ctx, err, t), false
		}

	default: // STARTTLS
		verified := false
		cfg := d.verifiedTLS(t.host)
		if t.tls == tlsOpportunistic {
			cfg = d.opportunisticTLS(t.host, &verified)
		}
		conn.mu.Lock()
		conn.setupTimeout = d.opts.Timeouts.Command
		conn.mu.Unlock()
		var err error
		c, err = smtp.NewClientStartTLS(conn, cfg)
		conn.endSetup()
		if err != nil {
			sent, ioErr := conn.state()
			rep, isReply := replyOf(err)
			switch {
			case !sent && isReply:
				return nil, helloFailure(ctx, err, t), false
			case ioErr != nil || ctx.Err() != nil:
				f := fail(ReasonConnection, "4.4.2", fmt.Sprintf("%s [%s]: %v", t.host, addr, err))
				f.markDown = ctx.Err() == nil
				return nil, f, false
			}
			// Neither a refusal nor an I/O failure: STARTTLS was not
			// offered (go-smtp's own error), or it was refused.
			why := "does not offer STARTTLS"
			if isReply {
				why = "refused STARTTLS"
			}
			if t.tls != tlsOpportunistic {
				f := fail(tlsFail, "4.7.5", fmt.Sprintf("%s [%s] %s, and TLS is required", t.host, addr, why))
				f.reply = rep
				return nil, f, false
			}
			d.noTLS.Mark(addr, why)
			d.log.Info("STARTTLS unavailable; delivering in cleartext", "remoteHost", t.host, "remoteIP", t.ip.String(),
				"detail", why, "reply", rep.String())
			return nil, nil, true
		}
		d.configure(c)
		// The TLS handshake happens with this EHLO.
		if err := c.Hello(d.opts.Hostname); err != nil {
			if st, ok := c.TLSConnectionState(); ok && st.HandshakeComplete {
				return nil, helloFailure(ctx, err, t), false
			}
			if t.tls != tlsOpportunistic || ctx.Err() != nil {
				return nil, fail(tlsFail, "4.7.5", fmt.Sprintf("TLS with %s [%s] failed: %v", t.host, addr, err)), false
			}
			d.noTLS.Mark(addr, "TLS handshake failed: "+err.Error())
			d.log.Info("TLS handshake failed; delivering in cleartext", "remoteHost", t.host, "remoteIP", t.ip.String(), "error", err)
			return nil, nil, true
		}
		s.verified = verified || t.tls != tlsOpportunistic
	}
	conn.endSetup()
	s.c = c
	if st, ok := c.TLSConnectionState(); ok {
		s.tlsVersion = tls.VersionName(st.Version)
	}
	if t.smart && d.opts.Smarthost.CredentialsFile != "" {
		if f := d.authenticate(s, t, fail); f != nil {
			return nil, f, false
		}
	}
	return s, nil, false
}

func (d *Deliverer) noTLSRemembered(addr string) bool {
	_, _, down := d.noTLS.Down(addr)
	return down
}

// configure sets the RFC 5321 timeouts on a new client.
func (d *Deliverer) configure(c *smtp.Client) {
	c.CommandTimeout = d.opts.Timeouts.Command
	c.SubmissionTimeout = d.opts.Timeouts.FinalDot
}

// helloFailure describes a refused or failed greeting or EHLO. Either
// way the server is remembered as down: it would say the same to the next
// message.
func helloFailure(ctx context.Context, err error, t target) *failure {
	if rep, ok := replyOf(err); ok {
		return &failure{status: Deferred, reason: ReasonConnection, reply: rep, markDown: true, noService: rep.Code/100 == 5,
			detail: fmt.Sprintf("%s [%s] refused the session", t.host, t.addr())}
	}
	return &failure{status: Deferred, reason: ReasonConnection, code: "4.4.2", markDown: ctx.Err() == nil,
		detail: fmt.Sprintf("%s [%s]: %v", t.host, t.addr(), err)}
}

// verifiedTLS is the configuration where the certificate must be valid
// for host (MTA-STS enforce, smarthost).
func (d *Deliverer) verifiedTLS(host string) *tls.Config {
	return &tls.Config{ServerName: host, RootCAs: d.opts.RootCAs, MinVersion: tls.VersionTLS12}
}

// opportunisticTLS accepts any certificate, as opportunistic TLS must (RFC
// 7435: encryption without authentication beats cleartext), but records
// whether it would have verified, for logs and the MTA-STS testing mode.
func (d *Deliverer) opportunisticTLS(host string, verified *bool) *tls.Config {
	roots := d.opts.RootCAs
	return &tls.Config{
		ServerName:         host,
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS10,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			opts := x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			*verified = err == nil
			return nil
		},
	}
}

// authenticate logs in to the smarthost with AUTH PLAIN (or LOGIN), never
// in cleartext.
func (d *Deliverer) authenticate(s *session, t target, fail func(Reason, string, string) *failure) *failure {
	if s.tlsVersion == "" {
		return fail(ReasonTLS, "4.7.10", fmt.Sprintf("smarthost %s [%s] did not give TLS; credentials are never sent in cleartext", t.host, t.addr()))
	}
	creds, err := LoadCredentials(d.opts.Smarthost.CredentialsFile)
	if err != nil {
		return fail(ReasonAuth, "4.7.0", "smarthost credentials: "+err.Error())
	}
	var mech sasl.Client
	switch {
	case s.c.SupportsAuth(sasl.Plain):
		mech = sasl.NewPlainClient("", creds.Username, creds.Password)
	case s.c.SupportsAuth(sasl.Login):
		mech = sasl.NewLoginClient(creds.Username, creds.Password)
	default:
		ok, mechs := s.c.Extension("AUTH")
		if !ok {
			mechs = "none"
		}
		return fail(ReasonAuth, "4.7.0", fmt.Sprintf("smarthost %s offers no AUTH PLAIN or LOGIN (offers: %s)", t.host, mechs))
	}
	if err := s.c.Auth(mech); err != nil {
		f := fail(ReasonAuth, "4.7.0", fmt.Sprintf("smarthost %s refused the credentials of %s", t.host, creds.Username))
		if rep, ok := replyOf(err); ok {
			f.reply = rep
		} else {
			f.reason, f.detail = ReasonConnection, fmt.Sprintf("smarthost %s: AUTH: %v", t.host, err)
		}
		return f
	}
	return nil
}

// closeSession ends a session politely (QUIT) without holding up the
// caller for long.
func (d *Deliverer) closeSession(s *session) {
	d.metrics.open.Dec()
	d.mu.Lock()
	late := d.closed
	if !s.broken && !late {
		d.quitting.Add(1)
	}
	d.mu.Unlock()
	if s.broken || late {
		s.c.Close()
		return
	}
	go func() {
		defer d.quitting.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.conn.bind(ctx)
		if err := s.c.Quit(); err != nil {
			s.c.Close()
		}
		s.conn.unbind()
	}()
}

// txResult is the outcome of one transaction.
type txResult struct {
	results []Result
	// again marks recipients refused only because the transaction had
	// too many (452): they go in the next transaction.
	again []bool
	// broken: the connection is unusable.
	broken bool
	// stale: a reused connection turned out to be dead before the
	// server said anything; nothing happened, try on a new one.
	stale bool
}

// transact runs one mail transaction: MAIL, RCPT for each recipient,
// DATA.
func (d *Deliverer) transact(ctx context.Context, s *session, msg Message, rcpts []Recipient) (tx txResult) {
	tx = txResult{results: make([]Result, len(rcpts)), again: make([]bool, len(rcpts))}
	reused := s.uses > 0
	s.uses++
	stamp := func(r Result) Result {
		r.RemoteHost, r.RemoteIP, r.TLSVersion = s.host, s.ip, s.tlsVersion
		return r
	}
	all := func(f func(rcpt string) Result) {
		for i, r := range rcpts {
			tx.results[i] = stamp(f(r.Address))
		}
	}
	netFail := func(step string, err error, idx []int) {
		tx.broken = true
		detail := fmt.Sprintf("%s [%s]: connection lost during %s: %v", s.host, s.ip, step, err)
		if ctx.Err() != nil {
			detail = fmt.Sprintf("%s [%s]: %s interrupted: %v", s.host, s.ip, step, ctx.Err())
		}
		for _, i := range idx {
			tx.results[i] = stamp(local(rcpts[i].Address, Deferred, ReasonConnection, "4.4.2", detail))
		}
	}
	every := make([]int, len(rcpts))
	for i := range every {
		every[i] = i
	}
	// go-smtp's client returns an *smtp.SMTPError for every reply; any
	// other error is the connection failing (the only other ones, for CR
	// or LF in an argument, are ruled out below). A reused connection that
	// fails before the server said anything was closed while idle: it is
	// replaced without counting as an attempt.
	if reused && ctx.Err() == nil {
		defer func() {
			if tx.broken && !s.replied {
				tx.stale = true
			}
		}()
	}
	s.replied = false

	if s.dirty {
		if err := s.c.Reset(); err != nil {
			netFail("RSET", err, every)
			return tx
		}
		s.replied = true
		s.dirty = false
	}

	if strings.ContainsAny(msg.From, "\r\n<>") {
		all(func(a string) Result {
			return local(a, Failed, ReasonMessage, "5.1.7", fmt.Sprintf("invalid sender address %q", msg.From))
		})
		return tx
	}

	// What the server must support for this message.
	needUTF8 := msg.SMTPUTF8 || !isASCII(msg.From)
	for _, r := range rcpts {
		needUTF8 = needUTF8 || !isASCII(r.Address)
	}
	if max, ok := s.c.MaxMessageSize(); ok && max > 0 && msg.Size > int64(max) {
		all(func(a string) Result {
			return local(a, Failed, ReasonSize, "5.3.4", fmt.Sprintf("message of %d bytes is larger than %s accepts (SIZE %d)", msg.Size, s.host, max))
		})
		return tx
	}
	if ok, _ := s.c.Extension("SMTPUTF8"); needUTF8 && !ok {
		all(func(a string) Result {
			return local(a, Failed, ReasonUnsupported, "5.6.7", s.host+" does not support SMTPUTF8, which this message's addresses need")
		})
		return tx
	}
	if ok, _ := s.c.Extension("8BITMIME"); msg.EightBit && !ok {
		all(func(a string) Result {
			return local(a, Failed, ReasonUnsupported, "5.6.3", s.host+" does not support 8BITMIME, which this message's 8-bit content needs")
		})
		return tx
	}

	body, err := msg.Open()
	if err != nil {
		all(func(a string) Result {
			return local(a, Deferred, ReasonLocal, "4.3.0", "reading the message: "+err.Error())
		})
		return tx
	}
	defer body.Close()

	dsnOK, _ := s.c.Extension("DSN")
	mopts := &smtp.MailOptions{Size: msg.Size, UTF8: needUTF8}
	if dsnOK {
		if r := strings.ToUpper(msg.Return); r == string(smtp.DSNReturnFull) || r == string(smtp.DSNReturnHeaders) {
			mopts.Return = smtp.DSNReturn(r)
		}
		if msg.EnvelopeID != "" && printableASCII(msg.EnvelopeID) {
			mopts.EnvelopeID = msg.EnvelopeID
		}
	}
	if err := s.c.Mail(msg.From, mopts); err != nil {
		if rep, ok := replyOf(err); ok {
			s.dirty = true
			all(func(a string) Result { return outcome(a, rep, ReasonMessage) })
			return tx
		}
		netFail("MAIL", err, every)
		return tx
	}
	s.replied = true
	s.dirty = true

	var accepted []int
	for i, r := range rcpts {
		if strings.ContainsAny(r.Address, "\r\n<>") {
			tx.results[i] = stamp(local(r.Address, Failed, ReasonRecipient, "5.1.3", fmt.Sprintf("invalid recipient address %q", r.Address)))
			continue
		}
		err := s.c.Rcpt(r.Address, rcptOptions(r, dsnOK))
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		if rep, ok := replyOf(err); ok {
			s.replied = true
			if rep.Code == 452 && len(accepted) > 0 {
				// RFC 5321 §4.5.3.1.10: too many recipients; the rest
				// go in another transaction.
				tx.again[i] = true
				continue
			}
			res := outcome(r.Address, rep, ReasonRecipient)
			if res.Status == Failed && IsUnknownUser(rep) {
				res.Reason, res.SuppressionCandidate = ReasonUnknownUser, true
			}
			tx.results[i] = stamp(res)
			continue
		}
		rest := append(append([]int(nil), accepted...), every[i:]...)
		for _, j := range every[:i] {
			if tx.again[j] {
				rest = append(rest, j)
				tx.again[j] = false
			}
		}
		netFail("RCPT", err, rest)
		return tx
	}
	if len(accepted) == 0 {
		return tx
	}

	failAccepted := func(f func(a string) Result) {
		for _, i := range accepted {
			tx.results[i] = stamp(f(rcpts[i].Address))
		}
	}
	w, err := s.c.Data()
	if err != nil {
		if rep, ok := replyOf(err); ok {
			failAccepted(func(a string) Result { return outcome(a, rep, ReasonMessage) })
			return tx
		}
		netFail("DATA", err, accepted)
		return tx
	}
	src := &readErrReader{r: body}
	if _, err := io.Copy(w, src); err != nil {
		tx.broken = true
		if src.err != nil {
			failAccepted(func(a string) Result {
				return local(a, Deferred, ReasonLocal, "4.3.0", "reading the message: "+src.err.Error())
			})
			return tx
		}
		netFail("message transfer", err, accepted)
		return tx
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		if rep, ok := replyOf(err); ok {
			s.dirty = false
			failAccepted(func(a string) Result { return outcome(a, rep, ReasonMessage) })
			return tx
		}
		// The connection broke after the message was sent: whether the
		// server took it is unknown. Deferring may deliver it twice,
		// which RFC 5321 §6.1 prefers to losing it.
		netFail("end of data", err, accepted)
		return tx
	}
	s.dirty = false
	rep := dataReply(resp.StatusText)
	if !msg.ReceivedAt.IsZero() {
		d.metrics.latency.Observe(d.opts.Now().Sub(msg.ReceivedAt).Seconds())
	}
	d.metrics.transactions.WithLabelValues(tlsLabel(s.tlsVersion)).Inc()
	failAccepted(func(a string) Result { return outcome(a, rep, ReasonNone) })
	return tx
}

// dataReply rebuilds the 250 reply from go-smtp's status text, which
// keeps the enhanced code in the text on success.
func dataReply(text string) Reply {
	rep := Reply{Code: 250, Text: text}
	if code, rest, ok := strings.Cut(text, " "); ok && validEnhanced(code) {
		rep.Enhanced = code
		rep.Text = strings.ReplaceAll(rest, "\n"+code+" ", "\n")
	}
	return rep
}

func validEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			return false
		}
	}
	return true
}

// rcptOptions passes NOTIFY and ORCPT on to a server that supports DSN;
// malformed values are dropped rather than failing the recipient.
func rcptOptions(r Recipient, dsnOK bool) *smtp.RcptOptions {
	if !dsnOK {
		return nil
	}
	o := &smtp.RcptOptions{}
	var notify []smtp.DSNNotify
	never := false
	for _, n := range r.Notify {
		switch v := smtp.DSNNotify(strings.ToUpper(strings.TrimSpace(n))); v {
		case smtp.DSNNotifyNever:
			never = true
		case smtp.DSNNotifySuccess, smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed:
			notify = append(notify, v)
		}
	}
	switch {
	case never && len(notify) == 0:
		o.Notify = []smtp.DSNNotify{smtp.DSNNotifyNever}
	case !never:
		o.Notify = notify
	}
	if typ, addr, ok := strings.Cut(r.OriginalRecipient, ";"); ok && addr != "" {
		switch strings.ToLower(strings.TrimSpace(typ)) {
		case "rfc822":
			if printableASCII(addr) {
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, addr
			}
		case "utf-8":
			o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, addr
		}
	}
	return o
}

// readErrReader remembers a read error, to tell a spool problem from a
// network one during the body transfer.
type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func tlsLabel(v string) string {
	if v == "" {
		return "none"
	}
	return v
}
