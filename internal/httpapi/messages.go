package httpapi

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	netmail "net/mail"
	stdtextproto "net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay"
)

// MessageRequest is POST /v1/messages' JSON body.
type MessageRequest struct {
	From        string            `json:"from"`
	To          []string          `json:"to,omitempty"`
	Cc          []string          `json:"cc,omitempty"`
	Bcc         []string          `json:"bcc,omitempty"`
	ReplyTo     []string          `json:"replyTo,omitempty"`
	Subject     string            `json:"subject,omitempty"`
	Text        string            `json:"text,omitempty"`
	HTML        string            `json:"html,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Attachments []Attachment      `json:"attachments,omitempty"`
	Tags        []string          `json:"tags,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// Attachment is a file in a message; with ContentID it is an inline part
// of the HTML (cid: URLs) instead.
type Attachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"contentType,omitempty"`
	Content     string `json:"content"` // base64 (RFC 4648 §4)
	ContentID   string `json:"contentId,omitempty"`
}

// MessageResponse is the 202 answer.
type MessageResponse struct {
	ID        string `json:"id"`
	MessageID string `json:"messageId"`
}

// Limits on what a request may carry beside the message.
const (
	maxTags        = 10
	maxTagLen      = 128
	maxMetadata    = 20
	maxMetadataLen = 1024
	maxIdemKeyLen  = 255
)

// headersReserved are set from the request's own members or by the relay;
// "headers" may not set them.
var headersReserved = map[string]bool{
	"From": true, "To": true, "Cc": true, "Bcc": true, "Reply-To": true, "Subject": true,
	"Mime-Version": true, "Content-Type": true, "Content-Transfer-Encoding": true, "Content-Disposition": true,
	"Content-Id": true, "Received": true, "Dkim-Signature": true, "Return-Path": true,
}

// fieldError is a request member that is not acceptable.
type fieldError struct{ field, why string }

func (e *fieldError) Error() string { return e.field + ": " + e.why }

func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	pr := principalOf(r)
	max := s.opts.Relay.MaxMessageSize()
	key := r.Header.Get("Idempotency-Key")
	if r.Header.Values("Idempotency-Key") != nil {
		if why := checkIdemKey(key); why != "" {
			badRequest(w, "Idempotency-Key", why)
			return
		}
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var limit int64
	switch mt {
	case "application/json":
		// base64 makes attachments a third larger than in the message.
		limit = max/3*4 + 1<<20
	case "message/rfc822":
		limit = max
	default:
		writeProblem(w, problem{Type: "unsupported-media-type", Title: titles["unsupported_media_type"],
			Status: http.StatusUnsupportedMediaType, Field: "Content-Type",
			Detail: "Content-Type must be application/json or message/rfc822"})
		return
	}
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 && n <= limit {
		buf.Grow(int(n) + bytes.MinRead) // one allocation, no regrowth copies
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	body := buf.Bytes()
	if err != nil {
		badRequest(w, "", "reading the request body: "+err.Error())
		return
	}
	tooBig := int64(len(body)) > limit

	var hash string
	if key != "" {
		h := sha256.New()
		for _, p := range []string{r.Method, r.URL.Path, r.URL.RawQuery, mt} {
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
		h.Write(body)
		hash = hex.EncodeToString(h.Sum(nil))
		slot := pr.Key() + "\x00" + key
		if _, busy := s.inflight.LoadOrStore(slot, struct{}{}); busy {
			w.Header().Set("Retry-After", "1")
			writeProblem(w, problem{Type: "idempotency-key-in-use", Title: titles["idempotency_key_in_use"],
				Status: http.StatusConflict, Field: "Idempotency-Key",
				Detail: "another request with this Idempotency-Key is being processed; retry when it has been answered"})
			return
		}
		defer s.inflight.Delete(slot)
		ans, ok, err := s.opts.Queue.APIIdempotency(pr.Key(), key)
		if err != nil {
			s.log.Error("httpapi: reading idempotency key", "err", err)
			writeProblem(w, problem{Type: "queue-error", Title: titles["queue_error"], Status: http.StatusInternalServerError,
				Detail: "Local error in processing; try again later", SMTPCode: 451, EnhancedStatus: "4.3.0"})
			return
		}
		if ok {
			if ans.BodyHash != hash {
				writeProblem(w, problem{Type: "idempotency-key-reused", Title: titles["idempotency_key_reused"],
					Status: http.StatusUnprocessableEntity, Field: "Idempotency-Key",
					Detail: "this Idempotency-Key was used within the last 24 hours for a different request; use a new key"})
				return
			}
			w.Header().Set("Idempotent-Replayed", "true")
			writeJSON(w, http.StatusAccepted, MessageResponse{ID: ans.ID, MessageID: ans.MsgID})
			return
		}
	}

	var (
		msg []byte
		sub relay.APISubmission
	)
	if tooBig {
		// The relay refuses it with SMTP's reply for a message too large.
		msg = body
	} else if mt == "application/json" {
		var req MessageRequest
		if ferr := decodeStrict(body, &req); ferr != nil {
			badRequest(w, ferr.field, ferr.Error())
			return
		}
		msg, sub, err = buildMessage(&req)
	} else {
		msg, sub, err = rawMessage(body, r.URL.Query())
	}
	var ferr *fieldError
	if errors.As(err, &ferr) {
		badRequest(w, ferr.field, ferr.Error())
		return
	} else if err != nil {
		badRequest(w, "", err.Error())
		return
	}
	sub.ClientIP = clientIP(r)
	if key != "" {
		sub.Also = func(id, msgID string) []queue.Record {
			return []queue.Record{queue.APIIdempotencyRecord(pr.Key(), key,
				queue.APIAnswer{BodyHash: hash, ID: id, MsgID: msgID, At: time.Now().UTC()})}
		}
	}
	size := int64(len(msg))
	if tooBig {
		size = max + 1
	}
	acc, ref := s.opts.Relay.Submit(pr, sub, bytes.NewReader(msg), size)
	if ref != nil {
		refusalProblem(w, ref)
		return
	}
	if s.opts.AfterCommit != nil {
		s.opts.AfterCommit(acc.ID)
	}
	writeJSON(w, http.StatusAccepted, MessageResponse{ID: acc.ID, MessageID: acc.MessageID})
}

// checkIdemKey: 1 to 255 printable ASCII characters.
func checkIdemKey(k string) string {
	if k == "" || len(k) > maxIdemKeyLen {
		return fmt.Sprintf("must be 1 to %d characters", maxIdemKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return "must be printable ASCII without spaces"
		}
	}
	return ""
}

// decodeStrict decodes JSON refusing unknown members, duplicate names,
// invalid UTF-8 and trailing data; the error names the member at fault.
// It uses the encoding/json v2 prototype: one pass over the body instead
// of encoding/json's Decoder scanning it twice, a quarter of the time for
// a 5 KB message (the API's intake is held to SMTP's rate).
func decodeStrict(body []byte, v any) *fieldError {
	err := jsonv2.Unmarshal(body, v, jsonv2.RejectUnknownMembers(true))
	if err == nil {
		return nil
	}
	var se *jsonv2.SemanticError
	var sx *jsontext.SyntacticError
	switch {
	case errors.As(err, &sx):
		if errors.Is(sx.Err, io.ErrUnexpectedEOF) {
			return &fieldError{"", "the body is not a complete JSON object"}
		}
		return &fieldError{fieldOf(sx.JSONPointer), fmt.Sprintf("invalid JSON at offset %d: %v", sx.ByteOffset, sx.Err)}
	case errors.As(err, &se):
		field := fieldOf(se.JSONPointer)
		switch {
		case errors.Is(se.Err, jsonv2.ErrUnknownName):
			return &fieldError{field, "unknown member"}
		case se.GoType != nil && se.JSONKind != 0:
			return &fieldError{field, fmt.Sprintf("must be %s, not %s", jsonType(se.GoType.Kind().String()), kindName(se.JSONKind))}
		}
		return &fieldError{field, err.Error()}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &fieldError{"", "the body is not a complete JSON object"}
	default:
		return &fieldError{"", err.Error()}
	}
}

// fieldOf writes a JSON pointer (/attachments/0/content) as the API's
// field names do (attachments[0].content).
func fieldOf(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		if _, err := strconv.Atoi(tok); err == nil && b.Len() > 0 {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

// kindName names a JSON value's kind for an error message.
func kindName(k jsontext.Kind) string {
	switch k {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case '0':
		return "a number"
	default:
		return k.String()
	}
}

func jsonType(kind string) string {
	switch kind {
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	case "string":
		return "a string"
	default:
		return kind
	}
}

// parseAddrs parses RFC 5322 mailboxes ("Name <addr>" or "addr").
func parseAddrs(field string, list []string) ([]*mail.Address, error) {
	out := make([]*mail.Address, 0, len(list))
	for i, s := range list {
		a, err := netmail.ParseAddress(s)
		if err != nil {
			return nil, &fieldError{fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%q is not an address: %v", s, err)}
		}
		out = append(out, &mail.Address{Name: a.Name, Address: a.Address})
	}
	return out, nil
}

// buildMessage turns a JSON request into a MIME message (go-message) and
// its envelope. The layout is the usual one: text and HTML as
// multipart/alternative, the HTML with its inline parts as
// multipart/related, and attachments around them in multipart/mixed.
func buildMessage(req *MessageRequest) ([]byte, relay.APISubmission, error) {
	var sub relay.APISubmission
	if req.From == "" {
		return nil, sub, &fieldError{"from", "required"}
	}
	from, err := parseAddrs("from", []string{req.From})
	if err != nil {
		return nil, sub, &fieldError{"from", err.(*fieldError).why}
	}
	to, err := parseAddrs("to", req.To)
	if err != nil {
		return nil, sub, err
	}
	cc, err := parseAddrs("cc", req.Cc)
	if err != nil {
		return nil, sub, err
	}
	bcc, err := parseAddrs("bcc", req.Bcc)
	if err != nil {
		return nil, sub, err
	}
	replyTo, err := parseAddrs("replyTo", req.ReplyTo)
	if err != nil {
		return nil, sub, err
	}
	if len(to)+len(cc)+len(bcc) == 0 {
		return nil, sub, &fieldError{"to", "at least one recipient is required in to, cc or bcc"}
	}
	if req.Text == "" && req.HTML == "" {
		return nil, sub, &fieldError{"text", "text or html is required"}
	}
	if err := checkTags(req.Tags, req.Metadata); err != nil {
		return nil, sub, err
	}
	var h mail.Header
	h.SetAddressList("From", from)
	if len(to) > 0 {
		h.SetAddressList("To", to)
	}
	if len(cc) > 0 {
		h.SetAddressList("Cc", cc)
	}
	if len(replyTo) > 0 {
		h.SetAddressList("Reply-To", replyTo)
	}
	if req.Subject != "" {
		if strings.ContainsAny(req.Subject, "\r\n") {
			return nil, sub, &fieldError{"subject", "must not contain line breaks"}
		}
		h.SetSubject(req.Subject)
	}
	for name, v := range req.Headers {
		f := "headers." + name
		if name == "" || strings.IndexFunc(name, func(r rune) bool { return r <= ' ' || r > '~' || r == ':' }) >= 0 {
			return nil, sub, &fieldError{f, "not a header field name (RFC 5322 section 2.2)"}
		}
		if headersReserved[stdtextproto.CanonicalMIMEHeaderKey(name)] {
			return nil, sub, &fieldError{f, "set by the request's own members or the relay, not by headers"}
		}
		if strings.ContainsAny(v, "\r\n") {
			return nil, sub, &fieldError{f, "must not contain line breaks"}
		}
		if err := addNamed(&h.Header.Header, name, v); err != nil {
			return nil, sub, err
		}
	}

	var inline, attached []entity
	for i, a := range req.Attachments {
		f := fmt.Sprintf("attachments[%d]", i)
		b, err := base64.StdEncoding.DecodeString(a.Content)
		if err != nil {
			return nil, sub, &fieldError{f + ".content", "not base64: " + err.Error()}
		}
		if a.Filename == "" && a.ContentID == "" {
			return nil, sub, &fieldError{f + ".filename", "required (or contentId for an inline part)"}
		}
		if a.ContentType != "" {
			if _, _, err := mime.ParseMediaType(a.ContentType); err != nil {
				return nil, sub, &fieldError{f + ".contentType", "not a media type: " + err.Error()}
			}
		}
		if strings.ContainsAny(a.Filename+a.ContentID, "\r\n\"<>") {
			return nil, sub, &fieldError{f, "filename and contentId must not contain line breaks, quotes or angle brackets"}
		}
		if a.ContentID != "" {
			if req.HTML == "" {
				return nil, sub, &fieldError{f + ".contentId", "inline parts need html"}
			}
			inline = append(inline, attachmentEntity(a, b, "inline"))
		} else {
			attached = append(attached, attachmentEntity(a, b, "attachment"))
		}
	}

	var buf bytes.Buffer
	buf.Grow(len(req.Text) + len(req.HTML) + len(req.Text)/32 + len(req.HTML)/32 + 2048) // CRLFs, header
	var body entity
	htmlPart := textEntity("text/html", req.HTML)
	if len(inline) > 0 {
		rel := entity{ctype: "multipart/related", params: map[string]string{"type": "text/html"}, parts: []entity{htmlPart}}
		rel.parts = append(rel.parts, inline...)
		htmlPart = rel
	}
	textPart := textEntity("text/plain", req.Text)
	switch {
	case req.Text != "" && req.HTML != "":
		body = entity{ctype: "multipart/alternative", parts: []entity{textPart, htmlPart}}
	case req.HTML != "":
		body = htmlPart
	default:
		body = textPart
	}
	root := body
	if len(attached) > 0 {
		root = entity{ctype: "multipart/mixed", parts: []entity{body}}
		root.parts = append(root.parts, attached...)
	}
	if err := root.write(&buf, h.Header); err != nil {
		return nil, sub, err
	}

	sub.From = from[0].Address
	seen := map[string]bool{}
	for _, l := range [][]*mail.Address{to, cc, bcc} {
		for _, a := range l {
			if k := strings.ToLower(a.Address); !seen[k] {
				seen[k] = true
				sub.To = append(sub.To, a.Address)
			}
		}
	}
	// go-message encodes non-ASCII display names and subjects (RFC 2047);
	// only addresses need SMTPUTF8.
	sub.UTF8 = hasNonASCIIAddress(append(append(append(from, to...), cc...), bcc...))
	sub.Tags, sub.Metadata = req.Tags, req.Metadata
	return buf.Bytes(), sub, nil
}

// entity is one MIME entity to write: a leaf with data, or a multipart.
type entity struct {
	ctype  string
	params map[string]string
	header message.Header // further fields of a leaf
	data   []byte
	parts  []entity
}

// textEntity is a text leaf: as it is ("7bit", lines ending in CRLF)
// when it is ASCII with lines that fit RFC 5322's 998 octets, as most
// transactional text is; quoted-printable otherwise (see fields). Sending
// text as it is spares the encoding on the way in and the decoding at
// the reader, and keeps it readable in the raw message.
func textEntity(ctype, text string) entity {
	e := entity{ctype: ctype, params: map[string]string{"charset": "utf-8"}}
	e.data = []byte(text)
	if sevenBit(text) {
		e.header.Set("Content-Transfer-Encoding", "7bit")
	}
	return e
}

// sevenBit reports whether text can go as it is: ASCII without NUL or a
// bare CR, and no line longer than 998 octets. (go-message's 7bit writer
// turns LF line ends into CRLF.)
func sevenBit(text string) bool {
	for len(text) > 0 {
		line, rest, found := strings.Cut(text, "\n")
		if found {
			line = strings.TrimSuffix(line, "\r")
		}
		if len(line) > 998 {
			return false
		}
		for i := 0; i < len(line); i++ {
			if c := line[i]; c >= 0x80 || c == 0 || c == '\r' {
				return false
			}
		}
		text = rest
	}
	return true
}

func attachmentEntity(a Attachment, b []byte, disposition string) entity {
	ct := a.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	mt, params, _ := mime.ParseMediaType(ct)
	e := entity{ctype: mt, params: params, data: b}
	dp := map[string]string{}
	if a.Filename != "" {
		dp["filename"] = a.Filename
	}
	e.header.SetContentDisposition(disposition, dp)
	if a.ContentID != "" {
		e.header.Set("Content-Id", "<"+a.ContentID+">")
	}
	// Binary content is base64; go-message wraps its lines at 76.
	e.header.Set("Content-Transfer-Encoding", "base64")
	return e
}

// fields is e's header: base's fields, e's own, and its Content-Type; a
// leaf without a transfer encoding gets quoted-printable, which keeps
// every line within RFC 5322's 998 octets.
func (e entity) fields(base message.Header) message.Header {
	h := message.Header{Header: base.Header.Copy()}
	for f := e.header.Fields(); f.Next(); {
		h.Set(f.Key(), f.Value())
	}
	h.SetContentType(e.ctype, e.params)
	if len(e.parts) == 0 && !h.Has("Content-Transfer-Encoding") {
		h.Set("Content-Transfer-Encoding", "quoted-printable")
	}
	return h
}

// write writes e as a message with the header fields of h.
func (e entity) write(w io.Writer, h message.Header) error {
	mw, err := message.CreateWriter(w, e.fields(h))
	if err != nil {
		return err
	}
	return e.fill(mw)
}

// fill writes e's content (data, or its parts) into mw and closes it.
func (e entity) fill(mw *message.Writer) error {
	if len(e.parts) == 0 {
		if _, err := mw.Write(e.data); err != nil {
			return err
		}
		return mw.Close()
	}
	for _, p := range e.parts {
		pw, err := mw.CreatePart(p.fields(message.Header{}))
		if err != nil {
			return err
		}
		if err := p.fill(pw); err != nil {
			return err
		}
	}
	return mw.Close()
}

func checkTags(tags []string, meta map[string]string) error {
	if len(tags) > maxTags {
		return &fieldError{"tags", fmt.Sprintf("at most %d tags", maxTags)}
	}
	for i, t := range tags {
		if t == "" || len(t) > maxTagLen {
			return &fieldError{fmt.Sprintf("tags[%d]", i), fmt.Sprintf("must be 1 to %d characters", maxTagLen)}
		}
	}
	if len(meta) > maxMetadata {
		return &fieldError{"metadata", fmt.Sprintf("at most %d keys", maxMetadata)}
	}
	for k, v := range meta {
		if k == "" || len(k)+len(v) > maxMetadataLen {
			return &fieldError{"metadata." + k, fmt.Sprintf("key must be non-empty and key plus value at most %d characters", maxMetadataLen)}
		}
	}
	return nil
}

// rawMessage takes a raw RFC 5322 message: line endings become CRLF, a
// Bcc: field is removed (RFC 5322 §3.6.3), and the envelope is the query's
// from and to (repeated), else the Sender: or From: and the To:, Cc: and Bcc:
// addresses.
func rawMessage(body []byte, q map[string][]string) ([]byte, relay.APISubmission, error) {
	var sub relay.APISubmission
	body = bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
	body = bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n"))
	br := bufio.NewReader(bytes.NewReader(body))
	th, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, sub, &fieldError{"body", "not an RFC 5322 message: " + err.Error()}
	}
	h := mail.Header{Header: message.Header{Header: th}}
	addrs := func(keys ...string) ([]string, error) {
		var out []string
		for _, k := range keys {
			l, err := h.AddressList(k)
			if err != nil {
				return nil, &fieldError{"body", fmt.Sprintf("%s: field is not an address list: %v", k, err)}
			}
			for _, a := range l {
				out = append(out, a.Address)
			}
		}
		return out, nil
	}
	if f := q["from"]; len(f) > 0 {
		sub.From = f[0]
	} else {
		l, err := addrs("Sender")
		if err != nil {
			return nil, sub, err
		}
		if len(l) == 0 {
			if l, err = addrs("From"); err != nil {
				return nil, sub, err
			}
		}
		if len(l) == 0 {
			return nil, sub, &fieldError{"from", "no ?from= and the message has no From: address"}
		}
		sub.From = l[0]
	}
	if t := q["to"]; len(t) > 0 {
		sub.To = t
	} else {
		if sub.To, err = addrs("To", "Cc", "Bcc"); err != nil {
			return nil, sub, err
		}
		if len(sub.To) == 0 {
			return nil, sub, &fieldError{"to", "no ?to= and the message has no To:, Cc: or Bcc: address"}
		}
	}
	h.Del("Bcc")
	var out bytes.Buffer
	if err := textproto.WriteHeader(&out, h.Header.Header); err != nil {
		return nil, sub, err
	}
	// Only the header and the envelope need SMTPUTF8; an 8-bit body is
	// 8BITMIME's business.
	sub.UTF8 = !isASCII(out.Bytes()) || !isASCII([]byte(sub.From+strings.Join(sub.To, "")))
	if _, err := io.Copy(&out, br); err != nil {
		return nil, sub, err
	}
	return out.Bytes(), sub, nil
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func hasNonASCIIAddress(l []*mail.Address) bool {
	for _, a := range l {
		if !isASCII([]byte(a.Address)) {
			return true
		}
	}
	return false
}

// addNamed adds the field name: v keeping name as the caller wrote it
// (go-message's Add writes the canonical form, X-Test-Id for X-Test-ID),
// folded by go-message as any other field.
func addNamed(h *textproto.Header, name, v string) error {
	var one textproto.Header
	one.Set(name, v)
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, one); err != nil {
		return err
	}
	raw := bytes.TrimSuffix(b.Bytes(), []byte("\r\n")) // the blank line ending the section
	copy(raw, name)                                    // same length: only the case differs
	h.AddRaw(raw)
	return nil
}
