package mtasts_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/mtasts"
)

func TestParsePolicy(t *testing.T) {
	p, err := mtasts.ParsePolicy("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.Mail.Example.com\r\nmax_age: 604800\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != mtasts.Enforce || p.MaxAge != 7*24*time.Hour || strings.Join(p.MX, ",") != "mx1.example.com,*.mail.example.com" {
		t.Errorf("policy = %+v", p)
	}
}

func TestParsePolicyLeniencies(t *testing.T) {
	// LF line ends, no final newline, spaces around values, unknown
	// fields, and a repeated field whose first value counts.
	p, err := mtasts.ParsePolicy("version: STSv1\nmode:testing  \nmode: enforce\nmx: mx.example.com\nmax_age: 86400\nextension_field: whatever it says")
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != mtasts.Testing || p.MaxAge != 24*time.Hour {
		t.Errorf("policy = %+v", p)
	}
	if _, err := mtasts.ParsePolicy("version: STSv1\nmode: none\nmax_age: 0\n"); err != nil {
		t.Errorf("mode none needs no mx: %v", err)
	}
}

func TestParsePolicyRejects(t *testing.T) {
	for name, text := range map[string]string{
		"no version":        "mode: enforce\nmx: a.example\nmax_age: 1\n",
		"wrong version":     "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
		"no mode":           "version: STSv1\nmx: a.example\nmax_age: 1\n",
		"bad mode":          "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
		"no max_age":        "version: STSv1\nmode: enforce\nmx: a.example\n",
		"max_age too large": "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
		"max_age negative":  "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
		"no mx for enforce": "version: STSv1\nmode: enforce\nmax_age: 1\n",
		"bad mx":            "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
		"not key: value":    "version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1\n",
		"html error page":   "<html><body>Not found</body></html>",
	} {
		if _, err := mtasts.ParsePolicy(text); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMXMatching(t *testing.T) {
	p := &mtasts.Policy{MX: []string{"mx1.example.com", "*.mail.example.com"}}
	for host, want := range map[string]bool{
		"mx1.example.com":        true,
		"MX1.Example.COM.":       true,
		"mx2.example.com":        false,
		"a.mail.example.com":     true,
		"mail.example.com":       false, // the wildcard needs one more label
		"a.b.mail.example.com":   false, // exactly one
		"evil-mail.example.com":  false,
		"mx1.example.com.evil":   false,
		"a.mail.example.com.com": false,
	} {
		if got := p.Matches(host); got != want {
			t.Errorf("Matches(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestParseRecord(t *testing.T) {
	for txt, want := range map[string]string{
		"v=STSv1; id=20160831085700Z;": "20160831085700Z",
		"v=STSv1;id=abc":               "abc",
		"v=STSv1; id=abc; ext=value ;": "abc",
	} {
		id, err := mtasts.ParseRecord(txt)
		if err != nil || id != want {
			t.Errorf("ParseRecord(%q) = %q, %v; want %q", txt, id, err, want)
		}
	}
	if _, err := mtasts.ParseRecord("v=spf1 -all"); !errors.Is(err, mtasts.ErrNotSTS) {
		t.Errorf("SPF record: %v, want ErrNotSTS", err)
	}
	for _, bad := range []string{"v=STSv1;", "v=STSv1; id=", "v=STSv1; id=has-dash", "v=STSv1; id=" + strings.Repeat("a", 33)} {
		if _, err := mtasts.ParseRecord(bad); err == nil || errors.Is(err, mtasts.ErrNotSTS) {
			t.Errorf("ParseRecord(%q): %v, want a syntax error", bad, err)
		}
	}
}
