package httpapi

import (
	"strings"
	"testing"
)

// BenchmarkBuildMessage is the API's own work for bench-api's request (a
// 5 KB text message): decoding the JSON and building the MIME message.
func BenchmarkBuildMessage(b *testing.B) {
	text := strings.Repeat(strings.Repeat("X", 77)+"\n", 5120/78)
	body := []byte(`{"from":"load@example.com","to":["sink@example.net"],"subject":"bench","text":"` +
		strings.ReplaceAll(text, "\n", `\n`) + `"}`)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var req MessageRequest
		if err := decodeStrict(body, &req); err != nil {
			b.Fatal(err)
		}
		if _, _, err := buildMessage(&req); err != nil {
			b.Fatal(err)
		}
	}
}
