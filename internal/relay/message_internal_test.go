package relay

import (
	"io"
	"strings"
	"testing"
)

func TestEightBitDetectorSeesUndeclaredEightBitContent(t *testing.T) {
	for text, want := range map[string]bool{
		"Subject: plain\r\n\r\nascii only\r\n": false,
		"Subject: Grüße\r\n\r\nbody\r\n":       true,
		"Subject: x\r\n\r\nbody \xff\r\n":      true,
	} {
		d := &eightBitDetector{}
		io.Copy(d, strings.NewReader(text))
		if d.seen != want {
			t.Errorf("%q: seen = %v, want %v", text, d.seen, want)
		}
	}
}
