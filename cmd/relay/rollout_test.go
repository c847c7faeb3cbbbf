package main_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
)

// rolloutLoad submits continuously, one message per connection, and
// sorts every attempt's outcome.
type rolloutLoad struct {
	addr string
	mu   sync.Mutex
	ack  map[string]time.Time // queue id -> when its connection was opened
	// outcomes counts: "250", "refused" (connect), "greeting" (closed
	// before a reply to EHLO/MAIL), "4xx", and "mid-transaction" (a
	// connection error after MAIL was accepted: what must never happen).
	outcomes map[string]int
	bad      []string
	n        int
}

func (l *rolloutLoad) count(what, detail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.outcomes[what]++
	if what == "mid-transaction" || what == "other" {
		l.bad = append(l.bad, detail)
	}
}

func (l *rolloutLoad) one() {
	l.mu.Lock()
	l.n++
	id := fmt.Sprintf("roll-%d", l.n)
	l.mu.Unlock()
	opened := time.Now()
	conn, err := net.DialTimeout("tcp", l.addr, 10*time.Second)
	if err != nil {
		l.count("refused", err.Error())
		time.Sleep(20 * time.Millisecond)
		return
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c := smtp.NewClient(conn)
	defer c.Close()
	var se *smtp.SMTPError
	if err := c.Hello("client.test"); err != nil {
		if errors.As(err, &se) && se.Code/100 == 4 {
			l.count("4xx", err.Error())
		} else {
			l.count("greeting", err.Error())
		}
		return
	}
	if err := c.Mail("load@example.com", nil); err != nil {
		if errors.As(err, &se) && se.Code/100 == 4 {
			l.count("4xx", err.Error())
		} else {
			l.count("greeting", err.Error())
		}
		return
	}
	// From here on the transaction is open: only a reply may end it.
	qid, err := func() (string, error) {
		if err := c.Rcpt("sink@example.net", nil); err != nil {
			return "", err
		}
		w, err := c.Data()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(w, "From: load@example.com\r\nSubject: %s\r\nX-Test-ID: %s\r\n\r\n%s\r\n", id, id, strings.Repeat("rollout rollout rollout\r\n", 40))
		resp, err := w.CloseWithResponse()
		if err != nil {
			return "", err
		}
		_, qid, _ := strings.Cut(resp.StatusText, "queued as ")
		return qid, nil
	}()
	switch {
	case err == nil:
		l.mu.Lock()
		l.ack[qid] = opened
		l.outcomes["250"]++
		l.mu.Unlock()
		c.Quit()
	case errors.As(err, &se) && se.Code/100 == 4:
		l.count("4xx", err.Error())
	case errors.As(err, &se):
		l.count("other", err.Error())
	default:
		l.count("mid-transaction", err.Error())
	}
}

// TestSIGTERMKeepsAcceptingForTheShutdownDelayAndResetsNoTransaction is
// a rolling restart seen from the clients: eight of them submit
// continuously while the relay binary gets SIGTERM. Readiness goes off at
// once; connections opened after SIGTERM are still served for
// limits.shutdownDelay; no transaction is cut by a connection error; every
// message got 250 or a 4xx (or its connection was refused); every 250 is
// in the queue; the whole sequence fits config.ShutdownBudget.
func TestSIGTERMKeepsAcceptingForTheShutdownDelayAndResetsNoTransaction(t *testing.T) {
	p := newRelayFiles(t)
	b, _ := os.ReadFile(p.cfgPath)
	os.WriteFile(p.cfgPath, []byte(strings.Replace(string(b), "limits: {shutdownGrace: 20s}", "limits: {shutdownGrace: 20s, shutdownDelay: 2s}", 1)), 0o600)
	cfg, err := config.Load(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	budget := config.ShutdownBudget(cfg)
	p.start()

	l := &rolloutLoad{addr: p.smtpAddr, ack: map[string]time.Time{}, outcomes: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l.one()
			}
		}()
	}
	poll(t, "some messages before SIGTERM", time.Minute, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.outcomes["250"] >= 50
	})
	sigterm := time.Now()
	p.signal(syscall.SIGTERM)
	poll(t, "readiness off", 10*time.Second, func() bool {
		resp, err := http.Get("http://" + p.httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if d := time.Since(sigterm); d > time.Second {
		t.Errorf("readiness went off %v after SIGTERM", d)
	}
	if err := p.wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.log.String())
	}
	took := time.Since(sigterm)
	time.Sleep(200 * time.Millisecond) // a few refused connects
	close(stop)
	wg.Wait()

	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("outcomes %v; SIGTERM to exit %v (budget %v)", l.outcomes, took.Round(time.Millisecond), budget)
	if len(l.bad) > 0 {
		t.Errorf("%d transactions ended without a reply, e.g. %q", len(l.bad), l.bad[0])
	}
	if took > budget {
		t.Errorf("shutdown took %v, more than config.ShutdownBudget %v", took, budget)
	}
	late := 0
	for _, opened := range l.ack {
		if opened.After(sigterm.Add(500 * time.Millisecond)) {
			late++
		}
	}
	if late == 0 {
		t.Error("no connection opened after SIGTERM got a 250: the relay stopped accepting before limits.shutdownDelay")
	}
	if l.outcomes["refused"] == 0 {
		t.Error("no connection was refused after the relay exited: the load did not outlast it")
	}
	q, err := queue.Open(p.queueDir, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for id := range l.ack {
		if _, ok := q.Get(id); !ok {
			t.Errorf("acknowledged message %s is not in the queue", id)
		}
	}
	if q.Len() != len(l.ack) {
		t.Errorf("%d messages queued, %d acknowledged", q.Len(), len(l.ack))
	}
}
