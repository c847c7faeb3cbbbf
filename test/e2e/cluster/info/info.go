// Package info is the contract between the node harness (hack/cluster, which
// writes <run folder>/cluster.json when the node is up) and the e2e suites
// (test/e2e/cluster, which read it): where the kubeconfig and kubectl are,
// the node's addresses, the storage class, the imported images and every
// component's log.
package info

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// FileName is the file in the run folder.
const FileName = "cluster.json"

// Info describes a running node.
type Info struct {
	Dir           string            `json:"dir"`
	Kubeconfig    string            `json:"kubeconfig"` // admin (system:masters) kubeconfig
	Kubectl       string            `json:"kubectl"`    // the v1.37.2 build, not the distro's
	NodeName      string            `json:"nodeName"`
	NodeIP        string            `json:"nodeIP"` // host servers pods must reach listen here
	PodCIDR       string            `json:"podCIDR"`
	ServiceCIDR   string            `json:"serviceCIDR"`
	ClusterDNS    string            `json:"clusterDNS"`
	ClusterDomain string            `json:"clusterDomain"`
	StorageClass  string            `json:"storageClass"` // default class; hostPath PVs
	Images        []Image           `json:"images"`
	Logs          map[string]string `json:"logs"` // component name -> log file
}

// Image is an image imported into the node's containerd.
type Image struct {
	Ref string `json:"ref"`
	// Missing names optional binaries the image was built without
	// (e.g. "relay" while cmd/relay does not compile).
	Missing []string `json:"missing,omitempty"`
}

// Load reads the Info of the node whose run folder is dir.
func Load(dir string) (*Info, error) {
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		return nil, fmt.Errorf("no running node in %s: %w", dir, err)
	}
	var i Info
	if err := json.Unmarshal(data, &i); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, FileName), err)
	}
	return &i, nil
}

// Write stores i in its run folder.
func (i *Info) Write() error {
	data, err := json.MarshalIndent(i, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(i.Dir, FileName), append(data, '\n'), 0o644)
}
