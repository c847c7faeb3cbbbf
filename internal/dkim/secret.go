package dkim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Keys of the domain's DKIM Secret. The active key sits under plain names so
// that the relay and people reading the Secret find the selector, the key
// and its DNS record side by side; the next key repeats them with a "next."
// prefix. keyring.json holds the schedule (times, retiring records, history)
// and never any private key material.
const (
	SecretSelector       = "selector"
	SecretPrivateKey     = "key.pem"
	SecretRecord         = "record.txt"
	SecretNextSelector   = "next.selector"
	SecretNextPrivateKey = "next.key.pem"
	SecretNextRecord     = "next.record.txt"
	SecretKeyring        = "keyring.json"
)

// keyringJSON is the schedule part of a keyring. Times are whole seconds in
// RFC 3339 so that encoding the same keyring twice gives the same bytes
// (the controller relies on that to write nothing when nothing changed).
type keyringJSON struct {
	Domain    string         `json:"domain"`
	Active    keyJSON        `json:"active"`
	Next      *keyJSON       `json:"next,omitempty"`
	Retiring  []retiringJSON `json:"retiring,omitempty"`
	Withdrawn []string       `json:"withdrawn,omitempty"`
}

type keyJSON struct {
	Selector  string `json:"selector"`
	Created   string `json:"created"`
	Activated string `json:"activated,omitempty"`
}

type retiringJSON struct {
	Selector string `json:"selector"`
	Record   string `json:"record"`
	Retired  string `json:"retired"`
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Truncate(time.Second).Format(time.RFC3339)
}

func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", field, err)
	}
	return t, nil
}

// SecretData encodes the keyring as the data of the domain's Secret.
func (k *Keyring) SecretData() (map[string][]byte, error) {
	data := map[string][]byte{}
	meta := keyringJSON{
		Domain:    k.Domain,
		Active:    keyJSON{Selector: k.Active.Selector, Created: formatTime(k.Active.Created), Activated: formatTime(k.Active.Activated)},
		Withdrawn: k.Withdrawn,
	}
	if err := putKey(data, k.Active, SecretSelector, SecretPrivateKey, SecretRecord); err != nil {
		return nil, fmt.Errorf("active key: %w", err)
	}
	if k.Next != nil {
		meta.Next = &keyJSON{Selector: k.Next.Selector, Created: formatTime(k.Next.Created)}
		if err := putKey(data, *k.Next, SecretNextSelector, SecretNextPrivateKey, SecretNextRecord); err != nil {
			return nil, fmt.Errorf("next key: %w", err)
		}
	}
	for _, r := range k.Retiring {
		meta.Retiring = append(meta.Retiring, retiringJSON{Selector: r.Selector, Record: r.Record, Retired: formatTime(r.Retired)})
	}
	js, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	data[SecretKeyring] = js
	return data, nil
}

func putKey(data map[string][]byte, key Key, selField, keyField, recField string) error {
	pemBytes, err := MarshalPrivateKey(key.Signer)
	if err != nil {
		return err
	}
	rec, err := key.Record()
	if err != nil {
		return err
	}
	data[selField] = []byte(key.Selector)
	data[keyField] = pemBytes
	data[recField] = []byte(rec)
	return nil
}

// ParseSecretData reads a keyring from a Secret's data and checks it is
// whole: each private key parses, the record text beside it is the key's
// record and the selectors agree with keyring.json. Errors name the Secret
// key at fault and never include key material.
//
// A Secret holding only selector and key.pem (a key made outside mailroom)
// is adopted: its times are zero and the caller fills them in, for example
// from the Secret's creation time.
func ParseSecretData(data map[string][]byte) (*Keyring, error) {
	active, err := readKey(data, SecretSelector, SecretPrivateKey, SecretRecord)
	if err != nil {
		return nil, err
	}
	k := &Keyring{Active: active}
	raw, ok := data[SecretKeyring]
	if !ok {
		if _, hasNext := data[SecretNextPrivateKey]; hasNext {
			return nil, fmt.Errorf("%s: missing, but %s is present", SecretKeyring, SecretNextPrivateKey)
		}
		return k, nil
	}
	var meta keyringJSON
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&meta); err != nil {
		return nil, fmt.Errorf("%s: %w", SecretKeyring, err)
	}
	if meta.Active.Selector != active.Selector {
		return nil, fmt.Errorf("%s: active selector %q, but %s is %q", SecretKeyring, meta.Active.Selector, SecretSelector, active.Selector)
	}
	k.Domain, k.Withdrawn = meta.Domain, meta.Withdrawn
	if k.Active.Created, err = parseTime(SecretKeyring+": active.created", meta.Active.Created); err != nil {
		return nil, err
	}
	if k.Active.Activated, err = parseTime(SecretKeyring+": active.activated", meta.Active.Activated); err != nil {
		return nil, err
	}

	_, hasNext := data[SecretNextPrivateKey]
	switch {
	case meta.Next == nil && hasNext:
		return nil, fmt.Errorf("%s: no next key, but %s is present", SecretKeyring, SecretNextPrivateKey)
	case meta.Next != nil:
		next, err := readKey(data, SecretNextSelector, SecretNextPrivateKey, SecretNextRecord)
		if err != nil {
			return nil, err
		}
		if meta.Next.Selector != next.Selector {
			return nil, fmt.Errorf("%s: next selector %q, but %s is %q", SecretKeyring, meta.Next.Selector, SecretNextSelector, next.Selector)
		}
		if next.Created, err = parseTime(SecretKeyring+": next.created", meta.Next.Created); err != nil {
			return nil, err
		}
		k.Next = &next
	}
	for i, r := range meta.Retiring {
		retired, err := parseTime(fmt.Sprintf("%s: retiring[%d].retired", SecretKeyring, i), r.Retired)
		if err != nil {
			return nil, err
		}
		if r.Selector == "" || !strings.HasPrefix(r.Record, "v=DKIM1;") {
			return nil, fmt.Errorf("%s: retiring[%d] is not a selector with a DKIM record", SecretKeyring, i)
		}
		k.Retiring = append(k.Retiring, RetiringKey{Selector: r.Selector, Record: r.Record, Retired: retired})
	}
	return k, nil
}

func readKey(data map[string][]byte, selField, keyField, recField string) (Key, error) {
	sel := strings.TrimSpace(string(data[selField]))
	if sel == "" {
		return Key{}, fmt.Errorf("%s: missing", selField)
	}
	pemBytes, ok := data[keyField]
	if !ok {
		return Key{}, fmt.Errorf("%s: missing", keyField)
	}
	signer, err := ParsePrivateKey(pemBytes)
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", keyField, err)
	}
	key := Key{Selector: sel, Signer: signer}
	if rec, ok := data[recField]; ok {
		want, err := key.Record()
		if err != nil {
			return Key{}, fmt.Errorf("%s: %w", keyField, err)
		}
		if strings.TrimSpace(string(rec)) != want {
			return Key{}, fmt.Errorf("%s: does not match the key in %s", recField, keyField)
		}
	}
	return key, nil
}
