package relayconfig

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/relay/password"
)

func testPool() *v1alpha1.RelayPool {
	p := &v1alpha1.RelayPool{}
	p.Namespace, p.Name = "mail", "transactional"
	p.Spec.Replicas = ptr.To[int32](3)
	p.Spec.Hostname = "relay.example.com"
	p.Spec.Submission = v1alpha1.SubmissionSpec{StartTLSPort: 587, ImplicitTLSPort: 465, MaxMessageSize: "25Mi", MaxRecipients: 100}
	p.Spec.Delivery = v1alpha1.DeliverySpec{Mode: v1alpha1.DeliveryModeDirect, MaxConnectionsPerDomain: 10}
	return p
}

var keyPEM = func() []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	b, err := dkim.MarshalPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return b
}()

var hash = func() string {
	h, err := password.HashToken("a generated password of at least thirty-two bytes")
	if err != nil {
		panic(err)
	}
	return h
}()

// world has n domains and m credentials, each sending as one domain.
func world(n, m int) Input {
	in := Input{Pool: testPool(), Members: 3}
	for i := range n {
		in.Domains = append(in.Domains, Domain{Name: fmt.Sprintf("d%04d.example.com", i), Selector: "mr-20261201", Algorithm: "RSA2048", KeyPEM: keyPEM})
	}
	for i := range m {
		in.Credentials = append(in.Credentials, Credential{
			Username: fmt.Sprintf("app%05d.team%03d", i, i%200), PasswordHash: hash,
			AllowedSenders: []string{fmt.Sprintf("d%04d.example.com", i%max(n, 1))},
			Previous:       []PreviousPassword{{Hash: hash, NotAfter: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)}},
		})
	}
	return in
}

func render(t *testing.T, in Input, rev int64) (*Rendered, map[string][]byte) {
	t.Helper()
	r, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	main, err := r.Finish(rev)
	if err != nil {
		t.Fatal(err)
	}
	return r, main
}

func TestSameInputSameBytes(t *testing.T) {
	in := world(40, 200)
	a, am := render(t, in, 7)
	// The same world listed in another order.
	in.Domains[0], in.Domains[39] = in.Domains[39], in.Domains[0]
	in.Credentials[3], in.Credentials[150] = in.Credentials[150], in.Credentials[3]
	b, bm := render(t, in, 7)
	for i := range a.Shards {
		if !maps.EqualFunc(a.Shards[i], b.Shards[i], bytes.Equal) {
			t.Errorf("shard %d differs between two renders of the same world", i)
		}
	}
	if !bytes.Equal(am[MainFile], bm[MainFile]) {
		t.Errorf("main file differs between two renders of the same world")
	}
}

func TestAddingADomainTouchesOneShard(t *testing.T) {
	in := world(40, 200)
	a, _ := render(t, in, 1)
	in.Domains = append(in.Domains, Domain{Name: "new.example.org", Selector: "s1", Algorithm: "RSA2048", KeyPEM: keyPEM})
	b, _ := render(t, in, 2)
	var changed []int
	for i := range a.Shards {
		if !maps.EqualFunc(a.Shards[i], b.Shards[i], bytes.Equal) {
			changed = append(changed, i)
		}
	}
	if len(changed) != 1 || changed[0] != ShardOf("new.example.org") {
		t.Errorf("adding one domain changed shards %v, want only %d", changed, ShardOf("new.example.org"))
	}
}

func TestLimitsAreSplitAcrossReplicas(t *testing.T) {
	for _, tc := range []struct {
		limit, replicas int32
		want            int
	}{{0, 3, 0}, {60, 3, 20}, {61, 3, 21}, {1, 3, 1}, {100, 1, 100}} {
		if got := perPod(tc.limit, tc.replicas); got != tc.want {
			t.Errorf("perPod(%d, %d) = %d, want %d", tc.limit, tc.replicas, got, tc.want)
		}
	}
}

// The design point: 1,000 domains with RSA-2048 keys and 5,000 credentials
// fit one pool, and the relay's own validation accepts the result.
func TestThousandDomainsAndFiveThousandCredentialsFit(t *testing.T) {
	r, main := render(t, world(1000, 5000), 1)
	if len(r.Oversized) != 0 {
		t.Fatalf("oversized shards: %v", r.Oversized)
	}
	largest := 0
	for i := range r.Shards {
		size := 0
		for _, v := range r.Shards[i] {
			size += len(v)
		}
		largest = max(largest, size)
	}
	t.Logf("largest shard %d KiB of %d KiB; main file %d bytes", largest>>10, ShardCapacity>>10, len(main[MainFile]))
	if largest > ShardCapacity/2 {
		t.Errorf("largest shard is %d KiB: less than 2x headroom for rotation (both keys)", largest>>10)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestOversizedShardIsReported(t *testing.T) {
	in := world(0, 0)
	big := bytes.Repeat([]byte("k"), ShardCapacity)
	in.Domains = []Domain{{Name: "huge.example.com", Selector: "s", Algorithm: "RSA2048", KeyPEM: big}}
	r, _ := render(t, in, 1)
	if len(r.Oversized) != 1 || r.Oversized[0] != ShardOf("huge.example.com") {
		t.Errorf("oversized = %v", r.Oversized)
	}
}

func TestRelayRefusalsAreCaught(t *testing.T) {
	in := world(1, 1)
	in.Credentials[0].AllowedSenders = []string{"not-a-listed.example.net"}
	r, _ := render(t, in, 1)
	err := r.Validate()
	if err == nil || !strings.Contains(err.Error(), "not a listed domain") {
		t.Errorf("Validate() = %v, want the relay's refusal of an unsignable sender", err)
	}
}

func TestMainFileCarriesRevisionPeersAndDrain(t *testing.T) {
	in := world(1, 1)
	in.Drain = []string{"transactional-relay-2"}
	_, main := render(t, in, 42)
	s := string(main[MainFile])
	for _, want := range []string{"revision: 42", "transactional-relay-2.transactional-relay-headless.mail.svc:8443", "- transactional-relay-2\n", "sha256:"} {
		if !strings.Contains(s, want) {
			t.Errorf("main file lacks %q:\n%s", want, s)
		}
	}
}

// The HTTP API and webhooks as the relay reads them: the main file's
// listener and allowed targets, the shard's key hashes and webhook.
func TestAPIAndWebhookRendering(t *testing.T) {
	in := world(1, 1)
	in.Pool.Spec.Events.AllowedTargets = []string{".shop.svc", "10.20.0.0/16"}
	c := &in.Credentials[0]
	c.APIKeyHash = hash
	notAfter := time.Date(2026, 12, 3, 10, 0, 0, 500, time.UTC)
	c.PreviousAPIKeys = []PreviousPassword{{Hash: hash, NotAfter: notAfter}}
	c.Webhook = &Webhook{URL: "http://hooks.shop.svc/mail", Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=", Types: []string{"delivered", "bounced"}}
	r, main := render(t, in, 3)

	var cfg struct {
		Listeners struct{ API string }
		Events    struct{ AllowedTargets []string }
	}
	if err := yaml.Unmarshal(main[MainFile], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listeners.API != ":9443" {
		t.Errorf("listeners.api = %q, want :9443", cfg.Listeners.API)
	}
	if got := strings.Join(cfg.Events.AllowedTargets, ","); got != ".shop.svc,10.20.0.0/16" {
		t.Errorf("events.allowedTargets = %s", got)
	}
	sh, err := ReadShard(r.Shards[ShardOf(c.Username)])
	if err != nil {
		t.Fatal(err)
	}
	got := sh.Credentials[0]
	if got.APIKeyHash != hash {
		t.Errorf("apiKeyHash = %q", got.APIKeyHash)
	}
	if len(got.PreviousAPIKeyHashes) != 1 || !got.PreviousAPIKeyHashes[0].NotAfter.Time.Equal(notAfter.Truncate(time.Second)) {
		t.Errorf("previousAPIKeyHashes = %+v", got.PreviousAPIKeyHashes)
	}
	w := got.Webhook
	if w == nil || w.URL != c.Webhook.URL || w.Secret != c.Webhook.Secret || strings.Join(w.Types, ",") != "bounced,delivered" {
		t.Errorf("webhook = %+v, want %+v with sorted types", w, c.Webhook)
	}
	if err := r.Validate(); err != nil {
		t.Errorf("the relay refuses it: %v", err)
	}

	in.Pool.Spec.API.Enabled = ptr.To(false)
	in.Pool.Spec.Events.AllowedTargets = nil
	_, main = render(t, in, 3)
	cfg.Listeners.API, cfg.Events.AllowedTargets = "", nil
	if err := yaml.Unmarshal(main[MainFile], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listeners.API != "" || cfg.Events.AllowedTargets != nil {
		t.Errorf("api.enabled=false and no targets render listener %q, targets %v", cfg.Listeners.API, cfg.Events.AllowedTargets)
	}
}

func TestAPIURL(t *testing.T) {
	p := testPool()
	if got := APIURL(p); got != "https://transactional-relay.mail.svc:443" {
		t.Errorf("default APIURL = %s", got)
	}
	p.Spec.API.Port = 8443
	if got := APIURL(p); got != "https://transactional-relay.mail.svc:8443" {
		t.Errorf("APIURL on 8443 = %s", got)
	}
}
