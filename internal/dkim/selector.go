package dkim

import (
	"strconv"
	"time"
)

// selectorPrefix marks selectors mailroom generated, so people reading a
// zone can tell them from selectors other senders use.
const selectorPrefix = "mr-"

// NewSelector names a new key after the UTC day it is made on,
// "mr-20261125". When that name is taken (a second key the same day, which
// short rotation intervals and manual rotations produce) it appends a
// counter: "mr-20261125-2", "mr-20261125-3", … taken must report every
// selector the domain uses or used recently, so that a resolver still
// caching a withdrawn key never sees its selector reused.
func NewSelector(now time.Time, taken func(selector string) bool) string {
	base := selectorPrefix + now.UTC().Format("20060102")
	if !taken(base) {
		return base
	}
	for n := 2; ; n++ {
		s := base + "-" + strconv.Itoa(n)
		if !taken(s) {
			return s
		}
	}
}
