// Package apply writes the objects mailroom owns with server-side apply under
// one field owner, and skips the write when the live object already says
// what mailroom would apply: a reconcile of an unchanged world makes zero
// writes.
//
// Skipping is decided by two facts together: the live object carries the
// hash of the last applied configuration (so a field mailroom stopped
// setting is noticed), and every field mailroom sets has the wanted value
// on the live object (so someone else's edit to one of them is undone).
// Fields the API server defaults or others own are left alone.
package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// FieldOwner is the field manager of every write mailroom makes.
const FieldOwner = "mailroom"

// HashAnnotation holds the hash of the configuration mailroom last applied.
const HashAnnotation = "mailroom.io/applied-hash"

// ManagedByLabel, set to ManagedByValue, marks every Secret mailroom
// writes: the manager caches only Secrets carrying it, so Object sets it on
// every Secret it applies.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "mailroom"
)

// Object applies desired unless live (the object as read, nil or with an
// empty resourceVersion when absent) already matches it. desired must be a
// typed object of a kind registered in scheme; its status is ignored. It
// reports whether it wrote.
func Object(ctx context.Context, c client.Client, scheme *runtime.Scheme, desired, live client.Object) (bool, error) {
	return object(ctx, c, scheme, desired, live, false)
}

// Guarded is Object with optimistic concurrency: the apply carries live's
// resourceVersion, so it fails with a Conflict (apierrors.IsConflict) when
// the object changed since live was read, for content that must not be
// written over blindly (a DKIM keyring). With live absent it creates.
func Guarded(ctx context.Context, c client.Client, scheme *runtime.Scheme, desired, live client.Object) (bool, error) {
	return object(ctx, c, scheme, desired, live, true)
}

func object(ctx context.Context, c client.Client, scheme *runtime.Scheme, desired, live client.Object, guard bool) (bool, error) {
	if isNil(live) {
		// Also a typed nil (a nil *corev1.Secret passed as client.Object).
		live = nil
	}
	u, err := ToApply(scheme, desired, false)
	if err != nil {
		return false, err
	}
	if u.GetAPIVersion() == "v1" && u.GetKind() == "Secret" {
		labels := u.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[ManagedByLabel] = ManagedByValue
		u.SetLabels(labels)
	}
	hash, err := Hash(u.Object)
	if err != nil {
		return false, err
	}
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[HashAnnotation] = hash
	u.SetAnnotations(ann)
	if live != nil && live.GetResourceVersion() != "" && live.GetAnnotations()[HashAnnotation] == hash {
		have, err := runtime.DefaultUnstructuredConverter.ToUnstructured(live)
		if err != nil {
			return false, err
		}
		// A typed object read from the API server (not the cache) has no
		// apiVersion and kind; they are not what is compared.
		have["apiVersion"], have["kind"] = u.GetAPIVersion(), u.GetKind()
		if Subset(u.Object, have) {
			return false, nil
		}
	}
	if guard && live != nil && live.GetResourceVersion() != "" {
		// Not part of the hash: it changes with every write.
		u.SetResourceVersion(live.GetResourceVersion())
	}
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("applying %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return true, nil
}

// Status applies obj's whole status through the status subresource. The
// caller decides whether it changed (comparing old and new status); status
// has one writer, so there is nothing to merge and nothing to conflict on.
func Status(ctx context.Context, c client.Client, scheme *runtime.Scheme, obj client.Object) error {
	u, err := ToApply(scheme, obj, true)
	if err != nil {
		return err
	}
	if err := c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying status of %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

// Owns reports whether mailroom's applies own the field at path (such as
// "data", "key.pem") of obj, going by obj's managedFields: a field it owns
// disappears when an apply leaves it out; one another manager owns stays.
// Without managedFields (stripped by a cache) it reports false.
func Owns(obj client.Object, path ...string) bool {
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager != FieldOwner || mf.Operation != metav1.ManagedFieldsOperationApply || mf.Subresource != "" || mf.FieldsV1 == nil {
			continue
		}
		var cur any
		if err := json.Unmarshal(mf.FieldsV1.Raw, &cur); err != nil {
			continue
		}
		found := true
		for _, p := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				found = false
				break
			}
			if cur, ok = m["f:"+p]; !ok {
				found = false
				break
			}
		}
		if found {
			return true
		}
	}
	return false
}

// ToApply turns a typed object into an apply configuration: apiVersion and
// kind set, nulls (such as creationTimestamp) dropped, and either no status
// (statusOnly false) or only identity and status (statusOnly true).
func ToApply(scheme *runtime.Scheme, obj client.Object, statusOnly bool) (*unstructured.Unstructured, error) {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return nil, err
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	if statusOnly {
		m = map[string]any{
			"metadata": map[string]any{"name": obj.GetName(), "namespace": obj.GetNamespace()},
			"status":   m["status"],
		}
	} else {
		delete(m, "status")
	}
	pruneNulls(m)
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	// Identity and bookkeeping the server owns never go into an apply.
	for _, f := range []string{"resourceVersion", "uid", "generation", "managedFields", "creationTimestamp"} {
		unstructured.RemoveNestedField(u.Object, "metadata", f)
	}
	return u, nil
}

// Hash is a short stable hash of an apply configuration.
func Hash(m map[string]any) (string, error) {
	b, err := json.Marshal(m) // map keys are sorted: stable
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// Subset reports whether every field of want is present in have with the
// same value; lists must have the same length and match element by element.
func Subset(want, have any) bool {
	switch w := want.(type) {
	case map[string]any:
		if len(w) == 0 {
			return true
		}
		h, ok := have.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range w {
			if !Subset(v, h[k]) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return len(w) == 0 && have == nil
		}
		for i := range w {
			if !Subset(w[i], h[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(want, have)
	}
}

func pruneNulls(m map[string]any) {
	for k, v := range m {
		switch x := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			pruneNulls(x)
		case []any:
			for _, e := range x {
				if em, ok := e.(map[string]any); ok {
					pruneNulls(em)
				}
			}
		}
	}
}

// isNil is true for a nil interface and for a typed nil pointer in one.
func isNil(o client.Object) bool {
	if o == nil {
		return true
	}
	v := reflect.ValueOf(o)
	return v.Kind() == reflect.Pointer && v.IsNil()
}
