package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/relay"
)

// SuppressionView is a suppression list entry as the API shows it.
type SuppressionView struct {
	Address    string    `json:"address"`
	Reply      string    `json:"reply"`
	RemoteHost string    `json:"remoteHost,omitempty"`
	Added      time.Time `json:"added"`
	Expires    time.Time `json:"expires"`
}

// inScope reports whether a credential may see and lift e: its allowed
// senders include the domain of a sender whose mail bounced there
// (e.SenderDomains), so it cannot enumerate or undo suppressions that only
// other credentials' mail caused. An entry without sender domains is
// managed by the operator only (relay queue suppressions).
func inScope(mine []string, e delivery.Suppression) bool {
	return slices.ContainsFunc(e.SenderDomains, func(d string) bool { return slices.Contains(mine, d) })
}

func (s *Server) listSuppressions(w http.ResponseWriter, r *http.Request) {
	pr := principalOf(r)
	out := []SuppressionView{}
	mine := pr.SenderDomains()
	for _, e := range s.opts.Suppressions.List() {
		if inScope(mine, e) {
			out = append(out, view(e))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"suppressions": out})
}

func view(e delivery.Suppression) SuppressionView {
	return SuppressionView{Address: e.Address, Reply: e.Reply, RemoteHost: e.RemoteHost, Added: e.Added, Expires: e.Expires}
}

func (s *Server) deleteSuppression(w http.ResponseWriter, r *http.Request) {
	pr := principalOf(r)
	addr := r.PathValue("address")
	// Out of scope looks like absent, so a credential learns nothing about
	// other credentials' entries.
	if e, ok := s.opts.Suppressions.Lookup(addr); !ok || !inScope(pr.SenderDomains(), e) {
		writeProblem(w, problem{Type: "not-found", Title: titles["not_found"], Status: http.StatusNotFound,
			Detail: "no suppression of " + addr + " caused by this credential's mail"})
		return
	}
	if _, err := s.opts.Suppressions.Remove(addr); err != nil {
		s.log.Error("httpapi: lifting a suppression", "err", err)
		writeProblem(w, problem{Type: "queue-error", Title: titles["queue_error"], Status: http.StatusInternalServerError,
			Detail: "Local error in processing; try again later", SMTPCode: 451, EnhancedStatus: "4.3.0"})
		return
	}
	s.log.Info("httpapi: suppression lifted", "user", pr.Name(), "address", addr)
	w.WriteHeader(http.StatusNoContent)
}

// AddressCheck is POST /v1/addresses/check's answer.
type AddressCheck struct {
	Syntax struct {
		Valid  bool   `json:"valid"`
		Reason string `json:"reason,omitempty"`
		// SMTPUTF8: the address is internationalized (RFC 6531).
		SMTPUTF8 bool `json:"smtputf8"`
	} `json:"syntax"`
	Domain struct {
		MX     []string `json:"mx"`
		NullMX bool     `json:"nullMX"`
		A      bool     `json:"a"`
		// Error is a temporary DNS failure, when the answer is unknown.
		Error string `json:"error,omitempty"`
	} `json:"domain"`
	Suppressed bool `json:"suppressed"`
}

func (s *Server) checkAddress(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Address string `json:"address"`
	}
	body := http.MaxBytesReader(w, r.Body, 16<<10)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		badRequest(w, "address", "the body must be {\"address\": \"local@domain\"}: "+err.Error())
		return
	}
	if req.Address == "" {
		badRequest(w, "address", "required")
		return
	}
	var out AddressCheck
	out.Domain.MX = []string{}
	canon, utf8, why := relay.CheckAddress(req.Address)
	if why != "" {
		out.Syntax.Reason = why
		writeJSON(w, http.StatusOK, out)
		return
	}
	out.Syntax.Valid, out.Syntax.SMTPUTF8 = true, utf8
	domain := canon[strings.LastIndexByte(canon, '@')+1:]
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	route, err := s.opts.Resolver.LookupMX(ctx, domain)
	var de *delivery.DNSError
	switch {
	case errors.Is(err, delivery.ErrNullMX):
		out.Domain.NullMX = true
	case errors.As(err, &de) && de.NotFound:
	case err != nil:
		out.Domain.Error = err.Error()
	case !route.Implicit:
		for _, h := range route.Hosts {
			out.Domain.MX = append(out.Domain.MX, h.Host)
		}
	}
	if !out.Domain.NullMX {
		ips, err := s.opts.Resolver.LookupIP(ctx, domain, false)
		out.Domain.A = err == nil && len(ips) > 0
	}
	_, out.Suppressed = s.opts.Suppressions.Lookup(canon)
	writeJSON(w, http.StatusOK, out)
}
