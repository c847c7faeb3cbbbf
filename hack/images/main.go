// Command images builds mailroom's container images without a container
// engine or a registry: it compiles static Go binaries and lays them out
// with go-containerregistry as single-layer images on an empty base, written
// as tarballs that `ctr images import` loads into the local node's
// containerd.
//
// The project image has the layout the Dockerfile produces (/manager and
// /relay at the root, the CA bundle, USER 65532:65532, ENTRYPOINT
// ["/manager"]), so the e2e runs what users run. Beside it: the pod sandbox
// ("pause") image, the e2e helper, and CoreDNS and external-dns when their
// binaries are given.
//
//	go run ./hack/images -out bin/images [-require relay] [-coredns bin/coredns/v1.15.0/coredns] \
//	    [-external-dns bin/external-dns/v0.21.0-mailroom.1/external-dns]
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

// binary is one Go command compiled into an image.
type binary struct {
	name string // path in the image, without the leading slash
	pkg  string // Go package, relative to the module root
	// optional binaries may fail to compile (a command still being written);
	// the image is then built without them, loudly, unless -require names them.
	optional bool
}

func run(args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	out := fs.String("out", "bin/images", "folder the image tarballs and images.json are written to")
	tag := fs.String("tag", "dev", "tag of every image built from this tree")
	require := fs.String("require", "", "comma-separated optional binaries that must compile (e.g. relay); without it a failing one is reported and left out")
	coredns := fs.String("coredns", "", "static CoreDNS binary to wrap as localhost/coredns:<its version folder>; empty: no CoreDNS image")
	externalDNS := fs.String("external-dns", "", "static external-dns binary (hack/build-external-dns.sh patched) to wrap as localhost/external-dns:<its version folder>; empty: no external-dns image")
	caBundle := fs.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA roots copied to the same path in the project image, as the Dockerfile does")
	if err := fs.Parse(args); err != nil {
		return err
	}
	required := map[string]bool{}
	for _, r := range strings.Split(*require, ",") {
		if r = strings.TrimSpace(r); r != "" {
			required[r] = true
		}
	}
	for r := range required {
		if r != "relay" {
			return fmt.Errorf("-require %s: only optional binaries (relay) can be required", r)
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "mailroom-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var built []builtImage
	var missing []string

	// The project image: the same two binaries, flags and paths as the Dockerfile.
	ca, err := os.ReadFile(*caBundle)
	if err != nil {
		return fmt.Errorf("CA bundle for the project image: %w", err)
	}
	binaries := map[string][]byte{}
	for _, b := range []binary{
		{name: "manager", pkg: "./cmd/manager"},
		{name: "relay", pkg: "./cmd/relay", optional: true},
	} {
		data, err := goBuild(root, work, b.pkg, []string{"-ldflags", "-s -w -X main.version=" + *tag})
		if err != nil {
			if !b.optional || required[b.name] {
				return fmt.Errorf("%s: %w", b.pkg, err)
			}
			fmt.Fprintf(os.Stderr, "images: WARNING: %s does not build, so localhost/mailroom:%s has no /%s (pass -require %s to make this fatal):\n%s\n",
				b.pkg, *tag, b.name, b.name, indent(err.Error()))
			missing = append(missing, b.name)
			continue
		}
		binaries[b.name] = data
	}
	project := projectImage(*tag, ca, binaries)
	built = append(built, builtImage{spec: project, file: "mailroom.tar", Missing: missing})

	// The pod sandbox image (containerd's sandbox_image points here, so the
	// node never needs an image from outside the machine) and the e2e helper.
	for _, h := range []struct{ name, pkg, file string }{
		{"pause", "./hack/images/pause", "pause.tar"},
		{"e2e-helper", "./test/e2e/cluster/helper", "e2e-helper.tar"},
	} {
		data, err := goBuild(root, work, h.pkg, []string{"-ldflags", "-s -w"})
		if err != nil {
			return fmt.Errorf("%s: %w", h.pkg, err)
		}
		built = append(built, builtImage{file: h.file, spec: imageSpec{
			Ref:        "localhost/" + h.name + ":" + *tag,
			Entrypoint: []string{"/" + h.name},
			User:       nonRootUser,
			Files:      []file{{Path: h.name, Data: data, Mode: 0o755}},
		}})
	}

	if *coredns != "" {
		data, err := os.ReadFile(*coredns)
		if err != nil {
			return fmt.Errorf("CoreDNS binary: %w", err)
		}
		// bin/coredns/<version>/coredns: the folder names the version.
		version := filepath.Base(filepath.Dir(*coredns))
		built = append(built, builtImage{file: "coredns.tar", spec: imageSpec{
			Ref:        "localhost/coredns:" + version,
			Entrypoint: []string{"/coredns"},
			User:       nonRootUser,
			Files:      []file{{Path: "coredns", Data: data, Mode: 0o755}},
		}})
	}

	if *externalDNS != "" {
		data, err := os.ReadFile(*externalDNS)
		if err != nil {
			return fmt.Errorf("external-dns binary: %w", err)
		}
		// bin/external-dns/<version>/external-dns, e.g. v0.21.0-mailroom.1.
		// The CA roots too: a DNS provider's API is usually HTTPS.
		version := filepath.Base(filepath.Dir(*externalDNS))
		built = append(built, builtImage{file: "external-dns.tar", spec: imageSpec{
			Ref:        "localhost/external-dns:" + version,
			Entrypoint: []string{"/external-dns"},
			User:       nonRootUser,
			Files: []file{
				{Path: "external-dns", Data: data, Mode: 0o755},
				{Path: strings.TrimPrefix(*caBundle, "/"), Data: ca, Mode: 0o644},
			},
		}})
	}

	var index []builtImage
	for _, b := range built {
		digest, err := writeImage(filepath.Join(*out, b.file), b.spec)
		if err != nil {
			return fmt.Errorf("%s: %w", b.spec.Ref, err)
		}
		b.Ref, b.File, b.Digest = b.spec.Ref, b.file, digest
		fmt.Printf("images: %s %s -> %s\n", b.Ref, digest, filepath.Join(*out, b.file))
		index = append(index, b)
	}
	// images.json tells the cluster harness what it imports and the suites
	// which references exist (and which optional binaries are missing).
	data, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*out, "images.json"), append(data, '\n'), 0o644)
}

// builtImage is one entry of images.json.
type builtImage struct {
	spec    imageSpec
	file    string
	Ref     string   `json:"ref"`
	File    string   `json:"file"`
	Digest  string   `json:"digest"`
	Missing []string `json:"missing,omitempty"`
}

// goBuild compiles pkg as a static binary (no libc in the image) and returns it.
func goBuild(root, work, pkg string, extra []string) ([]byte, error) {
	out := filepath.Join(work, strings.NewReplacer("/", "_", ".", "_").Replace(pkg))
	args := append([]string{"build", "-trimpath", "-o", out}, extra...)
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build failed: %v\n%s", err, strings.TrimSpace(string(msg)))
	}
	return os.ReadFile(out)
}

// moduleRoot is the folder of mailroom's go.mod, so the tool works from any
// working directory inside the tree.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the mailroom module")
	}
	return filepath.Dir(gomod), nil
}

// projectImage lays out the project image as the Dockerfile's final stage
// does: the CA bundle, /manager and /relay at the root, USER 65532:65532,
// ENTRYPOINT ["/manager"]. TestProjectImageMatchesDockerfile holds the two
// together.
func projectImage(tag string, ca []byte, binaries map[string][]byte) imageSpec {
	s := imageSpec{
		Ref:        "localhost/mailroom:" + tag,
		Entrypoint: []string{"/manager"},
		User:       nonRootUser,
		Files:      []file{{Path: "etc/ssl/certs/ca-certificates.crt", Data: ca, Mode: 0o644}},
	}
	var names []string
	for _, name := range []string{"manager", "relay"} {
		if data, ok := binaries[name]; ok {
			s.Files = append(s.Files, file{Path: name, Data: data, Mode: 0o755})
			names = append(names, name)
		}
	}
	// Which binaries the image holds, for whoever inspects it.
	s.Labels = map[string]string{"io.mailroom.binaries": strings.Join(names, ",")}
	return s
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
