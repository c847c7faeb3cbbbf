package httpapi

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emersion/go-message"
)

func TestTextPartsGoAsTheyAreWhenTheyFitSevenBit(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       string // "" means quoted-printable
	}{
		{"ASCII with LF line ends", "Hello Ann,\nyour order shipped.\n", "Hello Ann,\r\nyour order shipped.\r\n"},
		{"ASCII with CRLF line ends", "a\r\nb", "a\r\nb"},
		{"a line of 998 octets", strings.Repeat("x", 998), strings.Repeat("x", 998)},
		{"non-ASCII", "Grüße", ""},
		{"a line over 998 octets", strings.Repeat("x", 999), ""},
		{"a bare CR", "a\rb", ""},
		{"a CR at the end", "a\r", ""},
		{"NUL", "a\x00b", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := textEntity("text/plain", tc.text)
			h := e.fields(e.header)
			cte := h.Get("Content-Transfer-Encoding")
			var b bytes.Buffer
			if err := e.write(&b, message.Header{}); err != nil {
				t.Fatal(err)
			}
			_, body, _ := strings.Cut(b.String(), "\r\n\r\n")
			switch {
			case tc.want == "" && cte != "quoted-printable":
				t.Errorf("encoding %q, want quoted-printable", cte)
			case tc.want != "" && (cte != "7bit" || body != tc.want):
				t.Errorf("encoding %q body %q, want 7bit %q", cte, body, tc.want)
			}
		})
	}
}
