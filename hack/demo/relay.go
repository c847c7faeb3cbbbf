package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/internal/relayconfig"
)

// relayIP picks the local relay's own loopback address: its pod object
// reports it as the pod IP, where the manager reads the relay's /status on
// the relay's HTTP port (8080), as it does in a cluster. The first of
// 127.0.0.2-127.0.0.254 whose port 8080 is free.
func relayIP() (string, error) {
	for i := 2; i < 255; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(relayconfig.HTTPPort)))
		if err != nil {
			continue
		}
		l.Close()
		return ip, nil
	}
	return "", fmt.Errorf("no loopback address with port %d free", relayconfig.HTTPPort)
}

// smtpLogin is what an application finds in its SMTPCredential's Secret.
type smtpLogin struct {
	username, password string
	roots              *x509.CertPool
	caFile             string
	serverName         string // the pool's hostname, in its certificate
}

// login reads the Secret the operator wrote for the shop's credential.
func (d *demo) login(ctx context.Context) (*smtpLogin, error) {
	var s corev1.Secret
	if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "shop-smtp"}, &s); err != nil {
		return nil, fmt.Errorf("the credential's Secret: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.Data["ca.crt"]) {
		return nil, errors.New("the credential's Secret holds no CA in ca.crt")
	}
	caFile := filepath.Join(d.dir, "relay-ca.crt")
	if err := os.WriteFile(caFile, s.Data["ca.crt"], 0o644); err != nil {
		return nil, err
	}
	return &smtpLogin{username: string(s.Data["username"]), password: string(s.Data["password"]),
		roots: roots, caFile: caFile, serverName: "relay." + domain}, nil
}

// send submits one message the way an application would.
func (l *smtpLogin) send(addr string) error {
	c, err := smtp.DialStartTLS(addr, &tls.Config{ServerName: l.serverName, RootCAs: l.roots})
	if err != nil {
		return fmt.Errorf("STARTTLS: %w", err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", l.username, l.password)); err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	from, to := "orders@"+domain, "someone@"+recipientHost
	body := strings.ReplaceAll(fmt.Sprintf(`From: Shop <%s>
To: <%s>
Subject: Your order shipped

Hello from the mailroom demo. This message was submitted with STARTTLS and
AUTH, queued durably, signed with the domain's DKIM key and delivered to the
recipient's MX found through BIND.
`, from, to), "\n", "\r\n")
	if err := c.SendMail(from, []string{to}, strings.NewReader(body)); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	return c.Quit()
}

// metricsAt picks a few lines of a relay's /metrics.
func metricsAt(addr string) string {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		for _, p := range []string{"mailroom_relay_messages_accepted_total", "mailroom_delivery_recipients_total", "mailroom_queue_depth",
			"mailroom_relay_config_revision", "mailroom_relay_auth_failures_total"} {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	if len(out) == 0 {
		return "(no mailroom metrics yet)"
	}
	return strings.Join(out, "\n")
}
