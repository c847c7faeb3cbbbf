package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestImageLayout(t *testing.T) {
	spec := imageSpec{
		Ref:        "localhost/test:dev",
		Entrypoint: []string{"/bin/tool"},
		User:       nonRootUser,
		Files: []file{
			{Path: "bin/tool", Data: []byte("#!binary"), Mode: 0o755},
			{Path: "etc/ssl/certs/ca.crt", Data: []byte("roots"), Mode: 0o644},
		},
	}
	dir := t.TempDir()
	digest, err := writeImage(filepath.Join(dir, "a.tar"), spec)
	if err != nil {
		t.Fatal(err)
	}
	// Same inputs, same digest: re-importing an unchanged image is a no-op.
	again, err := writeImage(filepath.Join(dir, "b.tar"), spec)
	if err != nil {
		t.Fatal(err)
	}
	if digest != again {
		t.Errorf("digest not reproducible: %s then %s", digest, again)
	}

	tag, err := name.NewTag(spec.Ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(filepath.Join(dir, "a.tar"), &tag)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/bin/tool"}) || cf.OS != "linux" {
		t.Errorf("config: user %q entrypoint %q os %q", cf.Config.User, cf.Config.Entrypoint, cf.OS)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer, got %d (%v)", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type entry struct {
		name string
		mode int64
		uid  int
		body string
	}
	var got []entry
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		got = append(got, entry{h.Name, h.Mode, h.Uid, string(body)})
	}
	want := []entry{
		{"bin/", 0o755, 0, ""},
		{"etc/", 0o755, 0, ""},
		{"etc/ssl/", 0o755, 0, ""},
		{"etc/ssl/certs/", 0o755, 0, ""},
		{"bin/tool", 0o755, 0, "#!binary"},
		{"etc/ssl/certs/ca.crt", 0o644, 0, "roots"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layer entries:\n got %v\nwant %v", got, want)
	}
}

// TestProjectImageMatchesDockerfile keeps the image the e2e runs and the
// one users build with the Dockerfile alike: the final stage's COPY
// destinations, USER and ENTRYPOINT are what projectImage lays out.
func TestProjectImageMatchesDockerfile(t *testing.T) {
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var dests []string
	var user string
	var entrypoint []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM": // only the final stage counts
			dests, user, entrypoint = nil, "", nil
		case "COPY":
			dests = append(dests, strings.TrimPrefix(fields[len(fields)-1], "/"))
		case "USER":
			user = fields[1]
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(sc.Text(), fields[0]))), &entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT is not exec form: %v", err)
			}
		}
	}
	spec := projectImage("dev", []byte("ca"), map[string][]byte{"manager": {1}, "relay": {2}})
	var paths []string
	for _, fl := range spec.Files {
		paths = append(paths, fl.Path)
	}
	sort.Strings(paths)
	sort.Strings(dests)
	if !reflect.DeepEqual(paths, dests) {
		t.Errorf("image files %v, Dockerfile copies to %v", paths, dests)
	}
	if spec.User != user {
		t.Errorf("image user %q, Dockerfile USER %q", spec.User, user)
	}
	if !reflect.DeepEqual(spec.Entrypoint, entrypoint) {
		t.Errorf("image entrypoint %q, Dockerfile ENTRYPOINT %q", spec.Entrypoint, entrypoint)
	}
}
