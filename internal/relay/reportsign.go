package relay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// SignReport returns DKIM-Signature fields for a message the relay sends
// itself (a DSN), made with the current keys of its From: domain (or a
// parent domain the relay signs for), or "" when the relay holds no key
// for it. The scheduler puts them before the report when it queues it.
func (s *Server) SignReport(msg []byte) (string, error) {
	h, err := readHeader(bufio.NewReader(bytes.NewReader(msg)))
	if err != nil {
		return "", fmt.Errorf("report header: %w", err)
	}
	froms, err := h.fromAddresses()
	if err != nil || len(froms) == 0 {
		return "", nil
	}
	domain, keys := s.policy.Load().signingKeys(domainOf(froms[0]))
	if len(keys) == 0 {
		return "", nil
	}
	ss, err := newSigners(domain, keys, headerKeys(h, nil))
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(io.MultiWriter(ss.writers()...), bytes.NewReader(msg)); err != nil {
		ss.abort()
		return "", err
	}
	return ss.finish()
}
