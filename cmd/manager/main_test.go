package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/internal/controller"
	"mailroom.io/mailroom/internal/testutil/envtest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeKubeconfig(t *testing.T, env *envtest.Env) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := env.WriteKubeconfig(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestManagerServesProbesAndMetricsAndTakesTheLease(t *testing.T) {
	env, err := envtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	t.Logf("kube-apiserver %s", env.Version)

	metrics, probes := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"--kubeconfig", writeKubeconfig(t, env),
			"--metrics-bind-address", metrics,
			"--health-probe-bind-address", probes,
			"--leader-elect", "--leader-election-namespace", "default",
			"--log-format", "text",
		})
	}()

	waitOK(t, "http://"+probes+"/healthz", "")
	waitOK(t, "http://"+probes+"/readyz", "")
	waitOK(t, "http://"+metrics+"/metrics", "controller_runtime_")

	// Leader election holds a Lease so a second replica stays passive.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var lease coordinationv1.Lease
		err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "manager.mailroom.io"}, &lease)
		if err == nil && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader lease: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("manager stopped with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("manager did not stop after its context ended")
	}
}

func TestFlagsAreValidated(t *testing.T) {
	for _, args := range [][]string{
		{"--log-format", "xml"},
		{"--log-level", "loud"},
		{"--no-such-flag"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// waitOK polls url until it answers 200 (and contains want).
func waitOK(t *testing.T, url, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(b), want) {
				return
			}
			last = fmt.Sprintf("%d %.200s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s never answered 200 with %q; last: %s", url, want, last)
}

func TestWatchNamespacesLimitTheCache(t *testing.T) {
	o, err := parseFlags([]string{"--watch-namespaces", "mail, shop,,billing"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.watch, ","); got != "mail,shop,billing" {
		t.Fatalf("watch = %q", got)
	}
	opts := controller.CacheOptions(o.watch...)
	if len(opts.DefaultNamespaces) != 3 {
		t.Errorf("cache watches %v", opts.DefaultNamespaces)
	}
	if all := controller.CacheOptions(); all.DefaultNamespaces != nil {
		t.Errorf("without the flag the cache is limited to %v", all.DefaultNamespaces)
	}
}
