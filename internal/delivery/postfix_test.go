package delivery_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/delivery"
)

// Postfix's smtp-sink is an independent receiving SMTP implementation
// that, unlike go-smtp's server, can leave out ESMTP or 8BITMIME.

func smtpSinkBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"smtp-sink", "/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"} {
		if found, err := exec.LookPath(p); err == nil {
			return found
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "hack", "install-test-deps.sh")
	if out, err := exec.Command("bash", script).CombinedOutput(); err != nil {
		t.Fatalf("smtp-sink (Debian package postfix) is missing and %s failed: %v\n%s", script, err, out)
	}
	for _, p := range []string{"smtp-sink", "/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"} {
		if found, err := exec.LookPath(p); err == nil {
			return found
		}
	}
	t.Fatal("smtp-sink is still missing after installing postfix")
	return ""
}

// postfixSink runs smtp-sink on ip at the env's port with flags, dumping
// each message into a file; it returns a function reading the dumps.
func postfixSink(t *testing.T, e *env, ip string, flags ...string) func() []string {
	t.Helper()
	bin := smtpSinkBinary(t)
	e.refuse(ip) // free the reserved port for smtp-sink
	// Not t.TempDir(): smtp-sink runs as nobody and must reach the
	// directory, whose parent t.TempDir() keeps private.
	dir, err := os.MkdirTemp("", "smtp-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(ip, itoa(e.Port))
	args := append([]string{}, flags...)
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // smtp-sink refuses to run as root
	}
	args = append(args, "-d", filepath.Join(dir, "msg."), addr, "16")
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("smtp-sink output:\n%s", out.String())
		}
	})
	eventually(t, "smtp-sink to listen on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return func() []string {
		var dumps []string
		files, _ := filepath.Glob(filepath.Join(dir, "msg.*"))
		for _, f := range files {
			if data, err := os.ReadFile(f); err == nil {
				dumps = append(dumps, string(data))
			}
		}
		return dumps
	}
}

func TestAServerWithoutESMTPIsGreetedWithHELOAndOurName(t *testing.T) {
	e := newEnv(t, "127.0.0.4")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.4")
	dumps := postfixSink(t, e, "127.0.0.4", "-e")
	d := e.deliverer(e.options())
	want(t, deliver(t, d, message("noreply@example.com", testBody), "a@example.net")[0], delivery.Delivered, delivery.ReasonNone)
	var got []string
	eventually(t, "smtp-sink to write the message", func() bool { got = dumps(); return len(got) == 1 })
	for _, w := range []string{"X-Helo-Args: " + relayName + "\n", "X-Client-Proto: SMTP\n", "X-Mail-Args: <noreply@example.com>\n", "Subject: Your order"} {
		if !strings.Contains(got[0], w) {
			t.Errorf("dump lacks %q:\n%s", w, got[0])
		}
	}
}

func TestEightBitContentNeeds8BITMIME(t *testing.T) {
	e := newEnv(t, "127.0.0.4")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.4")
	dumps := postfixSink(t, e, "127.0.0.4", "-8")
	d := e.deliverer(e.options())

	eight := message("noreply@example.com", strings.Replace(testBody, "Thank you", "Vielen Dank für", 1))
	eight.EightBit = true
	res := deliver(t, d, eight, "a@example.net")
	want(t, res[0], delivery.Failed, delivery.ReasonUnsupported)
	if res[0].Code != "5.6.3" {
		t.Errorf("code %s", res[0].Code)
	}

	want(t, deliver(t, d, message("noreply@example.com", testBody), "a@example.net")[0], delivery.Delivered, delivery.ReasonNone)
	var got []string
	eventually(t, "smtp-sink to write the message", func() bool { got = dumps(); return len(got) == 1 })
	if strings.Contains(got[0], "BODY=8BITMIME") || !strings.Contains(got[0], "X-Client-Proto: ESMTP") {
		t.Errorf("dump:\n%s", got[0])
	}
}
