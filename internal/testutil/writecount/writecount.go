// Package writecount wraps a controller-runtime client and counts the
// writes made through it, so tests can prove that reconciling an unchanged
// world writes nothing.
package writecount

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// Counter counts writes by verb and kind.
type Counter struct {
	mu     sync.Mutex
	scheme *runtime.Scheme
	writes map[string]int
}

// Wrap returns a client that counts every write it passes to c.
func Wrap(c client.WithWatch, scheme *runtime.Scheme) (client.WithWatch, *Counter) {
	w := &Counter{scheme: scheme, writes: map[string]int{}}
	return interceptor.NewClient(c, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			w.add("create", obj)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			w.add("update", obj)
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			w.add("patch", obj)
			return c.Patch(ctx, obj, p, opts...)
		},
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			w.addName("apply", describe(obj))
			return c.Apply(ctx, obj, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			w.add("delete", obj)
			return c.Delete(ctx, obj, opts...)
		},
		SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj, subObj client.Object, opts ...client.SubResourceCreateOption) error {
			w.add(sub+"-create", obj)
			return c.SubResource(sub).Create(ctx, obj, subObj, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			w.add(sub+"-update", obj)
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			w.add(sub+"-patch", obj)
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
		SubResourceApply: func(ctx context.Context, c client.Client, sub string, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
			w.addName(sub+"-apply", describe(obj))
			return c.SubResource(sub).Apply(ctx, obj, opts...)
		},
	}), w
}

func (w *Counter) add(verb string, obj client.Object) {
	kind := fmt.Sprintf("%T", obj)
	if gvk, err := apiutil.GVKForObject(obj, w.scheme); err == nil {
		kind = gvk.Kind
	}
	w.addName(verb, kind+" "+obj.GetNamespace()+"/"+obj.GetName())
}

// describe names an apply configuration made from an unstructured object
// (apply.Object and apply.Status make those).
func describe(obj runtime.ApplyConfiguration) string {
	if u, ok := obj.(interface {
		GetKind() string
		GetNamespace() string
		GetName() string
	}); ok {
		return u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
	}
	return fmt.Sprintf("%T", obj)
}

func (w *Counter) addName(verb, what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes[verb+" "+what]++
}

// Total is the number of writes so far.
func (w *Counter) Total() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.writes {
		n += c
	}
	return n
}

// Reset forgets the writes counted so far.
func (w *Counter) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = map[string]int{}
}

// String lists the writes, for test failure messages.
func (w *Counter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	keys := make([]string, 0, len(w.writes))
	for k := range w.writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf("%s ×%d\n", k, w.writes[k])
	}
	return s
}

// WrapClient is Wrap for a client without Watch, such as a manager's
// cached client; Watch through the result fails.
func WrapClient(c client.Client, scheme *runtime.Scheme) (client.Client, *Counter) {
	return Wrap(noWatch{c}, scheme)
}

type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, fmt.Errorf("writecount: Watch is not supported on a wrapped cached client")
}
