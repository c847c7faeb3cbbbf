package cluster_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/testutil/kubeapp"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
	"mailroom.io/mailroom/test/e2e/cluster"
)

// The manager as config/default installs it.
const (
	managerNamespace  = "mailroom-system"
	managerDeployment = "mailroom-manager"
	managerTimeout    = 3 * time.Minute
)

// repoRoot is the module root (the suite runs in test/e2e/cluster).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root %s: %v", root, err)
	}
	return root
}

// kubeClient is a controller-runtime client that knows mailroom's kinds
// and external-dns' DNSEndpoint.
func kubeClient(t *testing.T, c *cluster.Cluster) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme, externaldnsv1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	kc, err := client.New(c.Config, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// installManager installs the operator from config/default (rendered with
// the node's kubectl kustomize and applied server-side) after external-dns'
// DNSEndpoint CRD, which the SendingDomain controller writes; it waits for
// the manager pod to be Ready. When the test ends it prints the manager's
// logs (if the test failed) and uninstalls it.
func installManager(t *testing.T, c *cluster.Cluster, image string) *corev1.Pod {
	t.Helper()
	waitManagerUninstalled(t, c)
	root := repoRoot(t)
	rendered, err := c.Kubectl("kustomize", filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rendered, "image: "+image+"\n") {
		t.Fatalf("config/default does not run the manager from %s:\n%s", image, rendered)
	}
	dir := t.TempDir()
	manifests := filepath.Join(dir, "mailroom.yaml")
	if err := os.WriteFile(manifests, []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
	dnsEndpointCRD, err := kubeapp.DNSEndpointCRD(root)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() {
		if t.Failed() {
			diagnoseManager(t, c)
		}
		// Whatever the outcome: errors the manager logged say where the
		// controllers struggled (conflicts, failed writes).
		if logs, err := c.Kubectl("logs", "-n", managerNamespace, "deploy/"+managerDeployment); err == nil {
			var errs []string
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, `"level":"ERROR"`) {
					errs = append(errs, line)
				}
			}
			t.Logf("the manager logged %d lines, %d at level ERROR%s", strings.Count(logs, "\n"), len(errs),
				strings.Join(append([]string{""}, errs[:min(10, len(errs))]...), "\n  "))
		}
		for _, f := range []string{manifests, dnsEndpointCRD} {
			if out, err := c.Kubectl("delete", "-f", f, "--ignore-not-found", "--wait=false"); err != nil {
				t.Errorf("uninstall: %v\n%s", err, out)
			}
		}
	})
	for _, f := range []string{dnsEndpointCRD, manifests} {
		if out, err := c.Kubectl("apply", "--server-side", "--field-manager=e2e", "-f", f); err != nil {
			t.Fatalf("kubectl apply --server-side -f %s: %v", f, err)
		} else {
			t.Logf("kubectl apply --server-side -f %s:\n%s", filepath.Base(f), strings.TrimSpace(out))
		}
	}
	if out, err := c.Kubectl("wait", "--for=condition=Established", "--timeout=60s",
		"crd/relaypools.mailroom.io", "crd/sendingdomains.mailroom.io", "crd/smtpcredentials.mailroom.io", "crd/dnsendpoints.externaldns.k8s.io"); err != nil {
		t.Fatalf("CRDs not established: %v\n%s", err, out)
	}
	var pod *corev1.Pod
	c.WaitFor(t, "manager pod Ready", managerTimeout, func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods(managerNamespace).List(ctx, metav1.ListOptions{
			LabelSelector: "app.kubernetes.io/name=mailroom,app.kubernetes.io/component=manager",
		})
		if err != nil {
			return false, err
		}
		if len(pods.Items) != 1 {
			return false, fmt.Errorf("%d manager pods", len(pods.Items))
		}
		p := &pods.Items[0]
		pod = p
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("pod %s %s: %s", p.Name, p.Status.Phase, cluster.PodWaiting(p))
	})
	return pod
}

// diagnoseManager prints what explains an operator that did not do its
// job: its pod, events, logs (and previous logs after a restart), and
// every mailroom object with its status.
func diagnoseManager(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	var b strings.Builder
	run := func(title string, args ...string) {
		out, err := c.Kubectl(args...)
		if err != nil {
			out = err.Error()
		}
		fmt.Fprintf(&b, "\n===== %s =====\n%s\n", title, strings.TrimRight(out, "\n"))
	}
	run("kubectl get all -n "+managerNamespace, "get", "all", "-n", managerNamespace, "-o", "wide")
	run("kubectl describe pods -n "+managerNamespace, "describe", "pods", "-n", managerNamespace)
	run("kubectl get events -n "+managerNamespace, "get", "events", "-n", managerNamespace, "--sort-by=.lastTimestamp")
	run("kubectl logs deploy/"+managerDeployment, "logs", "-n", managerNamespace, "deploy/"+managerDeployment, "--tail=400")
	run("kubectl logs --previous deploy/"+managerDeployment, "logs", "-n", managerNamespace, "deploy/"+managerDeployment, "--previous", "--tail=100")
	run("kubectl get rpool,sdom,smtpcred,dnsendpoints -A -o yaml", "get", "rpool,sdom,smtpcred,dnsendpoints", "-A", "-o", "yaml")
	t.Logf("operator diagnostics:%s", b.String())
}

// nodeDNS is an authoritative DNS server on the node address (UDP and
// TCP), which relay pods and the manager reach as the host's address: the
// pool's delivery.resolvers and the domain's verify resolvers point here.
type nodeDNS struct {
	Addr string

	udp, tcp *dns.Server
	mu       sync.Mutex
	rrs      map[string][]dns.RR // by lower-case FQDN
}

func startNodeDNS(t *testing.T, ip string) *nodeDNS {
	t.Helper()
	s := &nodeDNS{rrs: map[string][]dns.RR{}}
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("DNS on %s: %v", ip, err)
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		s.Addr = addr
		s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
		s.tcp = &dns.Server{Listener: l, Handler: dns.HandlerFunc(s.serve)}
		break
	}
	if s.Addr == "" {
		t.Fatalf("DNS on %s: no port free for UDP and TCP: %v", ip, lastErr)
	}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		go func() { _ = srv.ActivateAndServe() }()
	}
	t.Cleanup(func() {
		_ = s.udp.Shutdown()
		_ = s.tcp.Shutdown()
	})
	return s
}

// add adds records in zone-file syntax ("name TTL IN TYPE data").
func (s *nodeDNS) add(t *testing.T, records ...string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("DNS record %q: %v", r, err)
		}
		name := strings.ToLower(rr.Header().Name)
		s.rrs[name] = append(s.rrs[name], rr)
	}
}

func (s *nodeDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		s.mu.Lock()
		rrs, ok := s.rrs[strings.ToLower(q.Name)]
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		s.mu.Unlock()
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
	}
	_ = w.WriteMsg(m)
}

// login is an SMTP username and password.
type login struct{ username, password string }

// submission is one SMTP submission's outcome.
type submission struct {
	// stage is where it ended: "connect" (dial, greeting, STARTTLS),
	// "auth", "mail", "rcpt", "data", "end" (the reply to the final dot)
	// or "done".
	stage string
	reply *smtp.SMTPError // an SMTP refusal
	err   error           // anything else
	id    string          // queue ID of the 250
	text  string          // the 250's text
}

// established says the relay had greeted and negotiated TLS: an error from
// here on that is not an SMTP reply is a connection broken mid-session.
func (s submission) established() bool { return s.stage != "connect" }

func (s submission) String() string {
	switch {
	case s.reply != nil:
		return fmt.Sprintf("%s: %d %v %s", s.stage, s.reply.Code, s.reply.EnhancedCode, s.reply.Message)
	case s.err != nil:
		return fmt.Sprintf("%s: %v", s.stage, s.err)
	}
	return "250 " + s.text
}

// submitMessage submits one message to addr: STARTTLS verified against
// roots for serverName, AUTH PLAIN, one recipient.
func submitMessage(addr, serverName string, roots *x509.CertPool, l login, from, to, subject string) (res submission) {
	res.stage = "connect"
	fail := func(err error) submission {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			res.reply = se
		} else {
			res.err = err
		}
		return res
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fail(err)
	}
	_ = conn.SetDeadline(time.Now().Add(45 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{ServerName: serverName, RootCAs: roots})
	if err != nil {
		conn.Close()
		return fail(err)
	}
	defer c.Close()
	res.stage = "auth"
	if err := c.Auth(sasl.NewPlainClient("", l.username, l.password)); err != nil {
		return fail(err)
	}
	res.stage = "mail"
	if err := c.Mail(from, nil); err != nil {
		return fail(err)
	}
	res.stage = "rcpt"
	if err := c.Rcpt(to, nil); err != nil {
		return fail(err)
	}
	res.stage = "data"
	w, err := c.Data()
	if err != nil {
		return fail(err)
	}
	body := strings.ReplaceAll(fmt.Sprintf("From: <%s>\nTo: <%s>\nSubject: %s\nMessage-ID: <%d@%s>\n\nSubmitted by the operator e2e suite.\n",
		from, to, subject, time.Now().UnixNano(), opDomain), "\n", "\r\n")
	if _, err := io.WriteString(w, body); err != nil {
		return fail(err)
	}
	res.stage = "end"
	resp, err := w.CloseWithResponse()
	if err != nil {
		return fail(err)
	}
	res.stage, res.text = "done", resp.StatusText
	if m := queuedAs.FindStringSubmatch(resp.StatusText); m != nil {
		res.id = m[1]
	}
	_ = c.Quit()
	return res
}

// tryAuth logs in and quits.
func tryAuth(addr, serverName string, roots *x509.CertPool, l login) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{ServerName: serverName, RootCAs: roots})
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", l.username, l.password)); err != nil {
		return err
	}
	return c.Quit()
}

// streamer submits messages one after another until stopped: each message
// (a numbered subject) is retried after a 4xx or a failed connection until
// it gets 250. Anything else is recorded as a failure of the relay.
type streamer struct {
	addr  string
	roots *x509.CertPool
	login login
	tag   string
	to    string

	mu        sync.Mutex
	acked     []string // subjects, in order
	attempts  int
	temp      map[string]int // 4xx replies by stage and code
	connFails int            // no session: dial, greeting or TLS failed
	connErrs  map[string]int
	broken    []string // errors after the session was established
	refused   []string // 5xx
	stop      chan struct{}
	done      chan struct{}
}

func startStreamer(addr string, roots *x509.CertPool, l login, tag, to string) *streamer {
	s := &streamer{addr: addr, roots: roots, login: l, tag: tag, to: to,
		temp: map[string]int{}, connErrs: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *streamer) run() {
	defer close(s.done)
	pace := time.NewTicker(50 * time.Millisecond)
	defer pace.Stop()
	for i := 0; ; i++ {
		subject := fmt.Sprintf("%s-%05d", s.tag, i)
		for {
			select {
			case <-s.stop:
				return
			case <-pace.C:
			}
			res := submitMessage(s.addr, opHostname, s.roots, s.login, "app@"+opDomain, s.to, subject)
			s.mu.Lock()
			s.attempts++
			retry := false
			switch {
			case res.stage == "done":
				s.acked = append(s.acked, subject)
			case res.reply != nil && res.reply.Code >= 400 && res.reply.Code < 500:
				s.temp[fmt.Sprintf("%s %d", res.stage, res.reply.Code)]++
				retry = true
			case res.reply != nil:
				s.refused = append(s.refused, subject+" "+res.String())
			case !res.established():
				s.connFails++
				s.connErrs[shortErr(res.err)]++
				retry = true
			default:
				s.broken = append(s.broken, subject+" "+res.String())
			}
			s.mu.Unlock()
			if !retry {
				break
			}
		}
	}
}

// shortErr strips addresses from an error, so errors group by kind.
func shortErr(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

// ackedCount is the number of acknowledged messages so far.
func (s *streamer) ackedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

// halt stops the stream and waits for the message in flight.
func (s *streamer) halt() {
	close(s.stop)
	<-s.done
}

func (s *streamer) report() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d attempts, %d acknowledged; retried: 4xx %v, connection not established %d %v; broken mid-session %d; refused 5xx %d",
		s.attempts, len(s.acked), s.temp, s.connFails, s.connErrs, len(s.broken), len(s.refused))
}

// sinkSubjects counts the messages the sink accepted by Subject, for
// subjects with the prefix.
func sinkSubjects(sink *smtpsink.Sink, prefix string) map[string]int {
	out := map[string]int{}
	for _, m := range sink.Accepted() {
		if s := subjectOf(m.Data); strings.HasPrefix(s, prefix) {
			out[s]++
		}
	}
	return out
}

func subjectOf(data []byte) string {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(head), "\r\n") {
		if v, ok := strings.CutPrefix(line, "Subject: "); ok {
			return v
		}
	}
	return ""
}

// deliveryTally compares what a client had acknowledged with what the sink
// received.
type deliveryTally struct {
	acked, delivered, lost, duplicated, unacknowledgedDelivered int
	lostSubjects                                                []string
}

func (d deliveryTally) String() string {
	return fmt.Sprintf("acknowledged %d, delivered %d, lost %d, duplicated %d, delivered without acknowledgement %d",
		d.acked, d.delivered, d.lost, d.duplicated, d.unacknowledgedDelivered)
}

func tally(acked []string, got map[string]int) deliveryTally {
	d := deliveryTally{acked: len(acked)}
	ack := map[string]bool{}
	for _, s := range acked {
		ack[s] = true
		if n := got[s]; n > 0 {
			d.delivered++
			d.duplicated += n - 1
		} else {
			d.lost++
			d.lostSubjects = append(d.lostSubjects, s)
		}
	}
	for s, n := range got {
		if !ack[s] {
			d.unacknowledgedDelivered++
			d.duplicated += n - 1
		}
	}
	sort.Strings(d.lostSubjects)
	return d
}

// relayPods lists the pool's pods by name.
func relayPods(ctx context.Context, c *cluster.Cluster, ns, pool string) (map[string]corev1.Pod, error) {
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=mailroom-relay,app.kubernetes.io/instance=" + pool})
	if err != nil {
		return nil, err
	}
	out := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		out[p.Name] = p
	}
	return out, nil
}

func isPodReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil
		}
	}
	return false
}

// stsRolledOut says a StatefulSet runs its current template on every
// replica, all ready.
func stsRolledOut(s *appsv1.StatefulSet) error {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	st := s.Status
	if st.ObservedGeneration < s.Generation || st.UpdateRevision != st.CurrentRevision ||
		st.UpdatedReplicas != want || st.ReadyReplicas != want || st.Replicas != want {
		return fmt.Errorf("generation %d observed %d, revision %s -> %s, replicas %d updated %d ready %d of %d",
			s.Generation, st.ObservedGeneration, st.CurrentRevision, st.UpdateRevision, st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, want)
	}
	return nil
}

// tableCells parses kubectl's table output (one or more tables, each with
// a header line) into rows of header -> cell, cut at the header's column
// starts so that an empty cell is seen as empty.
func tableCells(out string) []map[string]string {
	var rows []map[string]string
	var cols []string
	var starts []int
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			cols = nil
			continue
		}
		if cols == nil {
			cols, starts = nil, nil
			for i := 0; i < len(line); {
				for i < len(line) && line[i] == ' ' {
					i++
				}
				if i >= len(line) {
					break
				}
				j := i
				for j < len(line) && line[j] != ' ' {
					j++
				}
				cols = append(cols, line[i:j])
				starts = append(starts, i)
				i = j
			}
			continue
		}
		row := map[string]string{}
		for k, col := range cols {
			end := len(line)
			if k+1 < len(starts) && starts[k+1] < end {
				end = starts[k+1]
			}
			if starts[k] < len(line) {
				row[col] = strings.TrimSpace(line[starts[k]:end])
			} else {
				row[col] = ""
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// conditionStatus returns the status of a condition type, "" when absent.
func conditionStatus(conds []metav1.Condition, typ string) (string, string, string) {
	for _, c := range conds {
		if c.Type == typ {
			return string(c.Status), c.Reason, c.Message
		}
	}
	return "", "", ""
}
