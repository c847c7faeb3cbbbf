package main

import (
	"context"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// defaultRelayImage is used outside a pod when --relay-image is not given.
const defaultRelayImage = "localhost/mailroom:dev"

// ownImage is the image of the manager's own container, read from its Pod
// (POD_NAME and POD_NAMESPACE come from the downward API): the relay binary
// ships in the same image, so pools run the relay matching the operator.
func ownImage(ctx context.Context, c client.Reader) string {
	name, ns := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	if name == "" || ns == "" {
		return defaultRelayImage
	}
	var pod corev1.Pod
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &pod); err != nil {
		return defaultRelayImage
	}
	for _, ctr := range pod.Spec.Containers {
		if ctr.Name == "manager" {
			return ctr.Image
		}
	}
	return defaultRelayImage
}
