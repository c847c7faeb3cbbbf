package queue

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// spaceOverhead is the fixed on-disk overhead the space bound allows: the
// write-ahead log Pebble preallocates (110% of the 4 MiB memtable), a
// recycled log, a memtable's worth of tables not yet compacted, the
// MANIFEST and OPTIONS files.
const spaceOverhead = 16 << 20

// TestChurnGivesSpaceBack runs intake and delivery at once, with 30% of
// the messages kept (deferred, their state rewritten) and the rest
// delivered and removed, and checks throughout that the spool's size on
// disk stays within 2 x live bytes + spaceOverhead.
func TestChurnGivesSpaceBack(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{})
	defer q.Close()
	const total, size = 8000, 5000
	body := message(size, "churn")
	var mu sync.Mutex
	live := map[string]int64{}
	var liveBytes int64
	ids := make(chan string, 1024)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 16 {
				qw, err := q.NewWriter()
				if err != nil {
					t.Error(err)
					return
				}
				qw.Write(body)
				m := Message{From: "a@example.com", Recipients: []Recipient{{Address: fmt.Sprintf("r%d@example.net", i%50)}}}
				if err := qw.Commit(m); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				live[qw.ID()] = size
				liveBytes += size
				mu.Unlock()
				ids <- qw.ID()
			}
		}()
	}
	go func() { wg.Wait(); close(ids) }()

	var worst float64
	done := 0
	for id := range ids {
		done++
		if rand.IntN(10) < 3 {
			// Kept: deferred, its state written again like an attempt's.
			m, _ := q.Get(id)
			m.Attempts++
			m.NextAttempt = time.Now().Add(time.Hour)
			if err := q.Update(m); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := q.Remove(id); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		liveBytes -= live[id]
		delete(live, id)
		mu.Unlock()
		if done%1000 == 0 {
			mu.Lock()
			lb := liveBytes
			mu.Unlock()
			disk := q.DiskBytes()
			limit := 2*lb + spaceOverhead
			if r := float64(disk) / float64(limit); r > worst {
				worst = r
			}
			if disk > limit {
				t.Fatalf("after %d messages: %d bytes on disk for %d live bytes; the bound is 2 x live + %d = %d", done, disk, lb, spaceOverhead, limit)
			}
		}
	}
	t.Logf("%d messages through the queue, %d kept (%d live bytes); on disk %d bytes; worst disk/bound ratio %.2f",
		total, len(live), liveBytes, q.DiskBytes(), worst)
}
