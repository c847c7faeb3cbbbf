package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// template is a closed spool with committed messages that each fuzz input
// copies and damages.
var template struct {
	once   sync.Once
	dir    string
	bodies map[string][]byte // id -> stored bytes (Header + body)
	err    error
}

func spoolTemplate(t testing.TB) (string, map[string][]byte) {
	template.once.Do(func() {
		dir, err := os.MkdirTemp("", templatePrefix())
		if err != nil {
			template.err = err
			return
		}
		q, err := Open(dir, Options{InlineLimit: 4 << 10, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			template.err = err
			return
		}
		template.dir, template.bodies = dir, map[string][]byte{}
		for i := 0; i < 40; i++ {
			size := 1500 + 97*i
			if i%5 == 0 {
				size = 9000 + i // its own body file
			}
			w, _ := q.NewWriter()
			data := message(size, fmt.Sprint("fuzz", i))
			w.Write(data)
			m := Message{From: "a@example.com", Header: "DKIM-Signature: v=1\r\n", Recipients: []Recipient{{Address: fmt.Sprintf("r%d@example.net", i)}}}
			if err := w.Commit(m); err != nil {
				template.err = err
				return
			}
			template.bodies[w.ID()] = append([]byte(m.Header), data...)
		}
		template.err = q.Close()
	})
	if template.err != nil {
		t.Fatal(template.err)
	}
	return template.dir, template.bodies
}

func copyTree(t testing.TB, from, to string) []string {
	var files []string
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files = append(files, rel)
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return files
}

// FuzzCorruptSpool damages a closed spool with the input's operations -
// each 6 bytes: which file, where (uint32), and a byte that flips bits
// there or, when its top bit is set, truncates the file there - and opens
// it. Every acknowledged message must be read back intact or be listed in
// the quarantine by its id; or the spool must refuse to open. Nothing may
// vanish silently or come back changed.
func FuzzCorruptSpool(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 100, 1})
	f.Add([]byte{1, 0, 0, 1, 0, 0x80})
	f.Add([]byte{2, 0, 0, 0, 40, 0x10, 3, 0, 0, 2, 0, 0x01})
	f.Fuzz(func(t *testing.T, ops []byte) {
		src, bodies := spoolTemplate(t)
		dir := t.TempDir()
		files := copyTree(t, src, dir)
		for len(ops) >= 6 {
			name := filepath.Join(dir, files[int(ops[0])%len(files)])
			off := int64(binary.BigEndian.Uint32(ops[1:5]))
			op := ops[5]
			ops = ops[6:]
			b, err := os.ReadFile(name)
			if err != nil || len(b) == 0 {
				continue
			}
			off %= int64(len(b))
			if op&0x80 != 0 {
				b = b[:off]
			} else if op != 0 {
				b[off] ^= op
			}
			os.WriteFile(name, b, 0o600)
		}

		q, err := Open(dir, Options{InlineLimit: 4 << 10, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return // refused loudly: the operator is told, nothing is misread
		}
		defer q.Close()
		var lost []string
		for id, want := range bodies {
			got, err := readMessage(q, id)
			if err == nil && bytes.Equal(got, want) {
				continue
			}
			if err == nil {
				t.Fatalf("message %s came back changed without an error", id)
			}
			lost = append(lost, id)
		}
		<-q.scrubbed // the scrub finds what no read could name
		quarantined := map[string]bool{}
		for _, qr := range q.QuarantineList() {
			quarantined[qr.ID] = true
		}
		for _, id := range lost {
			if !quarantined[id] {
				t.Fatalf("message %s is unreadable and not reported in the quarantine (%d quarantined)", id, len(quarantined))
			}
		}
	})
}

func readMessage(q *Queue, id string) ([]byte, error) {
	if _, ok := q.Get(id); !ok {
		return nil, errors.New("not found")
	}
	r, err := q.Open(id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// TestMain removes the fuzz template: each test process makes one, and
// each holds a preallocated write-ahead log of the memtable's size.
func TestMain(m *testing.M) {
	code := m.Run()
	if template.dir != "" {
		os.RemoveAll(template.dir)
	}
	// Fuzz workers are killed when the fuzz time is up, before their own
	// cleanup runs; their templates carry this process's id (templatePrefix).
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("queue-fuzz-template-%d-*", os.Getpid())))
	for _, d := range stale {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// templatePrefix names the template directory after the process that
// removes it at exit: this one, or for a fuzz worker the coordinator
// that started it.
func templatePrefix() string {
	pid := os.Getpid()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		pid = os.Getppid()
	}
	return fmt.Sprintf("queue-fuzz-template-%d-", pid)
}
