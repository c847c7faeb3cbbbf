package v1alpha1_test

import (
	"fmt"
	"os"
	"testing"

	"mailroom.io/mailroom/internal/testutil/envtest"
)

// env is the real kube-apiserver every test in this package talks to.
var env *envtest.Env

func TestMain(m *testing.M) {
	var err error
	env, err = envtest.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("envtest: api/v1alpha1 validated against kube-apiserver %s\n", env.Version)
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}
