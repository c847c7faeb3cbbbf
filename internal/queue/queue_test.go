package queue

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func openQueue(t *testing.T, dir string, opts Options) *Queue {
	t.Helper()
	q, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return q
}

// enqueue commits data as one message and returns its id.
func enqueue(t *testing.T, q *Queue, data []byte, rcpts ...string) string {
	t.Helper()
	w, err := q.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	// Several writes, like a session streaming DATA.
	for off := 0; off < len(data); off += 7000 {
		if _, err := w.Write(data[off:min(off+7000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	m := Message{From: "app@example.com", Header: "DKIM-Signature: v=1\r\n"}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, Recipient{Address: r})
	}
	if err := w.Commit(m); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return w.ID()
}

func readAll(t *testing.T, q *Queue, id string) []byte {
	t.Helper()
	r, err := q.Open(id)
	if err != nil {
		t.Fatalf("Open(%s): %v", id, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func message(n int, seed string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Subject: %s\r\n\r\n", seed)
	for b.Len() < n {
		fmt.Fprintf(&b, "%s line %d\r\n", seed, b.Len())
	}
	return b.Bytes()[:n]
}

func TestCommittedMessagesSurviveReopenInlineAndSpilled(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, Options{InlineLimit: 16 << 10})
	small := message(5000, "small")
	large := message(300<<10, "large")
	idSmall := enqueue(t, q, small, "a@example.net")
	idLarge := enqueue(t, q, large, "b@example.net", "c@example.net")
	if _, err := os.Stat(filepath.Join(dir, "bodies", idLarge)); err != nil {
		t.Fatalf("a message past InlineLimit has its own body file: %v", err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = openQueue(t, dir, Options{InlineLimit: 16 << 10})
	defer q.Close()
	if q.Len() != 2 {
		t.Fatalf("recovered %d messages, want 2", q.Len())
	}
	for id, want := range map[string][]byte{idSmall: small, idLarge: large} {
		got := readAll(t, q, id)
		want = append([]byte("DKIM-Signature: v=1\r\n"), want...)
		if !bytes.Equal(got, want) {
			t.Errorf("message %s: got %d bytes, want %d identical bytes", id, len(got), len(want))
		}
		m, _ := q.Get(id)
		if m.Size != int64(len(want)) || m.From != "app@example.com" {
			t.Errorf("metadata of %s: %+v", id, m)
		}
	}
	m, _ := q.Get(idLarge)
	if len(m.Recipients) != 2 || m.Recipients[1].Address != "c@example.net" {
		t.Errorf("recipients of the large message: %+v", m.Recipients)
	}
}

func TestSecondOwnerIsRefusedWithAClearError(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, Options{})
	defer q.Close()
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprint("pid ", os.Getpid())) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("error %q should name the directory and the owner's pid", err)
	}
}

func TestLockIsReleasedWhenTheOwnerDies(t *testing.T) {
	// flock(1) from util-linux holds the lock in another process, which is
	// then killed like a crashed relay.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "LOCK"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// -o: the lock is held by flock itself, not inherited by sleep.
	cmd := exec.Command("flock", "-o", filepath.Join(dir, "LOCK"), "sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1) is needed for this test: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := Open(dir, Options{})
		if errors.Is(err, ErrLocked) {
			break
		}
		if err == nil {
			q.Close()
		}
		if time.Now().After(deadline) {
			t.Fatal("flock(1) never took the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	// The kernel drops the lock as the killed processes exit, which may be
	// a moment after the parent has been reaped.
	waitFor(t, func() bool {
		q, err := Open(dir, Options{})
		if err == nil {
			q.Close()
		}
		return err == nil
	})
}

func TestConcurrentCommitsShareFsyncs(t *testing.T) {
	const writers = 64
	q := openQueue(t, t.TempDir(), Options{})
	defer q.Close()
	before := q.WALSyncs()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	start := make(chan struct{})
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := q.NewWriter()
			if err == nil {
				_, err = w.Write(message(5000, "c"))
			}
			<-start
			if err == nil {
				err = w.Commit(Message{From: "a@example.com", Recipients: []Recipient{{Address: "b@example.net"}}})
			}
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if q.Len() != writers {
		t.Fatalf("%d messages, want %d", q.Len(), writers)
	}
	// Every Commit is a Sync commit; Pebble's pipeline lets the ones that
	// wait together share an fsync.
	if syncs := q.WALSyncs() - before; syncs >= writers || syncs == 0 {
		t.Fatalf("%d concurrent commits took %d WAL fsyncs; want fewer (group commit) but some", writers, syncs)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 60s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestUpdatesAndRemovalsAreDurable(t *testing.T) {
	dir := t.TempDir()
	opts := Options{InlineLimit: 8 << 10}
	q := openQueue(t, dir, opts)
	keep := enqueue(t, q, message(3000, "keep"), "a@example.net", "b@example.net")
	gone := enqueue(t, q, message(20<<10, "gone"), "c@example.net")

	m, _ := q.Get(keep)
	m.Attempts = 1
	m.NextAttempt = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	m.Recipients[0].State = "delivered"
	m.Recipients[1].LastResponse = "451 4.7.1 try later"
	if err := q.Update(m); err != nil {
		t.Fatal(err)
	}
	if err := q.Remove(gone); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bodies", gone)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the removed message's body file is still there: %v", err)
	}
	if err := q.Remove(gone); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v, want ErrNotFound", err)
	}
	q.Close()

	q = openQueue(t, dir, opts)
	defer q.Close()
	if q.Len() != 1 {
		t.Fatalf("%d messages after reopen, want 1", q.Len())
	}
	got, ok := q.Get(keep)
	if !ok || got.Attempts != 1 || !got.NextAttempt.Equal(m.NextAttempt) ||
		got.Recipients[0].State != "delivered" || got.Recipients[1].LastResponse != "451 4.7.1 try later" {
		t.Fatalf("state after reopen: %+v", got)
	}
	if !bytes.HasSuffix(readAll(t, q, keep), message(3000, "keep")) {
		t.Fatal("an updated message's bytes changed")
	}
}

func TestOrphanBodyFilesAreDeletedOnOpen(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, Options{InlineLimit: 1024})
	w, _ := q.NewWriter()
	w.Write(message(5000, "never committed"))
	// The process dies here: the body file exists but no record refers to it.
	orphan := filepath.Join(dir, "bodies", w.ID())
	if _, err := os.Stat(orphan); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = openQueue(t, dir, Options{InlineLimit: 1024})
	defer q.Close()
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) || q.Recovery().OrphanBodies != 1 {
		t.Fatalf("orphan body file: stat %v, recovery %+v", err, q.Recovery())
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, Options{InlineLimit: 1024})
	defer q.Close()
	w, _ := q.NewWriter()
	w.Write(message(5000, "aborted"))
	w.Abort()
	if left, _ := os.ReadDir(filepath.Join(dir, "bodies")); len(left) != 0 || q.Len() != 0 {
		t.Fatalf("after Abort: bodies %v, %d messages", left, q.Len())
	}
}

func TestLargeMessageStreamsWithoutBeingHeldInMemory(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{})
	defer q.Close()
	chunk := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 1024)
	const total = 25 << 20
	w, err := q.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for n := 0; n < total; n += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
		h.Write(chunk)
	}
	if err := w.Commit(Message{From: "a@example.com", Recipients: []Recipient{{Address: "b@example.net"}}}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("writing a 25 MiB message allocated %d MiB", alloc>>20)
	}
	r, err := q.Open(w.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h2 := sha256.New()
	if n, _ := io.Copy(h2, r); n != total || !bytes.Equal(h.Sum(nil), h2.Sum(nil)) {
		t.Fatalf("read back %d bytes with a different hash", n)
	}
}

// TestDiskFullFailsCleanly fills a small tmpfs with intake: intake is
// refused with ErrNoSpace while the reserve is still free, the commits
// before survive, state writes and removals still work, and nothing
// half-written remains.
func TestDiskFullFailsCleanly(t *testing.T) {
	dir := smallFilesystem(t, 64<<20)
	opts := Options{InlineLimit: 64 << 10, Reserve: 16 << 20}
	q := openQueue(t, dir, opts)
	var committed []string
	var sawNoSpace bool
	for i := 0; i < 2000 && !sawNoSpace; i++ {
		size := 40 << 10
		if i%3 == 0 {
			size = 150 << 10 // its own body file
		}
		w, err := q.NewWriter()
		if err != nil {
			t.Fatal(err)
		}
		_, err = w.Write(message(size, fmt.Sprint("fill", i)))
		if err == nil {
			err = w.Commit(Message{From: "a@example.com", Recipients: []Recipient{{Address: "b@example.net"}}})
		} else {
			w.Abort()
		}
		switch {
		case err == nil:
			committed = append(committed, w.ID())
		case errors.Is(err, ErrNoSpace):
			sawNoSpace = true
		default:
			t.Fatalf("message %d: %v, want success or ErrNoSpace", i, err)
		}
	}
	if !sawNoSpace {
		t.Fatal("the filesystem never filled up")
	}
	free, _, _ := q.FreeBytes()
	if free < 16<<20 {
		t.Fatalf("intake was refused only at %d bytes free; the reserve of accepted mail (state writes at 12 MiB) is gone", free)
	}
	// Mail already accepted still gets its state written and its DSNs.
	m, _ := q.Get(committed[0])
	m.Attempts = 1
	if err := q.Update(m); err != nil {
		t.Fatalf("a state write after intake was refused: %v", err)
	}
	rw, _ := q.NewReportWriter()
	rw.Write(message(3000, "dsn"))
	if err := rw.Commit(Message{From: "", Recipients: []Recipient{{Address: "a@example.com"}}}); err != nil {
		t.Fatalf("a DSN after intake was refused: %v", err)
	}
	committed = append(committed, rw.ID())
	q.Close()

	q = openQueue(t, dir, opts)
	defer q.Close()
	if rs := q.Recovery(); rs.OrphanBodies != 0 {
		t.Fatalf("half-written data left after disk full: %+v", rs)
	}
	if q.Len() != len(committed) {
		t.Fatalf("%d messages after reopen, %d were committed", q.Len(), len(committed))
	}
	for i, id := range committed {
		if _, ok := q.Get(id); !ok {
			t.Fatalf("committed message %d (%s) lost", i, id)
		}
	}
}

// smallFilesystem mounts a tmpfs of size bytes and returns a directory on it.
func smallFilesystem(t *testing.T, size int) string {
	t.Helper()
	mnt := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("mounting a small tmpfs to fill up (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return filepath.Join(mnt, "queue")
}

func TestDeliveryStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := q.NewWriter()
	w.Write([]byte("Subject: x\r\n\r\nhi\r\n"))
	if err := w.Commit(Message{From: "a@example.com", Recipients: []Recipient{{Address: "b@example.net"}}, EightBit: true, SMTPUTF8: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Added():
	default:
		t.Fatal("Added not signalled after a commit")
	}
	m, _ := q.Get(w.ID())
	m.DelayWarned, m.Held = true, true
	m.History = append(m.History, Attempt{Recipient: "b@example.net", Status: "deferred", Reply: "451 4.3.0 later"})
	if err := q.Update(m); err != nil {
		t.Fatal(err)
	}
	if q.HeldLen() != 1 {
		t.Fatalf("HeldLen = %d, want 1", q.HeldLen())
	}
	q.Close()
	q, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got, ok := q.Get(w.ID())
	if q.HeldLen() != 1 {
		t.Fatalf("HeldLen after reopen = %d, want 1", q.HeldLen())
	}
	if !ok || !got.EightBit || !got.SMTPUTF8 || !got.DelayWarned || !got.Held || len(got.History) != 1 || got.History[0].Reply != "451 4.3.0 later" {
		t.Fatalf("after reopen: %+v", got)
	}
}
