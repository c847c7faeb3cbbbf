package relaypool

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"mailroom.io/mailroom/internal/relayconfig"
)

// RelayStatus is what a relay reports on GET /status.
type RelayStatus struct {
	Revision     int64  `json:"revision"`
	ConfigDigest string `json:"configDigest"`
	Ready        bool   `json:"ready"`
	Draining     bool   `json:"draining"`
	Drained      bool   `json:"drained"`
	Queued       int    `json:"queued"`
}

// StatusReader asks one relay pod for its status.
type StatusReader interface {
	Read(ctx context.Context, pod *corev1.Pod) (RelayStatus, error)
}

// HTTPStatusReader reads /status from the pod's IP.
type HTTPStatusReader struct {
	// Port is the relay's HTTP port; 0 means relayconfig.HTTPPort.
	Port   int
	Client *http.Client
}

// Read implements StatusReader.
func (h HTTPStatusReader) Read(ctx context.Context, pod *corev1.Pod) (RelayStatus, error) {
	if pod.Status.PodIP == "" {
		return RelayStatus{}, fmt.Errorf("pod %s has no IP", pod.Name)
	}
	port := h.Port
	if port == 0 {
		port = relayconfig.HTTPPort
	}
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 3 * time.Second}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port))+"/status", nil)
	if err != nil {
		return RelayStatus{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return RelayStatus{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return RelayStatus{}, fmt.Errorf("pod %s: /status answered %s", pod.Name, resp.Status)
	}
	var st RelayStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return RelayStatus{}, fmt.Errorf("pod %s: /status: %w", pod.Name, err)
	}
	return st, nil
}

// podReady is the pod's Ready condition.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
