package events

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// ErrForbiddenAddress: a webhook host resolved to an address the relay
// never posts to unless events.allowedTargets lists it as a CIDR.
var ErrForbiddenAddress = errors.New("webhook address is not allowed")

// newClient is the webhook HTTP client: no proxy from the environment,
// no redirects followed, and a dialer that checks every resolved address
// just before connecting, so DNS cannot point a webhook at the node's
// link-local or metadata addresses.
func newClient(opts Options, s func() *settings) *http.Client {
	dialer := &net.Dialer{Timeout: opts.Timeout, Resolver: opts.Resolver,
		Control: func(_, address string, _ syscall.RawConn) error {
			return checkAddr(address, s())
		}}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          opts.Concurrency,
		MaxIdleConnsPerHost:   opts.PerTarget,
		MaxConnsPerHost:       opts.PerTarget,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   opts.Timeout,
		ResponseHeaderTimeout: opts.Timeout,
	}
	return &http.Client{Transport: tr, Timeout: opts.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// checkAddr refuses link-local addresses (169.254.0.0/16, where cloud
// metadata services answer, and fe80::/10) and unspecified, multicast
// or broadcast ones, unless a CIDR of allowedTargets contains them.
func checkAddr(address string, s *settings) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
	}
	ip := ap.Addr().Unmap()
	bad := ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() ||
		ip == netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if bad && !s.targets.ListsAddr(ip) {
		return fmt.Errorf("%w: %s (link-local, metadata or non-unicast; list it in events.allowedTargets as a CIDR to allow it)", ErrForbiddenAddress, ip)
	}
	return nil
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
