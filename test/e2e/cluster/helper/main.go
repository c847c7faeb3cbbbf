// Command e2e-helper is the small static program the cluster e2e suite runs
// in pods (image localhost/e2e-helper:dev): an HTTP server that stores files
// on the pod's volume, and a client the suite runs with `kubectl exec` to
// reach Services by DNS name from inside a pod (the image has no shell or
// curl), and an SMTP submission client an application pod runs with the
// credential Secret of an SMTPCredential in its environment; and, for the
// HTTP API and delivery events, a client of the relay's API and a webhook
// receiver that verifies Standard Webhooks signatures.
//
//	e2e-helper serve -listen :8080 -data /data
//	e2e-helper get http://helper.ns.svc.cluster.local:8080/healthz
//	e2e-helper submit -from app@example.com -to rcpt@example.net -subject S
//	e2e-helper hooks -listen :8080 -path /hooks
//	e2e-helper api-send -from app@example.com -to rcpt@example.net -subject S
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: e2e-helper serve|get|submit|hooks|api-send ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "get":
		err = get(os.Args[2:])
	case "submit":
		err = submit(os.Args[2:])
	case "hooks":
		err = hooks(os.Args[2:])
	case "api-send":
		err = apiSend(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e-helper:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "HTTP listen address")
	data := fs.String("data", "/data", "folder files are stored in (the pod's volume)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	h, err := os.Hostname()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// whoami proves which pod answered and that it runs as non-root.
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s uid=%d gid=%d\n", h, os.Getuid(), os.Getgid())
	})
	mux.HandleFunc("PUT /files/{name}", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := writeFileSync(filepath.Join(*data, filepath.Base(r.PathValue("name"))), body); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("GET /files/{name}", func(w http.ResponseWriter, r *http.Request) {
		body, err := os.ReadFile(filepath.Join(*data, filepath.Base(r.PathValue("name"))))
		if errors.Is(err, os.ErrNotExist) {
			http.NotFound(w, r)
			return
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(body)
	})
	fmt.Printf("e2e-helper: serving on %s, data in %s, uid %d\n", *listen, *data, os.Getuid())
	return listenAndServe(*listen, mux)
}

// listenAndServe serves h on addr until SIGTERM or SIGINT. It exits
// promptly on SIGTERM so deleting the pod does not wait out the grace
// period (the suite deletes pods on purpose).
func listenAndServe(addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// requireEnv returns the named environment variables (an application's
// Secret keys), failing on an empty one.
func requireEnv(keys ...string) (map[string]string, error) {
	env := map[string]string{}
	for _, k := range keys {
		if env[k] = os.Getenv(k); env[k] == "" {
			return nil, fmt.Errorf("environment variable %s is empty", k)
		}
	}
	return env, nil
}

// certPool holds the PEM certificates of env[key] (the pool's CA).
func certPool(env map[string]string, key string) (*x509.CertPool, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(env[key])) {
		return nil, fmt.Errorf("%s holds no PEM certificate", key)
	}
	return roots, nil
}

// writeFileSync writes and fsyncs, so what the suite wrote survives the pod
// being killed right after the request returns.
func writeFileSync(p string, data []byte) error {
	f, err := os.OpenFile(p+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// get prints the body of a GET and fails on anything but 200, so `kubectl
// exec ... get URL` succeeds only when the Service really answered.
func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 10*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("get needs one URL")
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(fs.Arg(0))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	os.Stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", fs.Arg(0), resp.Status)
	}
	return nil
}
