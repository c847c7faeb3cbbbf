package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/peer"
)

// SuppressionPullEnv sets how often a relay pulls suppression changes from
// the other pool members (a Go duration; default 30s). Tests shorten it;
// pods keep the default, and the push makes most changes arrive at once.
const SuppressionPullEnv = "MAILROOM_SUPPRESSION_PULL_INTERVAL"

// shareSuppressions makes the relay's suppression list pool-wide over the
// peer path (package peer); without a peer section (node nil) it stays
// this relay's own. It must run before the peer listener serves; the
// node's Shutdown stops it.
func shareSuppressions(node *peer.Node, sup *delivery.Suppressions, log *slog.Logger) {
	if node == nil {
		return
	}
	var opts peer.SuppressionOptions
	if v := os.Getenv(SuppressionPullEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			log.Warn("relay: ignoring "+SuppressionPullEnv+"; want a positive duration", "value", v)
		} else {
			opts.PullInterval = d
		}
	}
	node.ShareSuppressions(context.Background(), sup, opts)
}
