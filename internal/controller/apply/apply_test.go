package apply_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/apply"
	"mailroom.io/mailroom/internal/testutil/envtest"
	"mailroom.io/mailroom/internal/testutil/writecount"
)

func TestSubset(t *testing.T) {
	for _, tc := range []struct {
		want, have any
		ok         bool
	}{
		{map[string]any{"a": "x"}, map[string]any{"a": "x", "b": "y"}, true},
		{map[string]any{"a": "x"}, map[string]any{"a": "z"}, false},
		{map[string]any{"a": map[string]any{"b": int64(1)}}, map[string]any{"a": map[string]any{"b": int64(1), "c": true}}, true},
		{map[string]any{"l": []any{"x"}}, map[string]any{"l": []any{"x", "y"}}, false},
		{map[string]any{"l": []any{}}, map[string]any{}, true},
		{map[string]any{"m": map[string]any{}}, map[string]any{}, true},
		{map[string]any{"a": "x"}, nil, false},
	} {
		if got := apply.Subset(tc.want, tc.have); got != tc.ok {
			t.Errorf("Subset(%v, %v) = %v, want %v", tc.want, tc.have, got, tc.ok)
		}
	}
}

func TestToApplyDropsWhatTheServerOwns(t *testing.T) {
	s := envtest.NewScheme()
	sd := &v1alpha1.SendingDomain{
		ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "d", ResourceVersion: "7", UID: "u", Generation: 2},
		Spec:       v1alpha1.SendingDomainSpec{Domain: "example.com"},
		Status:     v1alpha1.SendingDomainStatus{ObservedGeneration: 2},
	}
	u, err := apply.ToApply(s, sd, false)
	if err != nil {
		t.Fatal(err)
	}
	if u.GetKind() != "SendingDomain" || u.GetAPIVersion() != "mailroom.io/v1alpha1" || u.GetResourceVersion() != "" || u.GetUID() != "" || u.Object["status"] != nil {
		t.Fatalf("apply configuration %v", u.Object)
	}
	if _, ok := u.Object["metadata"].(map[string]any)["creationTimestamp"]; ok {
		t.Fatal("creationTimestamp (null) kept")
	}
	st, err := apply.ToApply(s, sd, true)
	if err != nil {
		t.Fatal(err)
	}
	if st.Object["spec"] != nil || st.Object["status"] == nil || st.GetName() != "d" {
		t.Fatalf("status apply configuration %v", st.Object)
	}
}

// TestObjectAgainstTheAPIServer checks the write decisions on a real API
// server: first apply writes, the same again does not, a changed field or
// someone else's edit writes, a stale guarded apply conflicts.
func TestObjectAgainstTheAPIServer(t *testing.T) {
	env, err := envtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	c, writes := writecount.WrapClient(env.Client, env.Scheme)
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t"}}); err != nil {
		t.Fatal(err)
	}
	desired := func(v string) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "s", Labels: map[string]string{"x": "y"}},
			Data:       map[string][]byte{"k": []byte(v)},
		}
	}
	live := func() *corev1.Secret {
		var s corev1.Secret
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "t", Name: "s"}, &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	mustApply := func(d, l client.Object, wantWrite bool) {
		t.Helper()
		wrote, err := apply.Object(ctx, c, env.Scheme, d, l)
		if err != nil {
			t.Fatal(err)
		}
		if wrote != wantWrite {
			t.Fatalf("wrote %v, want %v (%s)", wrote, wantWrite, writes)
		}
	}

	var none *corev1.Secret // a typed nil, as callers pass it
	mustApply(desired("1"), none, true)
	got := live()
	if got.Labels[apply.ManagedByLabel] != apply.ManagedByValue || got.Annotations[apply.HashAnnotation] == "" {
		t.Fatalf("labels %v annotations %v: every Secret mailroom writes carries the managed-by label and the hash", got.Labels, got.Annotations)
	}
	if !apply.Owns(got, "data", "k") || apply.Owns(got, "data", "other") {
		t.Fatal("Owns does not follow managedFields")
	}
	writes.Reset()
	for range 3 {
		mustApply(desired("1"), live(), false)
	}
	if writes.Total() != 0 {
		t.Fatalf("writes to an unchanged object:\n%s", writes)
	}
	mustApply(desired("2"), live(), true)

	// Someone else changes a field mailroom sets: the hash still matches,
	// the value does not, so it is applied back.
	edited := live()
	edited.Data["k"] = []byte("theirs")
	if err := env.Client.Update(ctx, edited); err != nil {
		t.Fatal(err)
	}
	mustApply(desired("2"), live(), true)
	if string(live().Data["k"]) != "2" {
		t.Fatal("someone else's edit was not undone")
	}

	// A guarded apply with a stale read conflicts.
	stale := live()
	mustApply(desired("3"), live(), true)
	if _, err := apply.Guarded(ctx, c, env.Scheme, desired("4"), stale); !apierrors.IsConflict(err) {
		t.Fatalf("guarded apply over a stale read: %v, want a Conflict", err)
	}
	if wrote, err := apply.Guarded(ctx, c, env.Scheme, desired("4"), live()); err != nil || !wrote {
		t.Fatalf("guarded apply over a fresh read: %v %v", wrote, err)
	}
}
