package ctlsock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/mrbacd/mrbacd/config"
)

// Client talks to the admin socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 10 * time.Second,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// Socket returns the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// UnreachableError means the daemon could not be reached on its socket.
type UnreachableError struct {
	Socket string
	Err    error
}

// Error says which socket could not be reached and why.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("daemon unreachable on %s: %v", e.Socket, e.Err)
}

// Unwrap returns the dial or transport error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// APIError is an error answer of the daemon.
type APIError struct {
	StatusCode int
	Message    string
	// Reload is set when a reload was refused.
	Reload *Reload
}

// Error gives the status and the daemon's message.
func (e *APIError) Error() string {
	return fmt.Sprintf("daemon answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Refused reports whether the daemon refused access (403).
func (e *APIError) Refused() bool { return e.StatusCode == http.StatusForbidden }

// Status calls GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}

// Jobs calls GET /v1/jobs.
func (c *Client) Jobs(ctx context.Context) ([]Job, error) {
	var js []Job
	return js, c.do(ctx, http.MethodGet, "/v1/jobs", nil, &js)
}

// RunJob calls POST /v1/jobs/{job}/run.
func (c *Client) RunJob(ctx context.Context, job string, req RunRequest) (Run, error) {
	var r Run
	return r, c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(job)+"/run", req, &r)
}

// Runs calls GET /v1/runs?limit=N (limit <= 0: the server's default).
func (c *Client) Runs(ctx context.Context, limit int) ([]Run, error) {
	path := "/v1/runs"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var rs []Run
	return rs, c.do(ctx, http.MethodGet, path, nil, &rs)
}

// Run calls GET /v1/runs/{id}.
func (c *Client) Run(ctx context.Context, id int64) (Run, error) {
	var r Run
	return r, c.do(ctx, http.MethodGet, "/v1/runs/"+strconv.FormatInt(id, 10), nil, &r)
}

// Reload calls POST /v1/reload. A refused config is an *APIError (422)
// whose Reload says why.
func (c *Client) Reload(ctx context.Context) (Reload, error) {
	var r Reload
	return r, c.do(ctx, http.MethodPost, "/v1/reload", nil, &r)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://mrbacd"+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &UnreachableError{Socket: c.socket, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return &UnreachableError{Socket: c.socket, Err: fmt.Errorf("reading answer: %w", err)}
	}
	if resp.StatusCode >= 300 {
		var eb errorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb.Error = string(bytes.TrimSpace(data))
		}
		return &APIError{StatusCode: resp.StatusCode, Message: eb.Error, Reload: eb.Reload}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return nil
}

// SocketEnv names the socket when neither a path nor a config is given.
const SocketEnv = "MRBACD_SOCKET"

// SocketPath is the socket `mrbacd ctl` talks to: path when set, else the
// admin.socket of the config at cfgPath when set, else $MRBACD_SOCKET, else
// config.DefaultAdminSocket.
func SocketPath(path, cfgPath string) (string, error) {
	if path == "" && cfgPath != "" {
		cfg, err := config.Load(cfgPath)
		if err != nil {
			return "", err
		}
		path = cfg.Admin.Socket
	}
	if path == "" {
		path = os.Getenv(SocketEnv)
	}
	if path == "" {
		path = config.DefaultAdminSocket
	}
	return path, nil
}
