package relay_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"mailroom.io/mailroom/internal/relay"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relay/password"
)

func (e *testEnv) status(t *testing.T) relay.Status {
	t.Helper()
	resp, err := http.Get(e.http.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/json" {
		t.Fatalf("/status: %s %s", resp.Status, ct)
	}
	var st relay.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func hexSum(s string) string {
	b := sha256.Sum256([]byte(s))
	return hex.EncodeToString(b[:])
}

// TestRevisionCountsOnlyOnceEveryShardIsConsistent updates a sharded
// config the way a projected volume does, main file first: the relay
// keeps the running revision until the shard it names has arrived.
func TestRevisionCountsOnlyOnceEveryShardIsConsistent(t *testing.T) {
	e := startRelay(t, envOptions{})
	base, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	shardPath := filepath.Join(e.dir, "shard-00.yaml")
	secret := strings.Repeat("s", 43)
	h, _ := password.HashToken(secret)
	shard := func(user string) string {
		return fmt.Sprintf("credentials:\n- {username: %s, passwordHash: %q, allowedSenders: [example.com]}\n", user, h)
	}
	mainFor := func(rev int, shardContent string) string {
		return string(base) + fmt.Sprintf("revision: %d\ninclude:\n- {file: %s, sha256: %s}\n", rev, shardPath, hexSum(shardContent))
	}
	writeAtomic(t, shardPath, shard("shard.one"))
	main1 := mainFor(1, shard("shard.one"))
	writeAtomic(t, e.cfgPath, main1)
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	st := e.status(t)
	want := config.ComputeDigest([]byte(main1), []string{hexSum(shard("shard.one"))})
	if st.Revision != 1 || st.ConfigDigest != want || !st.Ready || st.Draining || st.Drained || st.Queued != 0 {
		t.Fatalf("status %+v, want revision 1 digest %s ready", st, want)
	}
	if got := e.metric(t, "mailroom_relay_config_revision"); got != 1 {
		t.Fatalf("mailroom_relay_config_revision = %v", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.srv.WatchConfig(ctx, time.Hour) // events and the 1s retry only

	// Revision 2 names a shard that has not been written yet.
	writeAtomic(t, e.cfgPath, mainFor(2, shard("shard.two")))
	waitUntil(t, "the inconsistent shard to be noticed", func() bool {
		return strings.Contains(e.logs.String(), "waiting for consistent config shards")
	})
	if st := e.status(t); st.Revision != 1 {
		t.Fatalf("revision %d applied with a stale shard", st.Revision)
	}
	auth := func(user string) error {
		c := e.dialStartTLS()
		defer c.Close()
		return c.Auth(sasl.NewPlainClient("", user, secret))
	}
	if err := auth("shard.one"); err != nil {
		t.Fatalf("the running configuration is not kept: %v", err)
	}
	if e.metric(t, `mailroom_relay_config_reloads_total{result="inconsistent"}`) < 1 || e.metric(t, `mailroom_relay_config_reloads_total{result="failure"}`) != 0 {
		t.Fatal("an inconsistent shard must be counted as inconsistent, not as a failure")
	}

	writeAtomic(t, shardPath, shard("shard.two"))
	waitUntil(t, "revision 2", func() bool { return e.status(t).Revision == 2 })
	if err := auth("shard.two"); err != nil {
		t.Fatalf("credential from the new shard: %v", err)
	}
	wantCode(t, auth("shard.one"), 535, "5.7.8")
	if got := e.metric(t, "mailroom_relay_config_revision"); got != 2 {
		t.Fatalf("mailroom_relay_config_revision = %v", got)
	}
}

// TestShardDKIMKeyFileIsWatched: a key file named by a shard is watched
// like the main file's.
func TestShardDKIMKeyFileIsWatched(t *testing.T) {
	e := startRelay(t, envOptions{})
	base, _ := os.ReadFile(e.cfgPath)
	keyPath := filepath.Join(e.dir, "dkim.shard.example.s1.pem")
	ed, _ := os.ReadFile(filepath.Join(e.dir, "ed.pem"))
	writeAtomic(t, keyPath, string(ed))
	shard := fmt.Sprintf("domains:\n- {name: shard.example, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: %s}]}\n", keyPath)
	shardPath := filepath.Join(e.dir, "shard-00.yaml")
	writeAtomic(t, shardPath, shard)
	writeAtomic(t, e.cfgPath, string(base)+fmt.Sprintf("revision: 3\ninclude: [{file: %s, sha256: %s}]\n", shardPath, hexSum(shard)))
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.srv.WatchConfig(ctx, time.Hour)
	before := e.metric(t, `mailroom_relay_config_reloads_total{result="failure"}`)
	// A key that does not parse: the reload fails, which shows the file
	// was watched.
	writeAtomic(t, keyPath, "not a key")
	waitUntil(t, "the key file change to trigger a reload", func() bool {
		return e.metric(t, `mailroom_relay_config_reloads_total{result="failure"}`) > before
	})
	if st := e.status(t); st.Revision != 3 {
		t.Fatalf("revision %d", st.Revision)
	}
}
