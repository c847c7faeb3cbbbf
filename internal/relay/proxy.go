package relay

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyHeaderTimeout bounds the wait for a load balancer's PROXY header.
const proxyHeaderTimeout = 10 * time.Second

// admitProxied reads the PROXY header of a connection from a trusted load
// balancer and admits the connection as coming from the client address the
// header carries. Without a valid header the connection is closed.
func (s *Server) admitProxied(l *listener, raw net.Conn, from netip.Addr) {
	pc := proxyproto.NewConn(raw, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(proxyHeaderTimeout))
	if pc.ProxyHeader() == nil {
		s.m.rejected.WithLabelValues("proxy_header_missing").Inc()
		s.log.Warn("relay: connection from a PROXY protocol source without a valid PROXY header closed", "source", from.String(), "listener", l.name)
		raw.Close()
		return
	}
	// A LOCAL header (a balancer's health check) carries no client: the
	// connection is the balancer's own.
	s.admit(l, pc, addrIP(pc.RemoteAddr()))
}

// untrustedConn is a connection from a source not in
// proxyProtocol.trustedCIDRs. SMTP servers speak first, so it cannot wait
// for a header before the greeting: writes go straight to the socket, and
// reads go through go-proxyproto, which fails the first read (closing the
// session) if the client's first bytes are a PROXY header.
type untrustedConn struct {
	*proxyproto.Conn
	raw  net.Conn
	s    *Server
	ip   netip.Addr
	once sync.Once
}

func (c *untrustedConn) Write(b []byte) (int, error) { return c.raw.Write(b) }
func (c *untrustedConn) RemoteAddr() net.Addr        { return c.raw.RemoteAddr() }
func (c *untrustedConn) LocalAddr() net.Addr         { return c.raw.LocalAddr() }

func (c *untrustedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if errors.Is(err, proxyproto.ErrSuperfluousProxyHeader) {
		c.once.Do(func() {
			c.s.m.rejected.WithLabelValues("proxy_header_untrusted").Inc()
			c.s.log.Warn("relay: PROXY header from a source not in proxyProtocol.trustedCIDRs; connection closed", "client", c.ip.String())
			c.raw.Close()
		})
	}
	return n, err
}
