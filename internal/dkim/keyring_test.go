package dkim_test

import (
	"crypto"
	"crypto/rand"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/dkim"
)

var day0 = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

func newEd25519(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := dkim.Generate(dkim.Ed25519, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func selectors(t *testing.T, k *dkim.Keyring) []string {
	t.Helper()
	pub, err := k.Published()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pub {
		out = append(out, string(p.Role)+":"+p.Selector)
	}
	return out
}

func TestNewKeyringUsesTheSpecSelectorOrADatedOne(t *testing.T) {
	k := dkim.NewKeyring("example.test", "mail2026", newEd25519(t), day0)
	if k.Active.Selector != "mail2026" || !k.Active.Activated.Equal(day0) {
		t.Fatalf("active = %+v", k.Active)
	}
	k = dkim.NewKeyring("example.test", "", newEd25519(t), day0, "mr-20261125")
	if k.Active.Selector != "mr-20261125-2" {
		t.Fatalf("selector %q, want mr-20261125-2 (mr-20261125 was to be avoided)", k.Active.Selector)
	}
}

func TestRotationStepsKeepEverySigningKeyPublished(t *testing.T) {
	first := newEd25519(t)
	k := dkim.NewKeyring("example.test", "", first, day0)
	if got := selectors(t, k); !slices.Equal(got, []string{"active:mr-20261125"}) {
		t.Fatalf("new keyring publishes %q", got)
	}

	if err := k.AddNext(newEd25519(t), day0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := k.AddNext(newEd25519(t), day0.Add(time.Hour)); err == nil {
		t.Fatal("a second next key was accepted")
	}
	if got := selectors(t, k); !slices.Equal(got, []string{"active:mr-20261125", "next:mr-20261125-2"}) {
		t.Fatalf("after AddNext: %q", got)
	}

	switchAt := day0.Add(2 * time.Hour)
	if err := k.Activate(switchAt); err != nil {
		t.Fatal(err)
	}
	if got := selectors(t, k); !slices.Equal(got, []string{"active:mr-20261125-2", "retiring:mr-20261125"}) {
		t.Fatalf("after Activate: %q", got)
	}
	if !k.Active.Activated.Equal(switchAt) || !k.Retiring[0].Retired.Equal(switchAt) {
		t.Fatalf("switch times: active %v, retired %v", k.Active.Activated, k.Retiring[0].Retired)
	}
	oldRecord, _ := dkim.RecordText(first)
	if k.Retiring[0].Record != oldRecord {
		t.Fatal("the retiring record is not the old key's record")
	}
	if err := k.Activate(switchAt); err == nil {
		t.Fatal("Activate without a next key succeeded")
	}

	// Withdrawing the active selector is not possible: only retiring ones
	// are matched.
	k.Withdraw("mr-20261125-2", "mr-20261125")
	if got := selectors(t, k); !slices.Equal(got, []string{"active:mr-20261125-2"}) {
		t.Fatalf("after Withdraw: %q", got)
	}
	// The withdrawn selector is not reused the same day.
	if err := k.AddNext(newEd25519(t), switchAt); err != nil {
		t.Fatal(err)
	}
	if k.Next.Selector != "mr-20261125-3" {
		t.Fatalf("next selector %q reuses or skips; want mr-20261125-3", k.Next.Selector)
	}
}

func TestSecretDataRoundTrips(t *testing.T) {
	k := dkim.NewKeyring("example.test", "", testKey(t, dkim.RSA2048), day0)
	if err := k.AddNext(newEd25519(t), day0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := k.Activate(day0.Add(2 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := k.AddNext(testKey(t, dkim.RSA3072), day0.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}

	data, err := k.SecretData()
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{dkim.SecretSelector, dkim.SecretPrivateKey, dkim.SecretRecord, dkim.SecretNextSelector, dkim.SecretNextPrivateKey, dkim.SecretNextRecord, dkim.SecretKeyring} {
		if len(data[field]) == 0 {
			t.Errorf("Secret data lacks %s", field)
		}
	}
	if strings.Contains(string(data[dkim.SecretKeyring]), "PRIVATE") {
		t.Error("keyring.json holds private key material")
	}

	back, err := dkim.ParseSecretData(data)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(selectors(t, back), selectors(t, k)) {
		t.Fatalf("published after round trip %q, before %q", selectors(t, back), selectors(t, k))
	}
	if back.Domain != "example.test" || !back.Active.Activated.Equal(day0.Add(2*time.Minute)) || !back.Next.Created.Equal(day0.Add(3*time.Minute)) {
		t.Fatalf("metadata lost: %+v", back)
	}

	// Encoding the decoded keyring gives the same bytes: a controller that
	// re-reads and re-writes an unchanged keyring writes nothing new.
	again, err := back.SecretData()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(data, again, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatal("re-encoding an unchanged keyring changed the Secret data")
	}
}

func TestParseSecretDataNamesWhatIsBroken(t *testing.T) {
	k := dkim.NewKeyring("example.test", "", newEd25519(t), day0)
	if err := k.AddNext(newEd25519(t), day0); err != nil {
		t.Fatal(err)
	}
	good, err := k.SecretData()
	if err != nil {
		t.Fatal(err)
	}
	otherRecord, _ := dkim.RecordText(newEd25519(t))

	for _, tc := range []struct {
		name  string
		edit  func(map[string][]byte)
		field string
	}{
		{"no key", func(d map[string][]byte) { delete(d, dkim.SecretPrivateKey) }, dkim.SecretPrivateKey},
		{"no selector", func(d map[string][]byte) { delete(d, dkim.SecretSelector) }, dkim.SecretSelector},
		{"key not PEM", func(d map[string][]byte) { d[dkim.SecretPrivateKey] = []byte("oops") }, dkim.SecretPrivateKey},
		{"record for another key", func(d map[string][]byte) { d[dkim.SecretRecord] = []byte(otherRecord) }, dkim.SecretRecord},
		{"selector edited", func(d map[string][]byte) { d[dkim.SecretSelector] = []byte("other") }, dkim.SecretKeyring},
		{"keyring not JSON", func(d map[string][]byte) { d[dkim.SecretKeyring] = []byte("{") }, dkim.SecretKeyring},
		{"next key half gone", func(d map[string][]byte) { delete(d, dkim.SecretNextSelector) }, dkim.SecretNextSelector},
		{"next record for another key", func(d map[string][]byte) { d[dkim.SecretNextRecord] = []byte(otherRecord) }, dkim.SecretNextRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := maps.Clone(good)
			tc.edit(data)
			_, err := dkim.ParseSecretData(data)
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("error leaks key material: %q", err)
			}
		})
	}
}

func TestParseSecretDataAdoptsAKeyMadeElsewhere(t *testing.T) {
	pemBytes, _ := dkim.MarshalPrivateKey(testKey(t, dkim.RSA2048))
	k, err := dkim.ParseSecretData(map[string][]byte{
		dkim.SecretSelector:   []byte("legacy\n"),
		dkim.SecretPrivateKey: pemBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	if k.Active.Selector != "legacy" || k.Domain != "" || !k.Active.Activated.IsZero() {
		t.Fatalf("adopted keyring %+v", k)
	}
}
