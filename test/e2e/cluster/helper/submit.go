package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// submit sends one message the way an application configured from an
// SMTPCredential's Secret does: host, port, username, password and the CA
// come from the environment (SMTP_HOST, SMTP_PORT, SMTP_USERNAME,
// SMTP_PASSWORD, SMTP_CA_CRT: the Secret's keys as env vars), the host is
// dialled by its DNS name, STARTTLS verifies the relay's certificate
// against that CA for that name, then AUTH PLAIN. Dial failures and 4xx
// replies are retried until -timeout; the final reply is printed.
func submit(args []string) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	from := fs.String("from", "", "envelope sender and From:")
	to := fs.String("to", "", "recipient")
	subject := fs.String("subject", "e2e", "Subject:")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	env, err := requireEnv("SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_CA_CRT")
	if err != nil {
		return err
	}
	roots, err := certPool(env, "SMTP_CA_CRT")
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(env["SMTP_HOST"], env["SMTP_PORT"])
	deadline := time.Now().Add(*timeout)
	for attempt := 1; ; attempt++ {
		reply, err := submitOnce(addr, env, roots, *from, *to, *subject)
		if err == nil {
			fmt.Printf("submitted to %s as %s after %d attempts: %s\n", addr, env["SMTP_USERNAME"], attempt, reply)
			return nil
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code >= 500 {
			return fmt.Errorf("%s refused: %w", addr, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: giving up after %d attempts: %w", addr, attempt, err)
		}
		fmt.Fprintf(os.Stderr, "attempt %d: %v; retrying\n", attempt, err)
		time.Sleep(time.Second)
	}
}

func submitOnce(addr string, env map[string]string, roots *x509.CertPool, from, to, subject string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{ServerName: env["SMTP_HOST"], RootCAs: roots})
	if err != nil {
		conn.Close()
		return "", fmt.Errorf("STARTTLS: %w", err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", env["SMTP_USERNAME"], env["SMTP_PASSWORD"])); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	body := strings.ReplaceAll(fmt.Sprintf("From: <%s>\nTo: <%s>\nSubject: %s\nMessage-ID: <%d.e2e-helper@%s>\n\nSubmitted by an application pod with its SMTPCredential Secret.\n",
		from, to, subject, time.Now().UnixNano(), strings.SplitN(from, "@", 2)[1]), "\n", "\r\n")
	if _, err := io.WriteString(w, body); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_ = c.Quit()
	return "250 " + resp.StatusText, nil
}
