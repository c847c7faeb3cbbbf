package relay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/mail"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Replies used while reading DATA.
var (
	errBareLineEnding = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "Message refused: bare CR or LF in message data (RFC 5321 section 2.3.8); send CRLF line endings"}
	errHeaderTooLarge = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: "Message header section too large"}
	// RFC 5321 §4.5.3.1: a limit exceeded is a permanent error, never a
	// retry.
	errLineTooLong = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: fmt.Sprintf("Message refused: a line is longer than %d octets (RFC 5322 section 2.1.1); wrap it, or use quoted-printable or base64", maxLineOctets)}
)

// maxLineOctets is the longest line accepted in message data, without its
// CRLF: RFC 5322's limit. Longer lines are broken by hops on the way, and
// with them the DKIM signature.
const maxLineOctets = 998

// maxHeaderBytes bounds the header section kept in memory for policy checks
// and signing; the body is streamed.
const maxHeaderBytes = 1 << 20

// dataGuard sits between the DATA (or BDAT) content and the relay. It refuses
// bare CR and LF (SMTP smuggling, RFC 5321 §2.3.8) and lines longer than
// maxLineOctets, enforces the size limit, and extends the read deadline for every block, which is RFC 5321's
// "DATA block" timeout rather than one deadline for the whole message.
type dataGuard struct {
	r       io.Reader
	conn    net.Conn
	timeout time.Duration
	max     int64
	n       int64
	prevCR  bool
	lineLen int
	err     error
}

func (g *dataGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.timeout > 0 && g.conn != nil {
		_ = g.conn.SetReadDeadline(time.Now().Add(g.timeout))
	}
	n, err := g.r.Read(p)
	if g.err = g.check(p[:n]); g.err != nil {
		return 0, g.err
	}
	g.n += int64(n)
	if g.n > g.max {
		g.err = smtp.ErrDataTooLarge
		return 0, g.err
	}
	if err == io.EOF && g.prevCR {
		g.err = errBareLineEnding
		return 0, g.err
	}
	return n, err
}

// check carries the line state over b: every LF must follow a CR and
// every CR precede an LF, and no line may be longer than maxLineOctets.
// It finds line ends with bytes.Cut rather than looking at each byte,
// since it runs over every byte of every message; a line that breaks a
// rule is walked byte by byte (checkBytes) for the error met first.
func (g *dataGuard) check(b []byte) error {
	for len(b) > 0 {
		line, rest, lf := bytes.Cut(b, []byte{'\n'})
		cr := len(line) > 0 && line[len(line)-1] == '\r'
		text := line
		if cr {
			text = line[:len(line)-1]
		}
		if g.prevCR && len(line) > 0 || bytes.IndexByte(text, '\r') >= 0 ||
			g.lineLen+len(text) > maxLineOctets || lf && !cr && !g.prevCR {
			return g.checkBytes(b)
		}
		if !lf {
			g.lineLen += len(text)
			g.prevCR = cr
			return nil
		}
		g.prevCR, g.lineLen = false, 0
		b = rest
	}
	return nil
}

// checkBytes is check one byte at a time.
func (g *dataGuard) checkBytes(b []byte) error {
	for _, c := range b {
		if (g.prevCR && c != '\n') || (c == '\n' && !g.prevCR) {
			return errBareLineEnding
		}
		g.prevCR = c == '\r'
		switch c {
		case '\n':
			g.lineLen = 0
		case '\r':
		default:
			if g.lineLen++; g.lineLen > maxLineOctets {
				return errLineTooLong
			}
		}
	}
	return nil
}

// header is the message's header section as received.
type header struct {
	raw    []byte // every field, CRLF-terminated, without the blank line
	fields textproto.MIMEHeader
}

var errMalformedHeader = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
	Message: "Message refused: malformed header section (RFC 5322)"}

// readHeader reads the header section up to and including the blank line.
// A message without one is all header; the relay then adds the blank line.
func readHeader(br *bufio.Reader) (*header, error) {
	var raw bytes.Buffer
	h := &header{}
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if raw.Len()+len(line) > maxHeaderBytes {
				return nil, errHeaderTooLarge
			}
			raw.Write(line)
			continue
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if string(line) == "\r\n" {
			break
		}
		if raw.Len()+len(line) > maxHeaderBytes {
			return nil, errHeaderTooLarge
		}
		raw.Write(line)
		if err == io.EOF {
			break
		}
	}
	h.raw = raw.Bytes()
	if len(h.raw) == 0 {
		h.fields = textproto.MIMEHeader{}
		return h, nil
	}
	// textproto wants the terminating blank line.
	tr := textproto.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(h.raw), strings.NewReader("\r\n"))))
	fields, err := tr.ReadMIMEHeader()
	if err != nil {
		return nil, errMalformedHeader
	}
	h.fields = fields
	return h, nil
}

// addressParser only needs addr-specs, so display names in any charset are
// passed through undecoded rather than rejected.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
}}

// fromAddresses returns the addresses of the single From: field.
func (h *header) fromAddresses() ([]string, error) {
	vals := h.fields.Values("From")
	if len(vals) != 1 {
		return nil, fmt.Errorf("message must have exactly one From: field, has %d", len(vals))
	}
	list, err := addressParser.ParseList(vals[0])
	if err != nil || len(list) == 0 {
		return nil, errors.New("From: field is not a valid address list")
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out, nil
}

// senderAddress returns the address of the Sender: field, "" when there is
// none. RFC 5322 §3.6.2 allows at most one, holding one mailbox.
func (h *header) senderAddress() (string, error) {
	vals := h.fields.Values("Sender")
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", fmt.Errorf("message must have at most one Sender: field, has %d", len(vals))
	}
	a, err := addressParser.Parse(vals[0])
	if err != nil {
		return "", errors.New("Sender: field is not a single valid address")
	}
	return a.Address, nil
}

func (h *header) has(name string) bool { return len(h.fields.Values(name)) > 0 }

// domainOf returns the domain part of an address.
func domainOf(addr string) string {
	return addr[strings.LastIndexByte(addr, '@')+1:]
}

// receivedField builds the Received: trace field (RFC 5321 §4.4) with the
// protocol keywords of RFC 3848, and of RFC 6531 §3.7.3 (UTF8SMTP…) for
// SMTPUTF8 transactions.
func receivedField(helo string, ip string, hostname string, tls, auth, smtputf8 bool, queueID string, now time.Time) string {
	proto := "ESMTP"
	if smtputf8 {
		proto = "UTF8SMTP"
	}
	if tls {
		proto += "S"
	}
	if auth {
		proto += "A"
	}
	return fmt.Sprintf("Received: from %s ([%s])\r\n\tby %s (mailroom) with %s id %s;\r\n\t%s\r\n",
		sanitizeHelo(helo), ip, hostname, proto, queueID, now.Format(time.RFC1123Z))
}

// sanitizeHelo keeps a client-chosen name from breaking the header.
func sanitizeHelo(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 0x7f || r == '(' || r == ')' || r == ';' {
			return -1
		}
		return r
	}, s)
	if len(s) > 255 {
		s = s[:255]
	}
	if s == "" {
		s = "unknown"
	}
	return s
}

// eightBitDetector notes whether any byte written has the high bit set.
type eightBitDetector struct{ seen bool }

func (d *eightBitDetector) Write(p []byte) (int, error) {
	if d.seen {
		return len(p), nil
	}
	b := p
	// Eight bytes at a time: this sees every byte of every message.
	for ; len(b) >= 8; b = b[8:] {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			d.seen = true
			return len(p), nil
		}
	}
	for _, c := range b {
		if c >= 0x80 {
			d.seen = true
			break
		}
	}
	return len(p), nil
}
