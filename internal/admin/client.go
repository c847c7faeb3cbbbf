package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/events"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/scheduler"
)

// Client calls the admin API at Addr ("127.0.0.1:8081").
type Client struct {
	Addr string
	HTTP *http.Client
}

func (c *Client) do(method, path string, q url.Values, out any) error {
	u := url.URL{Scheme: "http", Host: c.Addr, Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequest(method, u.String(), nil)
	if err != nil {
		return err
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// List lists the queue.
func (c *Client) List(state, domain string) ([]scheduler.MessageInfo, error) {
	var out []scheduler.MessageInfo
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	if domain != "" {
		q.Set("domain", domain)
	}
	return out, c.do("GET", "/v1/messages", q, &out)
}

// Quarantine lists the messages set aside as unreadable.
func (c *Client) Quarantine() ([]queue.Quarantined, error) {
	var out []queue.Quarantined
	return out, c.do("GET", "/v1/quarantine", nil, &out)
}

// Get returns one message.
func (c *Client) Get(id string) (scheduler.MessageInfo, error) {
	var out scheduler.MessageInfo
	return out, c.do("GET", "/v1/messages/"+url.PathEscape(id), nil, &out)
}

// Act is "retry", "hold" or "release".
func (c *Client) Act(id, action string) (scheduler.MessageInfo, error) {
	var out scheduler.MessageInfo
	return out, c.do("POST", "/v1/messages/"+url.PathEscape(id)+"/"+action, nil, &out)
}

// Delete deletes a message, with a bounce DSN or silently.
func (c *Client) Delete(id string, bounce bool) error {
	return c.do("DELETE", "/v1/messages/"+url.PathEscape(id), url.Values{"bounce": {fmt.Sprint(bounce)}}, nil)
}

// Suppressions lists the suppression list.
func (c *Client) Suppressions() ([]delivery.Suppression, error) {
	var out []delivery.Suppression
	return out, c.do("GET", "/v1/suppressions", nil, &out)
}

// Unsuppress removes an address from the suppression list.
func (c *Client) Unsuppress(addr string) error {
	return c.do("DELETE", "/v1/suppressions/"+url.PathEscape(addr), nil, nil)
}

// Events lists recent delivery events, newest first; empty credential or
// typ and zero limit mean any and the server's default.
func (c *Client) Events(credential, typ string, limit int) ([]events.Event, error) {
	var out []events.Event
	q := url.Values{}
	if credential != "" {
		q.Set("credential", credential)
	}
	if typ != "" {
		q.Set("type", typ)
	}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	return out, c.do("GET", "/v1/events", q, &out)
}
