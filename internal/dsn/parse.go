package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
)

// Parsed is a delivery status notification taken apart with net/mail,
// mime/multipart and net/textproto. Tests use it to check a report field by
// field; the admin interface can use it to show reports.
type Parsed struct {
	// Header is the report's own header.
	Header mail.Header
	// ReportType is the report-type parameter of the top-level
	// multipart/report.
	ReportType string
	// PartTypes are the media types of the parts, in order.
	PartTypes []string
	// Text is the human-readable part, transfer-decoded.
	Text string
	// PerMessage holds the per-message fields (Reporting-MTA, ...).
	PerMessage textproto.MIMEHeader
	// Recipients holds one field group per recipient, in order.
	Recipients []textproto.MIMEHeader
	// OriginalHeader is the returned header section of the original
	// message, as it appears in the report.
	OriginalHeader string
}

// Parse reads a notification built by Build (or any RFC 3464 report).
func Parse(data []byte) (*Parsed, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("dsn: Content-Type: %w", err)
	}
	if mt != "multipart/report" {
		return nil, fmt.Errorf("dsn: Content-Type is %s, not multipart/report", mt)
	}
	p := &Parsed{Header: msg.Header, ReportType: params["report-type"]}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dsn: %w", err)
		}
		pt, _, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			return nil, fmt.Errorf("dsn: part Content-Type: %w", err)
		}
		p.PartTypes = append(p.PartTypes, pt)
		body, err := io.ReadAll(part) // quoted-printable is decoded by multipart
		if err != nil {
			return nil, fmt.Errorf("dsn: part %s: %w", pt, err)
		}
		switch pt {
		case "text/plain":
			if p.Text == "" {
				p.Text = string(body)
			}
		case "message/delivery-status", "message/global-delivery-status":
			if err := p.parseStatus(body); err != nil {
				return nil, err
			}
		case "text/rfc822-headers", "message/global-headers":
			p.OriginalHeader = string(body)
		}
	}
	if p.PerMessage == nil {
		return nil, errors.New("dsn: no delivery-status part")
	}
	return p, nil
}

// parseStatus splits a delivery-status body into its field groups.
func (p *Parsed) parseStatus(body []byte) error {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
	for {
		h, err := r.ReadMIMEHeader()
		if len(h) > 0 {
			if p.PerMessage == nil {
				p.PerMessage = h
			} else {
				p.Recipients = append(p.Recipients, h)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dsn: delivery-status: %w", err)
		}
	}
}

// Recipient returns the field group whose Final-Recipient is addr.
func (p *Parsed) Recipient(addr string) (textproto.MIMEHeader, bool) {
	for _, h := range p.Recipients {
		_, a, _ := strings.Cut(h.Get("Final-Recipient"), ";")
		if strings.EqualFold(strings.TrimSpace(a), addr) {
			return h, true
		}
	}
	return nil, false
}
