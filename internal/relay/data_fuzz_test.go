package relay

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// FuzzDataReader feeds arbitrary DATA through the relay's guard and header
// reader, as a session does. Whatever it accepts passes through unchanged
// and has only CRLF line endings and lines of at most 998 octets; the
// header it reads is a prefix of the message; nothing panics.
func FuzzDataReader(f *testing.F) {
	f.Add([]byte("From: <a@example.com>\r\nSubject: hi\r\n\r\nbody\r\n"))
	f.Add([]byte("Subject: bare\nlf\r\n\r\n"))
	f.Add([]byte("X: y\r\n.\rz\r\n"))
	f.Add(append([]byte("Long: "), bytes.Repeat([]byte("a"), 1200)...))
	f.Add([]byte("no header at all"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &dataGuard{r: bytes.NewReader(data), max: 1 << 20}
		br := bufio.NewReaderSize(g, 4096)
		h, herr := readHeader(br)
		rest, rerr := io.ReadAll(br)
		if herr != nil || rerr != nil {
			return // refused: the session answers with the error's reply
		}
		if !bytes.HasPrefix(data, h.raw) {
			t.Fatalf("header %q is not a prefix of the message", h.raw)
		}
		if !bytes.HasSuffix(data, rest) {
			t.Fatalf("the body %q is not the end of the message", rest)
		}
		for i, c := range data {
			if c == '\n' && (i == 0 || data[i-1] != '\r') || c == '\r' && (i+1 == len(data) || data[i+1] != '\n') {
				t.Fatalf("accepted a bare CR or LF at %d", i)
			}
		}
		for _, line := range bytes.Split(data, []byte("\r\n")) {
			if len(line) > maxLineOctets {
				t.Fatalf("accepted a line of %d octets", len(line))
			}
		}
	})
}
