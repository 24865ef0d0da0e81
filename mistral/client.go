package mistral

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultBaseURL is the public platform.
const DefaultBaseURL = "https://api.mistral.ai"

// Defaults of Options.
const (
	DefaultMaxRetries = 4
	DefaultMinBackoff = 250 * time.Millisecond
	DefaultMaxBackoff = 15 * time.Second
	DefaultTimeout    = 60 * time.Second
	// MaxRetryAfter caps how long a server's Retry-After is honoured.
	MaxRetryAfter = 2 * time.Minute
	maxBodyBytes  = 64 << 20
)

// Admin auth header choices (Options.AdminAuthHeader).
const (
	AuthBearer  = "bearer"
	AuthXAPIKey = "x-api-key"
)

// Options configure a Client.
type Options struct {
	// BaseURL of the platform, without /v1 (default DefaultBaseURL).
	BaseURL string
	// AdminKey authenticates the admin API; inference calls take a key each.
	AdminKey Secret
	// AdminAuthHeader is AuthBearer (default) or AuthXAPIKey.
	AdminAuthHeader string
	// HTTPClient defaults to a client whose Timeout is Timeout. That timeout
	// bounds a whole attempt, a streamed body included.
	HTTPClient *http.Client
	// Timeout of one attempt when HTTPClient is nil (default DefaultTimeout).
	Timeout time.Duration
	// MaxRetries after the first attempt: 0 means DefaultMaxRetries, < 0 none.
	MaxRetries int
	// MinBackoff and MaxBackoff bound the exponential backoff (full jitter).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives debug lines per request and warnings per retry.
	Logger *slog.Logger
	// UserAgent defaults to "mrbacd".
	UserAgent string
}

// Client talks to the platform. It is safe for concurrent use.
type Client struct {
	base        *url.URL
	adminKey    Secret
	adminHeader string
	hc          *http.Client
	maxRetries  int
	minBackoff  time.Duration
	maxBackoff  time.Duration
	log         *slog.Logger
	userAgent   string
	now         func() time.Time
}

// New checks opts and returns a Client.
func New(opts Options) (*Client, error) {
	base := opts.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("mistral: base URL %q: want http(s)://host[:port]", base)
	}
	if u.User != nil {
		return nil, fmt.Errorf("mistral: base URL must not carry credentials")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.Path = strings.TrimSuffix(u.Path, "/v1")
	c := &Client{
		base:       u,
		adminKey:   opts.AdminKey,
		hc:         opts.HTTPClient,
		maxRetries: opts.MaxRetries,
		minBackoff: opts.MinBackoff,
		maxBackoff: opts.MaxBackoff,
		log:        opts.Logger,
		userAgent:  opts.UserAgent,
		now:        time.Now,
	}
	switch strings.ToLower(opts.AdminAuthHeader) {
	case "", AuthBearer:
		c.adminHeader = AuthBearer
	case AuthXAPIKey:
		c.adminHeader = AuthXAPIKey
	default:
		return nil, fmt.Errorf("mistral: admin auth header %q: want %q or %q", opts.AdminAuthHeader, AuthBearer, AuthXAPIKey)
	}
	if c.hc == nil {
		t := opts.Timeout
		if t <= 0 {
			t = DefaultTimeout
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 32 // the default 2 churns connections under parallel use
		c.hc = &http.Client{Timeout: t, Transport: tr}
	}
	switch {
	case c.maxRetries == 0:
		c.maxRetries = DefaultMaxRetries
	case c.maxRetries < 0:
		c.maxRetries = 0
	}
	if c.minBackoff <= 0 {
		c.minBackoff = DefaultMinBackoff
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = DefaultMaxBackoff
	}
	if c.maxBackoff < c.minBackoff {
		c.maxBackoff = c.minBackoff
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.userAgent == "" {
		c.userAgent = "mrbacd"
	}
	return c, nil
}

// call describes one logical request.
type call struct {
	method string
	path   string
	query  url.Values
	admin  bool   // authenticate with the admin key
	key    Secret // else with this inference key
	body   any
	stream bool
}

// do sends cl (with retries) and decodes a 2xx JSON answer into out (may be nil).
func (c *Client) do(ctx context.Context, cl call, out any) error {
	resp, err := c.roundTrip(ctx, cl)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return &TransportError{Method: cl.method, Path: cl.path, Err: fmt.Errorf("read response: %w", unwrapURL(err))}
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("mistral: %s %s: decode response: %w", cl.method, cl.path, err)
	}
	return nil
}

// roundTrip sends cl, retrying per the policy, and returns a 2xx response
// whose body the caller closes.
func (c *Client) roundTrip(ctx context.Context, cl call) (*http.Response, error) {
	var payload []byte
	if cl.body != nil {
		var err error
		if payload, err = json.Marshal(cl.body); err != nil {
			return nil, fmt.Errorf("mistral: %s %s: encode request: %w", cl.method, cl.path, err)
		}
	}
	secret := cl.key
	if cl.admin {
		secret = c.adminKey
	}
	for attempt := 0; ; attempt++ {
		resp, err := c.send(ctx, cl, payload, secret)
		if err == nil {
			return resp, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("mistral: %s %s: %w (last error: %v)", cl.method, cl.path, ctxErr, stripPrefix(err))
		}
		if !Retryable(err) || attempt >= c.maxRetries {
			return nil, err
		}
		wait := c.backoff(attempt, err)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return nil, fmt.Errorf("%w (not retried: a %s wait would pass the context deadline)", err, wait.Round(time.Millisecond))
		}
		c.log.Warn("mistral request retry", "method", cl.method, "path", cl.path, "attempt", attempt+1,
			"max_retries", c.maxRetries, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("mistral: %s %s: %w (last error: %v)", cl.method, cl.path, ctx.Err(), stripPrefix(err))
		case <-t.C:
		}
	}
}

// stripPrefix drops the "mistral: METHOD PATH: " head of an error already
// wrapped with the same context.
func stripPrefix(err error) string {
	s := err.Error()
	if i := strings.Index(s, ": "); i >= 0 && strings.HasPrefix(s, "mistral: ") {
		rest := s[i+2:]
		if j := strings.Index(rest, ": "); j >= 0 {
			return rest[j+2:]
		}
	}
	return s
}

// backoff returns the wait before retry number attempt+1: the server's
// Retry-After when given (capped at MaxRetryAfter), else full jitter over
// min(MaxBackoff, MinBackoff*2^attempt).
func (c *Client) backoff(attempt int, err error) time.Duration {
	var ae *APIError
	if errors.As(err, &ae) && ae.RetryAfter > 0 {
		return min(ae.RetryAfter, MaxRetryAfter)
	}
	ceiling := c.minBackoff
	for i := 0; i < attempt && ceiling < c.maxBackoff; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, c.maxBackoff)
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// send makes one attempt. A non-2xx answer becomes an *APIError, a network
// failure a *TransportError.
func (c *Client) send(ctx context.Context, cl call, payload []byte, secret Secret) (*http.Response, error) {
	u := *c.base
	u.Path += cl.path
	if len(cl.query) > 0 {
		u.RawQuery = cl.query.Encode()
	}
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("mistral: %s %s: build request: %w", cl.method, cl.path, err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.stream {
		req.Header.Set("Accept", "text/event-stream")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	req.Header.Set("User-Agent", c.userAgent)
	if cl.admin && c.adminHeader == AuthXAPIKey {
		req.Header.Set("x-api-key", secret.Reveal())
	} else if !secret.IsZero() {
		req.Header.Set("Authorization", "Bearer "+secret.Reveal())
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.log.Debug("mistral request failed", "method", cl.method, "path", cl.path, "duration", time.Since(start), "err", unwrapURL(err))
		return nil, &TransportError{Method: cl.method, Path: cl.path, Err: unwrapURL(err)}
	}
	c.log.Debug("mistral request", "method", cl.method, "path", cl.path, "status", resp.StatusCode, "duration", time.Since(start))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return nil, parseAPIError(resp.StatusCode, resp.Header, data, cl.method, cl.path, c.now(), secret.Reveal(), c.adminKey.Reveal())
}

// unwrapURL drops *url.Error's "Get "http://...": " head: the method and
// path are already in our own context.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
