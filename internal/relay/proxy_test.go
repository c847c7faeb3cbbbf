package relay_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/pires/go-proxyproto"
)

// dialProxied connects from localIP and sends a PROXY v2 header claiming
// the connection comes from client.
func dialProxied(t *testing.T, localIP, addr, client string) net.Conn {
	return dialProxiedVersion(t, 2, localIP, addr, client)
}

func dialProxiedVersion(t *testing.T, version byte, localIP, addr, client string) net.Conn {
	t.Helper()
	c, err := netDialer(localIP).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	src, _ := net.ResolveTCPAddr("tcp", client)
	h := proxyproto.HeaderProxyFromAddrs(version, src, c.RemoteAddr())
	if _, err := h.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestProxyProtocolFromTrustedSourcesOnly: a balancer on 127.0.0.1 sends
// PROXY v2 headers and the relay uses the client address in them (trusted
// network, per-IP limit, Received:, logs); a header from another source (127.0.0.3) closes
// the connection; 127.0.0.1 without a header is refused.
func TestProxyProtocolFromTrustedSourcesOnly(t *testing.T) {
	e := startRelay(t, envOptions{limits: "{maxConnectionsPerIP: 1}", extra: `proxyProtocol: {trustedCIDRs: [127.0.0.1/32]}
trustedNetworks: [{name: legacy, cidrs: [10.42.7.0/24], allowedSenders: [example.com]}]
`})
	addr := e.submissionAddr()

	// Through the balancer from a trusted network's address: no AUTH needed.
	c := smtpClient(t, dialProxied(t, "127.0.0.1", addr, "10.42.7.9:40001"))
	id, err := send(c, "billing@example.com", []string{"customer@example.net"}, simpleMessage("billing@example.com", "via proxy"))
	if err != nil {
		t.Fatalf("submission from the PROXY header's trusted network: %v", err)
	}
	m, body := e.queued(id)
	if m.Origin != "network:legacy" || !strings.Contains(body, "10.42.7.9") || strings.Contains(body, "[127.0.0.1]") {
		t.Fatalf("origin %q; Received: should name the real client:\n%s", m.Origin, body[:min(len(body), 400)])
	}
	if !strings.Contains(e.logs.String(), "client=10.42.7.9") {
		t.Fatal("logs do not name the real client")
	}

	// maxConnectionsPerIP counts the real client: a second connection of
	// 10.42.7.9 is refused while another client gets in.
	if line := readLine(t, dialProxied(t, "127.0.0.1", addr, "10.42.7.9:40002")); !strings.HasPrefix(line, "421 4.7.0") {
		t.Fatalf("second connection of one client: %q", line)
	}
	if line := readLine(t, dialProxied(t, "127.0.0.1", addr, "10.42.7.10:40003")); !strings.HasPrefix(line, "220 ") {
		t.Fatalf("another client behind the same balancer: %q", line)
	}
	c.Quit()

	// PROXY v1 (text) works the same.
	c1 := smtpClient(t, dialProxiedVersion(t, 1, "127.0.0.1", addr, "10.42.7.12:40006"))
	id1, err := send(c1, "billing@example.com", []string{"customer@example.net"}, simpleMessage("billing@example.com", "via proxy v1"))
	if err != nil {
		t.Fatalf("PROXY v1: %v", err)
	}
	if _, body := e.queued(id1); !strings.Contains(body, "10.42.7.12") {
		t.Fatalf("PROXY v1: Received: lacks the client:\n%s", body[:min(len(body), 400)])
	}
	c1.Quit()

	// The balancer must send a header.
	raw, err := netDialer("127.0.0.1").Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	io.WriteString(raw, "EHLO sneaky.example\r\n")
	raw.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(raw); err != nil || len(b) != 0 {
		t.Fatalf("a trusted source without a header got %q, %v; want the connection closed", b, err)
	}

	// Anyone else: no header needed, and a header closes the connection.
	plain := smtp.NewClient(mustDial(t, "127.0.0.2", addr))
	wantCode(t, plain.Mail("billing@example.com", nil), 530, "5.7.0")
	plain.Close()
	spoof := dialProxied(t, "127.0.0.3", addr, "10.42.7.9:40004")
	br := bufio.NewReader(spoof)
	spoof.SetReadDeadline(time.Now().Add(30 * time.Second))
	greet, _ := br.ReadString('\n')
	rest, err := io.ReadAll(br)
	if !strings.HasPrefix(greet, "220 ") || err != nil || len(rest) != 0 {
		t.Fatalf("PROXY header from an untrusted source: greeting %q then %q, %v; want the connection closed", greet, rest, err)
	}
	waitUntil(t, "the refusal to be counted", func() bool {
		return e.metric(t, `mailroom_relay_rejected_total{reason="proxy_header_untrusted"}`) == 1
	})
	if got := e.metric(t, `mailroom_relay_rejected_total{reason="proxy_header_missing"}`); got != 1 {
		t.Fatalf("proxy_header_missing = %v", got)
	}

	// Implicit TLS: the header comes before the TLS handshake.
	tc := tls.Client(dialProxied(t, "127.0.0.1", e.submissionsAddr(), "10.42.7.11:40005"), e.tlsConfig())
	if line := readLine(t, tc); !strings.HasPrefix(line, "220 ") {
		t.Fatalf("implicit TLS behind the balancer: %q", line)
	}
}

func smtpClient(t *testing.T, c net.Conn) *smtp.Client {
	t.Helper()
	return smtp.NewClient(c)
}

func mustDial(t *testing.T, localIP, addr string) net.Conn {
	t.Helper()
	c, err := netDialer(localIP).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading a reply: %v", err)
	}
	return line
}
