// Package admin is the relay's admin HTTP API: list the queue by state and
// domain, show a message with its attempts and the remote replies, retry
// now, hold and release, delete (with a bounce or silently), and list and
// remove suppressions. It has no authentication, which is why the relay's
// configuration only lets it listen on loopback, on its own port; the
// `relay queue` command is its client.
//
//	GET    /v1/messages?state=&domain=&after=&limit=
//	                                      list (oldest first); after/limit page by id
//	GET    /v1/quarantine                 messages set aside as unreadable
//	GET    /v1/messages/{id}              one message with its history
//	POST   /v1/messages/{id}/retry        due now (also releases a hold)
//	POST   /v1/messages/{id}/hold
//	POST   /v1/messages/{id}/release
//	DELETE /v1/messages/{id}?bounce=true  delete; bounce: DSN to the sender
//	GET    /v1/suppressions
//	DELETE /v1/suppressions/{address}
//	GET    /v1/events?credential=&type=&limit=
//	                                      recent delivery events, newest first (Events)
//
// Responses are JSON; errors are {"error": "..."} with a 4xx/5xx status.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/events"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/scheduler"
)

// Handler serves the admin API over a scheduler and a suppression list
// (nil: no suppression endpoints).
func Handler(s *scheduler.Scheduler, sup *delivery.Suppressions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/messages", func(w http.ResponseWriter, r *http.Request) {
		f := scheduler.Filter{State: r.URL.Query().Get("state"), Domain: r.URL.Query().Get("domain"), After: r.URL.Query().Get("after")}
		if l := r.URL.Query().Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 0 {
				writeError(w, http.StatusBadRequest, errors.New("limit must be a non-negative number"))
				return
			}
			f.Limit = n
		}
		switch f.State {
		case "", scheduler.StateActive, scheduler.StateDeferred, scheduler.StateHeld:
		default:
			writeError(w, http.StatusBadRequest, errors.New("state must be active, deferred or held"))
			return
		}
		list := s.List(f)
		if list == nil {
			list = []scheduler.MessageInfo{}
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("GET /v1/quarantine", func(w http.ResponseWriter, r *http.Request) {
		list := s.Quarantined()
		if list == nil {
			list = []queue.Quarantined{}
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("GET /v1/messages/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, err := s.Get(r.PathValue("id"))
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, m)
	})
	action := func(fn func(string) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			if err := fn(id); err != nil {
				writeError(w, statusOf(err), err)
				return
			}
			m, err := s.Get(id)
			if err != nil {
				writeJSON(w, map[string]string{"id": id, "result": "ok"})
				return
			}
			writeJSON(w, m)
		}
	}
	mux.HandleFunc("POST /v1/messages/{id}/retry", action(s.RetryNow))
	mux.HandleFunc("POST /v1/messages/{id}/hold", action(s.Hold))
	mux.HandleFunc("POST /v1/messages/{id}/release", action(s.Release))
	mux.HandleFunc("DELETE /v1/messages/{id}", func(w http.ResponseWriter, r *http.Request) {
		bounce, _ := strconv.ParseBool(r.URL.Query().Get("bounce"))
		id := r.PathValue("id")
		if err := s.Delete(id, bounce); err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, map[string]any{"id": id, "deleted": true, "bounced": bounce})
	})
	if sup != nil {
		mux.HandleFunc("GET /v1/suppressions", func(w http.ResponseWriter, r *http.Request) {
			list := sup.List()
			if list == nil {
				list = []delivery.Suppression{}
			}
			writeJSON(w, list)
		})
		mux.HandleFunc("DELETE /v1/suppressions/{addr}", func(w http.ResponseWriter, r *http.Request) {
			ok, err := sup.Remove(r.PathValue("addr"))
			if err != nil {
				writeError(w, http.StatusInternalServerError, err)
				return
			}
			if !ok {
				writeError(w, http.StatusNotFound, errors.New("address is not suppressed"))
				return
			}
			writeJSON(w, map[string]any{"address": r.PathValue("addr"), "removed": true})
		})
	}
	return mux
}

// Events serves GET /v1/events from the event log, in front of next (the
// rest of the admin API).
func Events(next http.Handler, d *events.Dispatcher) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := events.Filter{Credential: q.Get("credential"), Type: events.Type(q.Get("type"))}
		if f.Type != "" && !events.ValidType(string(f.Type)) {
			writeError(w, http.StatusBadRequest, fmt.Errorf("type must be one of %v", events.Types))
			return
		}
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 0 {
				writeError(w, http.StatusBadRequest, errors.New("limit must be a non-negative number"))
				return
			}
			f.Limit = n
		}
		list, err := d.List(f)
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, list)
	})
	mux.Handle("/", next)
	return mux
}

func statusOf(err error) int {
	if errors.Is(err, queue.ErrNotFound) {
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
