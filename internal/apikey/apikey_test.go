package apikey

import (
	"strings"
	"testing"
)

func TestNewKeysNameTheirUserAndDiffer(t *testing.T) {
	a, err := New("shop.shop")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New("shop.shop")
	if a == b {
		t.Fatal("two keys are equal")
	}
	if u, ok := User(a); !ok || u != "shop.shop" {
		t.Fatalf("User(%q) = %q, %v", a, u, ok)
	}
}

func TestUserRefusesWhatIsNotAKey(t *testing.T) {
	good, _ := New("app.ns")
	for name, key := range map[string]string{
		"empty":          "",
		"no prefix":      strings.TrimPrefix(good, "mrk."),
		"other prefix":   "sk_" + strings.TrimPrefix(good, "mrk."),
		"no secret":      "mrk.YXBw",
		"empty secret":   "mrk.YXBw.",
		"short secret":   "mrk.YXBw.c2VjcmV0",
		"extra part":     good + ".x",
		"bad base64":     "mrk.!!!." + good[len(good)-43:],
		"empty username": "mrk.." + good[len(good)-43:],
	} {
		t.Run(name, func(t *testing.T) {
			if u, ok := User(key); ok {
				t.Fatalf("User(%q) = %q, true; want false", key, u)
			}
		})
	}
}
