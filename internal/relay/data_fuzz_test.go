package relay

import (
	"bufio"
	"bytes"
	"errors"
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

// FuzzDataGuardBlocks reads arbitrary DATA through the guard in blocks of
// every size the input picks, so line ends fall across block boundaries:
// the guard accepts exactly the data with CRLF line ends only and lines
// of at most 998 octets, and refuses the rest with the right error.
func FuzzDataGuardBlocks(f *testing.F) {
	f.Add([]byte("a\r\nb\r\n"), uint8(1))
	f.Add([]byte("a\r"), uint8(1))
	f.Add([]byte("a\rb\r\n"), uint8(2))
	f.Add([]byte("\na"), uint8(3))
	f.Add([]byte("\r\r\n"), uint8(1))
	f.Add(append(bytes.Repeat([]byte("a"), 998), "\r\n"...), uint8(7))
	f.Add(append(bytes.Repeat([]byte("a"), 999), "\r\n"...), uint8(250))
	f.Add(append(bytes.Repeat([]byte("a"), 1200), "\rb\r\n"...), uint8(63))
	f.Add(append(bytes.Repeat([]byte("a"), 500), "\rb\r\n"...), uint8(63))
	f.Fuzz(func(t *testing.T, data []byte, block uint8) {
		size := int(block%64) + 1
		g := &dataGuard{r: &blockReader{data: data, size: size}, max: 1 << 20}
		got, err := io.ReadAll(g)
		want := referenceDataError(data)
		if !errors.Is(err, want) {
			t.Fatalf("blocks of %d: error %v, want %v", size, err, want)
		}
		if err == nil && !bytes.Equal(got, data) {
			t.Fatalf("blocks of %d: passed %q, want %q", size, got, data)
		}
	})
}

// referenceDataError is the guard's rule one byte at a time.
func referenceDataError(data []byte) error {
	prevCR, line := false, 0
	for _, c := range data {
		if prevCR && c != '\n' || c == '\n' && !prevCR {
			return errBareLineEnding
		}
		prevCR = c == '\r'
		switch c {
		case '\n':
			line = 0
		case '\r':
		default:
			if line++; line > maxLineOctets {
				return errLineTooLong
			}
		}
	}
	if prevCR {
		return errBareLineEnding
	}
	return nil
}

// blockReader returns data size bytes at a time.
type blockReader struct {
	data []byte
	size int
}

func (r *blockReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.size)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// FuzzDataContent reads arbitrary octets after DATA's 354 through the
// wire layer's DATA framing, in blocks and reads of every size the input
// picks: the content is what RFC 5321 §4.5.2 says it is (each CRLF-ended
// line with a leading "." removed, up to the line "."), and everything
// after the terminator is left for the next command. Without a terminator
// the read ends in io.ErrUnexpectedEOF.
func FuzzDataContent(f *testing.F) {
	f.Add([]byte(".\r\n"), uint8(1), uint8(1))
	f.Add([]byte("a\r\n..b\r\n.\r\nMAIL FROM:<a@b>\r\n"), uint8(3), uint8(2))
	f.Add([]byte("a\r\n.\rb\r\n.\r\n"), uint8(1), uint8(5))
	f.Add([]byte("a\r\r\n.\r\nQUIT\r\n"), uint8(2), uint8(1))
	f.Add([]byte("a\n.\r\nb\r\n.\r\n"), uint8(4), uint8(3))
	f.Add([]byte(".\r.\r\n.\r"), uint8(1), uint8(1))
	f.Add([]byte("no terminator\r\n."), uint8(7), uint8(9))
	f.Fuzz(func(t *testing.T, data []byte, block, read uint8) {
		br := bufio.NewReaderSize(&blockReader{data: data, size: int(block%32) + 1}, 16)
		d := &dataContent{r: br}
		buf := make([]byte, int(read%32)+1)
		var got []byte
		var err error
		for {
			var n int
			n, err = d.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		want, rest, ok := referenceDataContent(data)
		if !ok {
			if err != io.ErrUnexpectedEOF {
				t.Fatalf("no terminator: error %v, want io.ErrUnexpectedEOF", err)
			}
			return
		}
		if err != io.EOF {
			t.Fatalf("error %v, want io.EOF at the terminator", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("content %q, want %q", got, want)
		}
		left, _ := io.ReadAll(br)
		if !bytes.Equal(left, rest) {
			t.Fatalf("left %q after the terminator, want %q", left, rest)
		}
	})
}

// referenceDataContent is RFC 5321 §4.5.2 line by line: the content, what
// follows the terminator, and whether there was one.
func referenceDataContent(in []byte) (content, rest []byte, ok bool) {
	content = []byte{}
	for {
		line, after, found := bytes.Cut(in, []byte("\r\n"))
		if !found {
			return nil, nil, false
		}
		if string(line) == "." {
			return content, after, true
		}
		line, _ = bytes.CutPrefix(line, []byte("."))
		content = append(append(content, line...), '\r', '\n')
		in = after
	}
}
