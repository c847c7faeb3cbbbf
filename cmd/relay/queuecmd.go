package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"mailroom.io/mailroom/internal/admin"
	"mailroom.io/mailroom/internal/scheduler"
)

const queueUsage = `usage: relay queue [-admin ADDR] [-json] COMMAND [ARGS]

commands:
  list [-state active|deferred|held] [-domain DOMAIN]
  show ID              a message with its attempts and remote replies
  retry ID             attempt now (releases a hold)
  hold ID | release ID
  delete [-bounce] ID  delete; -bounce sends a failure DSN to the sender
  quarantine           messages set aside because their stored data is unreadable
  suppressions         list suppressed recipients
  unsuppress ADDRESS
  events [-credential USER] [-type TYPE] [-limit N]
                       recent delivery events, newest first
`

// queueCommand is `relay queue`: a client of the admin API.
func queueCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("queue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, queueUsage); fs.PrintDefaults() }
	addr := fs.String("admin", "127.0.0.1:8081", "admin API address (listeners.admin)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	c := &admin.Client{Addr: *addr}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	out := func(v any, table func(w *tabwriter.Writer)) int {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(v)
			return 0
		}
		w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		table(w)
		w.Flush()
		return 0
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "relay queue "+cmd+": "+err.Error())
		return 1
	}
	oneID := func(sub *flag.FlagSet) (string, bool) {
		if err := sub.Parse(rest); err != nil || sub.NArg() != 1 {
			fmt.Fprintf(stderr, "usage: relay queue %s ID\n", cmd)
			return "", false
		}
		return sub.Arg(0), true
	}
	switch cmd {
	case "list":
		sub := flag.NewFlagSet("list", flag.ContinueOnError)
		sub.SetOutput(stderr)
		state := sub.String("state", "", "active, deferred or held")
		domain := sub.String("domain", "", "only messages with a pending recipient in DOMAIN")
		if err := sub.Parse(rest); err != nil {
			return 2
		}
		list, err := c.List(*state, *domain)
		if err != nil {
			return fail(err)
		}
		return out(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ID\tSTATE\tAGE\tNEXT\tATTEMPTS\tFROM\tPENDING")
			for _, m := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t<%s>\t%s\n", m.ID, m.State, age(m.ReceivedAt), next(m),
					m.Attempts, m.From, strings.Join(pending(m), ","))
			}
		})
	case "show":
		id, ok := oneID(flag.NewFlagSet(cmd, flag.ContinueOnError))
		if !ok {
			return 2
		}
		m, err := c.Get(id)
		if err != nil {
			return fail(err)
		}
		return out(m, func(w *tabwriter.Writer) { showMessage(w, m) })
	case "retry", "hold", "release":
		id, ok := oneID(flag.NewFlagSet(cmd, flag.ContinueOnError))
		if !ok {
			return 2
		}
		m, err := c.Act(id, cmd)
		if err != nil {
			return fail(err)
		}
		return out(m, func(w *tabwriter.Writer) { fmt.Fprintf(w, "%s\t%s\tnext %s\n", m.ID, m.State, next(m)) })
	case "delete":
		sub := flag.NewFlagSet(cmd, flag.ContinueOnError)
		sub.SetOutput(stderr)
		bounce := sub.Bool("bounce", false, "send a failure DSN to the sender")
		id, ok := oneID(sub)
		if !ok {
			return 2
		}
		if err := c.Delete(id, *bounce); err != nil {
			return fail(err)
		}
		return out(map[string]any{"id": id, "deleted": true, "bounced": *bounce}, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "%s\tdeleted\tbounce=%v\n", id, *bounce)
		})
	case "quarantine":
		list, err := c.Quarantine()
		if err != nil {
			return fail(err)
		}
		return out(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ID\tSINCE\tFROM\tRECIPIENTS\tREASON")
			for _, q := range list {
				var rcpts []string
				for _, r := range q.Recipients {
					rcpts = append(rcpts, r.Address)
				}
				fmt.Fprintf(w, "%s\t%s\t<%s>\t%s\t%s\n", q.ID, q.At.UTC().Format(time.RFC3339), q.From, strings.Join(rcpts, ","), q.Reason)
			}
		})
	case "suppressions":
		list, err := c.Suppressions()
		if err != nil {
			return fail(err)
		}
		return out(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ADDRESS\tADDED\tEXPIRES\tHITS\tHOST\tREPLY")
			for _, s := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", s.Address, s.Added.UTC().Format(time.RFC3339),
					s.Expires.UTC().Format(time.RFC3339), s.Hits, s.RemoteHost, strings.ReplaceAll(s.Reply, "\n", " "))
			}
		})
	case "events":
		sub := flag.NewFlagSet(cmd, flag.ContinueOnError)
		sub.SetOutput(stderr)
		cred := sub.String("credential", "", "only events of mail sent by this credential (username)")
		typ := sub.String("type", "", "only events of this type: queued, delivered, deferred, bounced, suppressed, expired, dsn_sent")
		limit := sub.Int("limit", 100, "at most this many events")
		if err := sub.Parse(rest); err != nil || sub.NArg() != 0 {
			return 2
		}
		list, err := c.Events(*cred, *typ, *limit)
		if err != nil {
			return fail(err)
		}
		return out(list, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "TIME\tTYPE\tQUEUE ID\tRECIPIENT\tCREDENTIAL\tSTATUS\tATTEMPT\tREMOTE MTA\tREPLY")
			for _, e := range list {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Timestamp.UTC().Format(time.RFC3339), e.Type, e.QueueID,
					e.Recipient, e.Credential, e.EnhancedStatus, e.Attempt, e.RemoteMTA, strings.ReplaceAll(e.Reply, "\n", " "))
			}
		})
	case "unsuppress":
		addr, ok := oneID(flag.NewFlagSet(cmd, flag.ContinueOnError))
		if !ok {
			return 2
		}
		if err := c.Unsuppress(addr); err != nil {
			return fail(err)
		}
		return out(map[string]any{"address": addr, "removed": true}, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "%s\tremoved\n", addr)
		})
	}
	fs.Usage()
	return 2
}

func age(t time.Time) string { return time.Since(t).Round(time.Second).String() }

func next(m scheduler.MessageInfo) string {
	if m.NextAttempt.IsZero() || m.State == scheduler.StateActive {
		return "now"
	}
	return m.NextAttempt.UTC().Format(time.RFC3339)
}

func pending(m scheduler.MessageInfo) []string {
	var out []string
	for _, r := range m.Recipients {
		if r.State == scheduler.StatePending {
			out = append(out, r.Address)
		}
	}
	return out
}

func showMessage(w *tabwriter.Writer, m scheduler.MessageInfo) {
	fmt.Fprintf(w, "ID:\t%s\nState:\t%s\nFrom:\t<%s>\nReceived:\t%s\nSize:\t%d\nAttempts:\t%d\nNext:\t%s\n",
		m.ID, m.State, m.From, m.ReceivedAt.UTC().Format(time.RFC3339), m.Size, m.Attempts, next(m))
	fmt.Fprintln(w, "\nRECIPIENT\tSTATE\tATTEMPTS\tLAST RESPONSE")
	for _, r := range m.Recipients {
		st := r.State
		if st == "" {
			st = "pending"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", r.Address, st, r.Attempts, strings.ReplaceAll(r.LastResponse, "\n", " "))
	}
	fmt.Fprintln(w, "\nTIME\tRECIPIENT\tSTATUS\tREASON\tHOST\tIP\tTLS\tREPLY")
	for _, a := range m.History {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Time.UTC().Format(time.RFC3339), a.Recipient, a.Status,
			a.Reason, a.Host, a.IP, a.TLS, strings.ReplaceAll(a.Reply, "\n", " "))
	}
}
