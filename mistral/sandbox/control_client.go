package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/mistral"
)

// Control drives a sandbox served by another process (mrbacd sandbox)
// through its /sandbox/ control routes.
type Control struct {
	base     string
	adminKey string
	hc       *http.Client
}

// NewControl returns a Control for the sandbox at baseURL (http://host:port).
// hc defaults to a client with a 30s timeout.
func NewControl(baseURL, adminKey string, hc *http.Client) *Control {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Control{base: strings.TrimSuffix(baseURL, "/"), adminKey: adminKey, hc: hc}
}

func (c *Control) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("sandbox control: %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("sandbox control: %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.adminKey)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("sandbox control: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("sandbox control: %s %s: read: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("sandbox control: %s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("sandbox control: %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// Healthy returns nil once the sandbox answers.
func (c *Control) Healthy(ctx context.Context) error {
	return c.call(ctx, "GET", "/sandbox/healthz", nil, nil)
}

// Now returns the sandbox clock.
func (c *Control) Now(ctx context.Context) (time.Time, error) {
	var out struct {
		Now time.Time `json:"now"`
	}
	err := c.call(ctx, "GET", "/sandbox/clock", nil, &out)
	return out.Now, err
}

// SetNow freezes the sandbox clock at t.
func (c *Control) SetNow(ctx context.Context, t time.Time) error {
	return c.call(ctx, "POST", "/sandbox/clock", map[string]string{"now": t.Format(time.RFC3339Nano)}, nil)
}

// Advance moves the sandbox clock by d.
func (c *Control) Advance(ctx context.Context, d time.Duration) error {
	return c.call(ctx, "POST", "/sandbox/clock", map[string]string{"advance": d.String()}, nil)
}

// Console applies a person's change in the console (see ConsoleChange).
func (c *Control) Console(ctx context.Context, ch ConsoleChange) error {
	return c.call(ctx, "POST", "/sandbox/console", ch, nil)
}

// InjectFault adds a fault.
func (c *Control) InjectFault(ctx context.Context, f Fault) error {
	return c.call(ctx, "POST", "/sandbox/faults", f, nil)
}

// ClearFaults removes every fault.
func (c *Control) ClearFaults(ctx context.Context) error {
	return c.call(ctx, "DELETE", "/sandbox/faults", nil, nil)
}

// Events returns the events with Seq > since.
func (c *Control) Events(ctx context.Context, since int64) ([]Event, error) {
	var out struct {
		Events []Event `json:"events"`
	}
	err := c.call(ctx, "GET", "/sandbox/events?since="+strconv.FormatInt(since, 10), nil, &out)
	return out.Events, err
}

// Keys returns the key snapshot, deleted keys and plaintexts included.
func (c *Control) Keys(ctx context.Context) ([]KeyState, error) {
	var out struct {
		Keys []keyStateJSON `json:"keys"`
	}
	if err := c.call(ctx, "GET", "/sandbox/keys", nil, &out); err != nil {
		return nil, err
	}
	keys := make([]KeyState, len(out.Keys))
	for i, j := range out.Keys {
		k := KeyState{ID: j.ID, Name: j.Name, Plaintext: j.Plaintext, HiddenKey: j.HiddenKey, WorkspaceID: j.WorkspaceID,
			CreatedBy: j.CreatedBy, Product: j.Product, Deleted: j.Deleted}
		k.CreatedAt, _ = time.Parse(time.RFC3339Nano, j.CreatedAt)
		if j.Expiration != nil {
			d, err := mistral.ParseDate(*j.Expiration)
			if err == nil {
				k.Expiration = &d
			}
		}
		if j.LastUsed != nil {
			d, err := mistral.ParseDate(*j.LastUsed)
			if err == nil {
				k.LastUsed = &d
			}
		}
		if j.DeletedAt != nil {
			k.DeletedAt, _ = time.Parse(time.RFC3339Nano, *j.DeletedAt)
		}
		keys[i] = k
	}
	return keys, nil
}

// Stats returns the requests served per route pattern.
func (c *Control) Stats(ctx context.Context) (map[string]int64, error) {
	var out struct {
		Requests map[string]int64 `json:"requests"`
	}
	err := c.call(ctx, "GET", "/sandbox/stats", nil, &out)
	return out.Requests, err
}

// ResetStats zeroes the request counters.
func (c *Control) ResetStats(ctx context.Context) error {
	return c.call(ctx, "DELETE", "/sandbox/stats", nil, nil)
}
