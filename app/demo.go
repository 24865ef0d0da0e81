package app

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"text/template"
	"time"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// demoData holds the demo's embedded defaults: the config template and the
// sandbox seed template (both rendered with demoVars).
//
//go:embed demodata/config.yaml.tmpl demodata/seed.yaml.tmpl
var demoData embed.FS

// demoOwnerUserID is the sandbox user the demo's managed keys are created
// for (the Admin API needs a user id to create a key).
const demoOwnerUserID = "7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

// Demo is the demo's world: an in-process sandbox platform seeded from the
// embedded seed, and in Dir the config (ConfigPath) rendered for it with
// its admin key file, journal and file store.
type Demo struct {
	Dir        string
	ConfigPath string
	URL        string
	Sandbox    *sandbox.Server
	stop       func()
	remove     bool
}

// Close stops the sandbox and removes a temporary directory not kept.
func (d *Demo) Close() {
	d.stop()
	if d.remove {
		os.RemoveAll(d.Dir)
	}
}

// DemoOptions configures StartDemo.
type DemoOptions struct {
	// Dir is the working directory; "" makes a temporary one, removed by
	// Close unless Keep.
	Dir  string
	Keep bool
	// Verbose: the jobs log at info level (else errors only).
	Verbose bool
	// Wrap, when set, wraps the sandbox's handler (tests put the contract
	// checker in front of it).
	Wrap func(http.Handler) http.Handler
}

// demoVars fill the embedded templates.
type demoVars struct {
	BaseURL, AdminKeyFile, StatePath, SocketPath, SecretsDir, LogLevel string
	OwnerUserID, Month                                                 string
	now                                                                time.Time
}

// renderDemo renders the embedded template name with v. Strings are quoted
// with quote (a JSON string is a valid YAML double-quoted scalar).
func renderDemo(name string, v demoVars) ([]byte, error) {
	funcs := template.FuncMap{
		"quote":     func(s string) string { b, _ := json.Marshal(s); return string(b) },
		"daysAgo":   func(n int) string { return v.now.AddDate(0, 0, -n).Format(time.DateOnly) },
		"daysAhead": func(n int) string { return v.now.AddDate(0, 0, n).Format(time.DateOnly) },
	}
	src, err := demoData.ReadFile("demodata/" + name)
	if err != nil {
		return nil, fmt.Errorf("demo data %s: %w", name, err)
	}
	t, err := template.New(name).Funcs(funcs).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("demo data %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return nil, fmt.Errorf("demo data %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// StartDemo starts the sandbox platform, seeded from the embedded seed,
// and writes the admin key and the config into the working directory.
// Close stops it.
func StartDemo(ctx context.Context, opts DemoOptions) (_ *Demo, err error) {
	dir, remove := opts.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "mrbacd-demo-"); err != nil {
			return nil, fmt.Errorf("temporary directory: %w", err)
		}
		remove = !opts.Keep
		defer func() {
			if err != nil && remove {
				os.RemoveAll(dir)
			}
		}()
	}
	now := time.Now().UTC()
	vars := demoVars{
		AdminKeyFile: filepath.Join(dir, "mistral-admin-key"),
		StatePath:    filepath.Join(dir, "state.db"),
		SocketPath:   filepath.Join(dir, "admin.sock"),
		SecretsDir:   filepath.Join(dir, "secrets"),
		LogLevel:     "error",
		OwnerUserID:  demoOwnerUserID,
		Month:        now.Format("2006-01"),
		now:          now,
	}
	if opts.Verbose {
		vars.LogLevel = "info"
	}
	seedYAML, err := renderDemo("seed.yaml.tmpl", vars)
	if err != nil {
		return nil, err
	}
	seed, err := sandbox.ParseSeed(seedYAML)
	if err != nil {
		return nil, fmt.Errorf("embedded seed: %w", err)
	}
	sb := sandbox.New(sandbox.Options{Seed: seed}) // a random admin key
	var h http.Handler = sb
	if opts.Wrap != nil {
		h = opts.Wrap(sb)
	}
	srv, err := ServeSandbox(h, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	stop := func() { srv.Close(context.WithoutCancel(ctx)) } //nolint:errcheck // best effort at exit
	vars.BaseURL = srv.URL
	defer func() {
		if err != nil {
			stop()
		}
	}()
	// The admin key goes to a file the config names, never to the output.
	if err := os.WriteFile(vars.AdminKeyFile, []byte(sb.AdminKey()+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("admin key file: %w", err)
	}
	cfgPath := filepath.Join(dir, "mrbacd.yaml")
	cfgYAML, err := renderDemo("config.yaml.tmpl", vars)
	if err == nil {
		err = os.WriteFile(cfgPath, cfgYAML, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &Demo{Dir: dir, ConfigPath: cfgPath, URL: vars.BaseURL, Sandbox: sb, stop: stop, remove: remove}, nil
}

// SandboxServer is a sandbox platform served over HTTP (`mrbacd sandbox`,
// the demo).
type SandboxServer struct {
	// URL is http://host:port of the listener.
	URL  string
	hs   *http.Server
	errc chan error
}

// ServeSandbox serves h on addr (port 0 picks a free one) until Close.
func ServeSandbox(h http.Handler, addr string) (*SandboxServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sandbox listen: %w", err)
	}
	s := &SandboxServer{URL: "http://" + ln.Addr().String(), errc: make(chan error, 1),
		hs: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go func() { s.errc <- s.hs.Serve(ln) }()
	return s, nil
}

// Err delivers the error that stopped the server early.
func (s *SandboxServer) Err() <-chan error { return s.errc }

// Close shuts the server down, waiting at most 5s for requests in flight.
func (s *SandboxServer) Close(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.hs.Shutdown(sctx)
}
