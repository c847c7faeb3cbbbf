package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// nonRootUser is the Dockerfile's USER: distroless' "nonroot", so pods meet
// the restricted Pod Security Standard without a runAsUser of their own.
const nonRootUser = "65532:65532"

// defaultPath is the PATH a Dockerfile build records in every image, scratch
// included; kept so the two builds' configs match.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// epoch is every file's and the image's timestamp: the same inputs give the
// same digest, so re-importing an unchanged image is a no-op for containerd.
var epoch = time.Unix(0, 0).UTC()

// file is one regular file in an image's only layer.
type file struct {
	Path string // relative to /, e.g. "etc/ssl/certs/ca-certificates.crt"
	Data []byte
	Mode os.FileMode
}

// imageSpec is a single-layer image on an empty base.
type imageSpec struct {
	Ref        string
	Files      []file
	Entrypoint []string
	User       string
	Labels     map[string]string
}

// build assembles the image described by s.
func (s imageSpec) build() (v1.Image, error) {
	layerTar, err := layerTarball(s.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = s.Entrypoint
	cf.Config.User = s.User
	cf.Config.Env = []string{defaultPath}
	cf.Config.Labels = s.Labels
	return mutate.ConfigFile(img, cf)
}

// writeImage writes s as a docker-archive tarball (what `ctr images import`
// reads) and returns the image's digest.
func writeImage(dst string, s imageSpec) (string, error) {
	ref, err := name.NewTag(s.Ref)
	if err != nil {
		return "", err
	}
	img, err := s.build()
	if err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	// Written beside the target and renamed, so a half-written tarball is
	// never imported.
	tmp := dst + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return digest.String(), os.Rename(tmp, dst)
}

// layerTarball lays files out as a root filesystem tar: parent folders
// first (root-owned 0755, as a Dockerfile COPY creates them), then the
// files, owned by root like COPY without --chown.
func layerTarball(files []file) ([]byte, error) {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var dirList []string
	for d := range dirs {
		dirList = append(dirList, d)
	}
	// Lexical order puts "etc" before "etc/ssl": parents precede children.
	sort.Strings(dirList)
	sorted := append([]file(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirList {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX,
		}); err != nil {
			return nil, err
		}
	}
	for _, f := range sorted {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.Path, "/"), Mode: int64(f.Mode.Perm()),
			Size: int64(len(f.Data)), ModTime: epoch, Format: tar.FormatPAX,
		}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
