package main_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/relay/config"
)

// TestRelayWaitsAtStartupForConsistentShards: the main file names a shard
// that is not there yet (a projected volume mid-update); the relay binary
// waits, logging so, and starts with the complete configuration once the
// shard arrives.
func TestRelayWaitsAtStartupForConsistentShards(t *testing.T) {
	p := newRelayFiles(t)
	shard := fmt.Sprintf("domains:\n- {name: shard.example, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: %s/dkim.pem}]}\n", p.dir)
	sum := sha256.Sum256([]byte(shard))
	shardPath := filepath.Join(p.dir, "shard-00.yaml")
	main, _ := os.ReadFile(p.cfgPath)
	main = append(main, fmt.Sprintf("revision: 7\ninclude: [{file: %s, sha256: %s}]\n", shardPath, hex.EncodeToString(sum[:]))...)
	os.WriteFile(p.cfgPath, main, 0o600)

	log := &lockedBuffer{}
	cmd := exec.Command(relayBinary(t), "--config", p.cfgPath, "--log-format", "text")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}()
	poll(t, "the relay to wait for the shard", time.Minute, func() bool {
		return strings.Contains(log.String(), "waiting for consistent config shards")
	})
	if _, err := http.Get("http://" + p.httpAddr + "/readyz"); err == nil {
		t.Fatal("the relay serves before its configuration is complete")
	}
	os.WriteFile(shardPath, []byte(shard), 0o600)
	poll(t, "the relay to start", time.Minute, func() bool {
		resp, err := http.Get("http://" + p.httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	st := status(t, p)
	if st.Revision != 7 || st.ConfigDigest != config.ComputeDigest(main, []string{hex.EncodeToString(sum[:])}) || !st.Ready {
		t.Fatalf("status %+v", st)
	}
	if got := metric(t, p, "mailroom_relay_config_revision"); got != 7 {
		t.Fatalf("mailroom_relay_config_revision = %v", got)
	}
	submit(t, p, "app@example.com", []string{"rcpt@dest.test"}, "after-wait")
}
