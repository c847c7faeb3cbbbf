// Package dsn builds delivery status notifications: the bounce and
// "delayed" messages the relay sends back to a message's envelope sender
// (RFC 3464, RFC 6522, and RFC 6533 for internationalized addresses).
//
// Build is pure: given what the relay knows about the original message
// and each recipient's outcome, it returns a complete RFC 5322 message to
// be queued like any other and sent with a null reverse-path (MAIL FROM:<>).
// Wanted says whether a notification may be sent at all: never for a
// message whose sender is the null sender (RFC 5321 §4.5.5, which is what
// stops bounce loops), and only for the outcomes the recipient's NOTIFY
// parameter asked for (RFC 3461 §4.1).
//
// A report is multipart/report; report-type=delivery-status (or
// global-delivery-status, see below) with three
// parts: a human-readable explanation, the machine-readable
// message/delivery-status (Reporting-MTA, Arrival-Date, and per recipient
// Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code with the
// remote server's full reply, Last-Attempt-Date, Will-Retry-Until), and the
// original message's header section as text/rfc822-headers. When an
// address, the reply or the original header holds UTF-8, the RFC 6533
// types message/global-delivery-status and message/global-headers are used
// instead and the message needs 8BITMIME (and SMTPUTF8 when the sender's
// address is not ASCII).
//
// Only the header of the original message is returned, whatever RET=FULL
// asked for: RFC 3461 §4.3 allows it, and it keeps bounces of large
// messages small.
package dsn

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"time"
	"unicode/utf8"

	"mailroom.io/mailroom/internal/bounce"
)

// Action is a recipient's outcome (RFC 3464 §2.3.3).
type Action string

// The actions of RFC 3464.
const (
	Failed    Action = "failed"
	Delayed   Action = "delayed"
	Delivered Action = "delivered"
	Relayed   Action = "relayed"
	Expanded  Action = "expanded"
)

// Recipient is one recipient's entry in a report.
type Recipient struct {
	// FinalRecipient is the envelope recipient the relay tried to deliver
	// to.
	FinalRecipient string
	// OriginalRecipient is the ORCPT parameter as given by the client,
	// "type;address" (e.g. "rfc822;user@example.com"); empty when absent.
	OriginalRecipient string
	Action            Action
	// Status is the RFC 3463 enhanced status code, e.g. "5.1.1".
	Status string
	// RemoteMTA is the host name (or IP literal) of the server that gave
	// the reply; empty when no server was reached.
	RemoteMTA string
	// SMTPReply is the remote server's complete reply, one line per reply
	// line (separated by "\n"), each line as sent including the code, e.g.
	// "550-5.1.1 No such user\n550 5.1.1 Try again later". Empty when
	// there was no SMTP reply.
	SMTPReply string
	// Detail explains a failure that had no SMTP reply (DNS, connection,
	// TLS policy), e.g. "connect to 192.0.2.1:25: connection refused".
	Detail string
	// LastAttemptDate is when the last delivery attempt was made.
	LastAttemptDate time.Time
	// WillRetryUntil is when the relay gives up; for Delayed reports.
	WillRetryUntil time.Time
	// Class is the failure's bounce class; a failed recipient's entry in
	// the human-readable part says its sentence. Zero: not said.
	Class bounce.Class
}

// Report is everything a notification says.
type Report struct {
	// ReportingMTA is the relay's host name.
	ReportingMTA string
	// Sender is the original message's envelope sender: the report's
	// recipient. It must not be empty (see Wanted).
	Sender string
	// EnvelopeID is the original ENVID parameter, if any.
	EnvelopeID string
	// ArrivalDate is when the relay accepted the original message.
	ArrivalDate time.Time
	// Date is when the report is made; zero means now.
	Date time.Time
	// MessageID is the report's Message-ID without angle brackets; empty:
	// generated.
	MessageID string
	// Recipients are the recipients reported on; at least one.
	Recipients []Recipient
	// OriginalHeader is the original message's header section (up to,
	// not including, the empty line).
	OriginalHeader []byte
}

// Message is a built report, ready to be queued.
type Message struct {
	// From is the envelope sender: always "", the null reverse-path.
	From string
	// To is the envelope recipient: the original sender.
	To []string
	// Data is the complete message with CRLF line endings.
	Data []byte
	// EightBit is set when Data is not 7-bit clean (BODY=8BITMIME).
	EightBit bool
	// SMTPUTF8 is set when the envelope needs SMTPUTF8.
	SMTPUTF8 bool
}

// Wanted reports whether a notification with the given action may be sent
// for a recipient of a message from sender with the given NOTIFY values
// (as in RCPT TO, case-insensitive; empty when the client gave none).
// Messages from the null sender never cause a notification.
func Wanted(sender string, notify []string, action Action) bool {
	if sender == "" {
		return false
	}
	if len(notify) == 0 {
		// RFC 3461 §4.1: without NOTIFY, failures are reported and delays
		// may be.
		return action == Failed || action == Delayed
	}
	want := map[Action]string{Failed: "FAILURE", Delayed: "DELAY", Delivered: "SUCCESS", Relayed: "SUCCESS", Expanded: "SUCCESS"}[action]
	for _, n := range notify {
		switch strings.ToUpper(strings.TrimSpace(n)) {
		case "NEVER":
			return false
		case want:
			return true
		}
	}
	return false
}

// ErrNullSender is returned by Build for a report to the null sender.
var ErrNullSender = errors.New("dsn: no notification is ever sent to the null sender")

// Build returns the report as a message to queue.
func Build(r Report) (*Message, error) {
	if r.Sender == "" {
		return nil, ErrNullSender
	}
	if r.ReportingMTA == "" {
		return nil, errors.New("dsn: ReportingMTA is required")
	}
	if len(r.Recipients) == 0 {
		return nil, errors.New("dsn: no recipients to report on")
	}
	for _, rc := range r.Recipients {
		if rc.FinalRecipient == "" || rc.Action == "" || !validStatus(rc.Status) {
			return nil, fmt.Errorf("dsn: recipient %q: FinalRecipient, Action and a status code x.y.z are required", rc.FinalRecipient)
		}
	}
	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	msgID := r.MessageID
	if msgID == "" {
		msgID = newID() + "@" + r.ReportingMTA
	}

	status := deliveryStatus(r)
	header := bytes.TrimRight(r.OriginalHeader, "\r\n")
	header = normalizeCRLF(header)
	global := !isASCII(status) || !isASCII(string(header))

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)

	text := humanReadable(r)
	textType, textEnc, textBody := "text/plain; charset=us-ascii", "7bit", []byte(text)
	if !isASCII(text) {
		var qpBody bytes.Buffer
		qp := quotedprintable.NewWriter(&qpBody)
		if _, err := qp.Write(textBody); err != nil {
			return nil, err
		}
		if err := qp.Close(); err != nil {
			return nil, err
		}
		textType, textEnc, textBody = "text/plain; charset=utf-8", "quoted-printable", qpBody.Bytes()
	}
	if err := writePart(mw, "Notification", textType, textEnc, textBody); err != nil {
		return nil, err
	}

	// RFC 6533: reports about SMTPUTF8 mail use the "global" types, 8-bit.
	// The top-level report-type names the type of the status part (RFC
	// 6522 §3), so it follows it.
	reportType, statusType, headerType, cte := "delivery-status", "message/delivery-status", "text/rfc822-headers", "7bit"
	if global {
		reportType, statusType, headerType, cte = "global-delivery-status", "message/global-delivery-status", "message/global-headers", "8bit"
	}
	if err := writePart(mw, "Delivery report", statusType, cte, []byte(status)); err != nil {
		return nil, err
	}
	if len(header) > 0 {
		if err := writePart(mw, "Original message header", headerType, cte, append(header, "\r\n"...)); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}

	var out bytes.Buffer
	h := func(name, value string) { fmt.Fprintf(&out, "%s: %s\r\n", name, value) }
	h("From", "Mail Delivery System <MAILER-DAEMON@"+r.ReportingMTA+">")
	h("To", "<"+r.Sender+">")
	h("Subject", subject(r))
	h("Date", date.Format(time.RFC1123Z))
	h("Message-ID", "<"+msgID+">")
	// RFC 3834 §5: notifications are automatic replies; this keeps
	// vacation responders and list managers from answering them.
	h("Auto-Submitted", "auto-replied")
	h("MIME-Version", "1.0")
	h("Content-Type", mime.FormatMediaType("multipart/report", map[string]string{
		"report-type": reportType,
		"boundary":    mw.Boundary(),
	}))
	out.WriteString("\r\n")
	out.Write(body.Bytes())

	data := out.Bytes()
	return &Message{
		From:     "",
		To:       []string{r.Sender},
		Data:     data,
		EightBit: !isASCII(string(data)),
		SMTPUTF8: !isASCII(r.Sender),
	}, nil
}

// writePart adds one MIME part holding body as it is.
func writePart(mw *multipart.Writer, description, contentType, encoding string, body []byte) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", contentType)
	h.Set("Content-Transfer-Encoding", encoding)
	h.Set("Content-Description", description)
	w, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	_, err = w.Write(body)
	return err
}

func subject(r Report) string {
	has := map[Action]bool{}
	for _, rc := range r.Recipients {
		has[rc.Action] = true
	}
	switch {
	case has[Failed]:
		return "Undelivered Mail Returned to Sender"
	case has[Delayed]:
		return "Delayed Mail (still being retried)"
	case has[Delivered]:
		return "Successful Mail Delivery Report"
	default:
		return "Mail Delivery Status Report"
	}
}

// deliveryStatus renders the message/delivery-status body (RFC 3464 §2.1):
// the per-message fields, then one blank-line separated group per
// recipient.
func deliveryStatus(r Report) string {
	var b strings.Builder
	field := func(name, value string) {
		b.WriteString(name + ": " + fold(value) + "\r\n")
	}
	field("Reporting-MTA", "dns; "+r.ReportingMTA)
	if r.EnvelopeID != "" {
		field("Original-Envelope-Id", clean(r.EnvelopeID))
	}
	if !r.ArrivalDate.IsZero() {
		field("Arrival-Date", r.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, rc := range r.Recipients {
		b.WriteString("\r\n")
		if rc.OriginalRecipient != "" {
			field("Original-Recipient", typedAddress(rc.OriginalRecipient))
		}
		field("Final-Recipient", addressType(rc.FinalRecipient)+"; "+clean(rc.FinalRecipient))
		field("Action", string(rc.Action))
		field("Status", rc.Status)
		if rc.RemoteMTA != "" {
			field("Remote-MTA", "dns; "+clean(rc.RemoteMTA))
		}
		switch {
		case rc.SMTPReply != "":
			field("Diagnostic-Code", "smtp; "+replyLines(rc.SMTPReply))
		case rc.Detail != "":
			field("Diagnostic-Code", "X-Mailroom; "+clean(rc.Detail))
		}
		if !rc.LastAttemptDate.IsZero() {
			field("Last-Attempt-Date", rc.LastAttemptDate.Format(time.RFC1123Z))
		}
		if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			field("Will-Retry-Until", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	return b.String()
}

// replyLines joins a multi-line reply so that each reply line starts a
// folded continuation line of the field: nothing of the reply is lost and
// a parser unfolds it to the lines separated by spaces.
func replyLines(reply string) string {
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(reply, "\r\n", "\n"), "\n") {
		if l = clean(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// fold turns "\n" into header folding and splits lines that would exceed
// the 998-octet line limit of RFC 5322 §2.1.1.
func fold(v string) string {
	const limit = 900
	var out []string
	for _, l := range strings.Split(v, "\n") {
		for len(l) > limit {
			cut := strings.LastIndexByte(l[:limit], ' ')
			if cut <= 0 {
				cut = runeCut(l, limit)
			}
			out = append(out, l[:cut])
			l = strings.TrimLeft(l[cut:], " ")
		}
		out = append(out, l)
	}
	return strings.Join(out, "\r\n ")
}

// clean removes control characters, which must not appear in a field.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' && r != '\t' || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, s)
}

// addressType is "rfc822" for ASCII addresses and "utf-8" for
// internationalized ones (RFC 6533 §3).
func addressType(addr string) string {
	if isASCII(addr) {
		return "rfc822"
	}
	return "utf-8"
}

// typedAddress renders an ORCPT value "type;address" as a field value.
func typedAddress(v string) string {
	typ, addr, ok := strings.Cut(v, ";")
	if !ok {
		return addressType(v) + "; " + clean(v)
	}
	return strings.TrimSpace(typ) + "; " + clean(strings.TrimSpace(addr))
}

func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

func humanReadable(r Report) string {
	var b strings.Builder
	line := func(format string, args ...any) {
		b.WriteString(fmt.Sprintf(format, args...) + "\r\n")
	}
	line("This is the mail system at %s.", r.ReportingMTA)
	line("")
	var failed, delayed, other []Recipient
	for _, rc := range r.Recipients {
		switch rc.Action {
		case Failed:
			failed = append(failed, rc)
		case Delayed:
			delayed = append(delayed, rc)
		default:
			other = append(other, rc)
		}
	}
	arrived := ""
	if !r.ArrivalDate.IsZero() {
		arrived = " (received " + r.ArrivalDate.Format(time.RFC1123Z) + ")"
	}
	if len(failed) > 0 {
		line("Your message%s could not be delivered to the recipients", arrived)
		line("below. Delivery was stopped for good; sending the message again")
		line("will not help unless the problem described is fixed first.")
		line("")
		describe(line, failed)
	}
	if len(delayed) > 0 {
		line("Your message%s has not been delivered yet to the", arrived)
		line("recipients below. This is only a warning: the mail system keeps")
		line("trying, and you do not need to send the message again.")
		line("")
		describe(line, delayed)
	}
	if len(other) > 0 {
		line("Delivery report for your message%s:", arrived)
		line("")
		describe(line, other)
	}
	return b.String()
}

func describe(line func(string, ...any), rcs []Recipient) {
	for _, rc := range rcs {
		line("<%s>: %s (%s)", clean(rc.FinalRecipient), rc.Action, rc.Status)
		if s := rc.Class.Sentence(); s != "" && rc.Action == Failed {
			for _, w := range wrap(s, 72) {
				line("    %s", w)
			}
		}
		switch {
		case rc.SMTPReply != "" && rc.RemoteMTA != "":
			line("    %s said:", clean(rc.RemoteMTA))
		case rc.SMTPReply != "":
			line("    The remote server said:")
		}
		if rc.SMTPReply != "" {
			for _, l := range strings.Split(replyLines(rc.SMTPReply), "\n") {
				for _, w := range wrap(l, 72) {
					line("    %s", w)
				}
			}
		}
		if rc.Detail != "" {
			for _, w := range wrap(clean(rc.Detail), 72) {
				line("    %s", w)
			}
		}
		if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			line("    Delivery will be retried until %s.", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
		line("")
	}
}

// wrap breaks s at spaces into lines of at most width bytes where it can;
// a word longer than width is cut.
func wrap(s string, width int) []string {
	var out []string
	for len(s) > width {
		cut := strings.LastIndexByte(s[:width+1], ' ')
		if cut <= 0 {
			cut = runeCut(s, width)
		}
		out = append(out, strings.TrimRight(s[:cut], " "))
		s = strings.TrimLeft(s[cut:], " ")
	}
	return append(out, s)
}

// runeCut returns n, moved back to the start of a UTF-8 sequence.
func runeCut(s string, n int) int {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

func normalizeCRLF(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// OriginalHeader reads the header section of a message (up to, not
// including, the empty line) for returning in a report, keeping at most
// max bytes: a header longer than that is cut after the last whole field
// line that fits. A message without a body returns all of it.
func OriginalHeader(r io.Reader, max int) ([]byte, error) {
	br := bufio.NewReader(r)
	var out []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer is no header line we can
			// return whole; stop here.
			return out, nil
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 && (err == nil || len(line) > 0) {
			return out, nil
		}
		if len(out)+len(line) > max {
			return out, nil
		}
		out = append(out, line...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}
