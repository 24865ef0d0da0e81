package ctlsock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"

	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mrbacd/mrbacd/jobs"
)

// DefaultMaxBodyBytes bounds a request body.
const DefaultMaxBodyBytes = 64 << 10

// MaxRunsLimit bounds GET /v1/runs?limit=.
const MaxRunsLimit = 1000

// ServerOptions configures the admin server.
type ServerOptions struct {
	// Socket is the unix socket path (required).
	Socket string
	// Mode is the socket file's mode (0 means 0600).
	Mode os.FileMode
	// Group, when set, is a group name or numeric gid the socket is chowned to.
	Group string
	// AllowedUIDs may connect besides the daemon's own uid.
	AllowedUIDs []int
	// MaxBodyBytes bounds request bodies (0 means DefaultMaxBodyBytes).
	MaxBodyBytes int64
	Backend      Backend
	Logger       *slog.Logger
}

// Server is the admin API listening on a unix socket.
type Server struct {
	opts ServerOptions
	log  *slog.Logger
	ln   *net.UnixListener
	srv  *http.Server

	mu      sync.RWMutex
	allowed map[uint32]bool
}

type ctxKey int

const peerKey ctxKey = 0

// peer is who is at the other end of a connection.
type peer struct {
	uid uint32
	pid int32
	err error
}

// Listen prepares the socket: a stale socket at the path is removed (only
// if it is a socket and nothing answers on it), the new one gets opts.Mode
// and opts.Group. It refuses to replace a file that is not a socket or a
// socket another process serves.
func Listen(opts ServerOptions) (*Server, error) {
	if opts.Socket == "" {
		return nil, errors.New("admin socket: empty path")
	}
	if opts.Backend == nil {
		return nil, errors.New("admin socket: no backend")
	}
	if opts.Mode == 0 {
		opts.Mode = 0o600
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	gid := -1
	if opts.Group != "" {
		g, err := lookupGroup(opts.Group)
		if err != nil {
			return nil, fmt.Errorf("admin socket: %w", err)
		}
		gid = g
	}
	if err := removeStale(opts.Socket); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(opts.Socket), 0o750); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// Create the socket with no group/other access so there is no window in
	// which it is more open than asked; chmod then sets the asked mode.
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: opts.Socket, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if gid >= 0 {
		if err := os.Chown(opts.Socket, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("admin socket: chown to group %s: %w", opts.Group, err)
		}
	}
	if err := os.Chmod(opts.Socket, opts.Mode.Perm()); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: chmod %o: %w", opts.Mode.Perm(), err)
	}
	s := &Server{opts: opts, log: opts.Logger, ln: ln}
	s.SetAllowedUIDs(opts.AllowedUIDs)
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			uid, pid, err := peerCred(c)
			return context.WithValue(ctx, peerKey, peer{uid: uid, pid: pid, err: err})
		},
	}
	return s, nil
}

// lookupGroup resolves a group name or numeric gid.
func lookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil && n >= 0 {
		return n, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: %w", g, err)
	}
	return strconv.Atoi(grp.Gid)
}

// removeStale removes a leftover socket nobody answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("admin socket: %s exists and is not a socket (%s); refusing to replace it", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("admin socket: another process answers on %s (is mrbacd already running?)", path)
	}
	// Only a refused connection proves nobody listens; a socket we may not
	// connect to (EACCES) or that is too busy to answer in time may be live.
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("admin socket: %s exists and cannot be probed (%w); refusing to replace it", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin socket: removing stale socket: %w", err)
	}
	return nil
}

// Addr returns the socket path.
func (s *Server) Addr() string { return s.opts.Socket }

// SetAllowedUIDs replaces the uids allowed besides the daemon's own (on reload).
func (s *Server) SetAllowedUIDs(uids []int) {
	m := map[uint32]bool{uint32(os.Getuid()): true}
	for _, u := range uids {
		if u >= 0 {
			m[uint32(u)] = true
		}
	}
	s.mu.Lock()
	s.allowed = m
	s.mu.Unlock()
}

// Serve answers requests until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin socket: %w", err)
	}
	return nil
}

// Shutdown stops accepting, waits for requests in progress up to ctx, and
// removes the socket file.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	s.ln.Close()             // in case Serve never ran
	os.Remove(s.opts.Socket) // SetUnlinkOnClose covers the normal path; make sure
	return err
}

// Handler returns the API's handler, peer check included (for tests that
// serve it on their own listener, ConnContext must set the peer).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern, method string, h func(http.ResponseWriter, *http.Request)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != method {
				w.Header().Set("Allow", method)
				writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, method))
				return
			}
			h(w, r)
		})
	}
	route("/v1/status", http.MethodGet, s.handleStatus)
	route("/v1/jobs", http.MethodGet, s.handleJobs)
	route("/v1/jobs/{job}/run", http.MethodPost, s.handleRun)
	route("/v1/runs", http.MethodGet, s.handleRuns)
	route("/v1/runs/{id}", http.MethodGet, s.handleRunByID)
	route("/v1/reload", http.MethodPost, s.handleReload)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return s.checkPeer(mux)
}

// checkPeer refuses peers whose uid is not allowed.
func (s *Server) checkPeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey).(peer)
		if !ok || p.err != nil {
			s.log.Warn("admin request refused: peer unknown", "err", p.err, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, "cannot identify the connecting process")
			return
		}
		s.mu.RLock()
		allowed := s.allowed[p.uid]
		s.mu.RUnlock()
		if !allowed {
			s.log.Warn("admin request refused", "uid", p.uid, "pid", p.pid, "method", r.Method, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, fmt.Sprintf("uid %d is not allowed (admin.allowed_uids)", p.uid))
			return
		}
		s.log.Debug("admin request", "uid", p.uid, "pid", p.pid, "method", r.Method, "path", r.URL.Path)
		next.ServeHTTP(w, r)
	})
}

func trigger(r *http.Request) string {
	p, _ := r.Context().Value(peerKey).(peer)
	return fmt.Sprintf("uid:%d", p.uid)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.opts.Backend.Status(r.Context())
	if err != nil {
		s.backendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handleJobs(w http.ResponseWriter, r *http.Request) {
	js, err := s.opts.Backend.Jobs(r.Context())
	if err != nil {
		s.backendError(w, err)
		return
	}
	if js == nil {
		js = []Job{}
	}
	writeJSON(w, http.StatusOK, js)
}

func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	var req RunRequest
	if !s.decodeBody(w, r, &req) {
		return
	}
	job := r.PathValue("job")
	run, err := s.opts.Backend.RunJob(r.Context(), job, jobs.Request{
		Trigger: trigger(r), Key: req.Key, DryRun: req.DryRun, Force: req.Force,
	}, req.Wait)
	if err != nil {
		s.backendError(w, err)
		return
	}
	code := http.StatusAccepted
	if req.Wait {
		code = http.StatusOK
	}
	writeJSON(w, code, run)
}

func (s *Server) handleRuns(w http.ResponseWriter, r *http.Request) {
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxRunsLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d, got %q", MaxRunsLimit, v))
			return
		}
		limit = n
	}
	runs, err := s.opts.Backend.Runs(r.Context(), limit)
	if err != nil {
		s.backendError(w, err)
		return
	}
	if runs == nil {
		runs = []Run{}
	}
	writeJSON(w, http.StatusOK, runs)
}

func (s *Server) handleRunByID(w http.ResponseWriter, r *http.Request) {
	v := r.PathValue("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id < 1 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("run id must be a positive integer, got %q", v))
		return
	}
	run, err := s.opts.Backend.Run(r.Context(), id)
	if err != nil {
		s.backendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, run)
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if !s.decodeBody(w, r, &struct{}{}) {
		return
	}
	rel, err := s.opts.Backend.Reload(context.WithValue(r.Context(), reloadTriggerKey, trigger(r)))
	if err != nil {
		code := statusFor(err)
		writeJSONCode(w, code, errorBody{Error: err.Error(), Reload: &rel})
		return
	}
	writeJSON(w, http.StatusOK, rel)
}

type reloadKey int

const reloadTriggerKey reloadKey = 0

// ReloadTrigger returns who asked for a reload through the socket ("uid:N"),
// or "" when ctx did not come from the admin server.
func ReloadTrigger(ctx context.Context) string {
	s, _ := ctx.Value(reloadTriggerKey).(string)
	return s
}

// decodeBody reads an optional JSON object body, bounded, unknown fields refused.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	data, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
			return false
		}
		writeError(w, http.StatusBadRequest, "reading request body: "+err.Error())
		return false
	}
	if len(data) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "invalid JSON body: more than one value")
		return false
	}
	return true
}

// statusFor maps a backend error to an HTTP status.
func statusFor(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrInvalid):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

func (s *Server) backendError(w http.ResponseWriter, err error) {
	code := statusFor(err)
	if code == http.StatusInternalServerError {
		s.log.Error("admin request failed", "err", err)
	}
	writeError(w, code, err.Error())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSONCode(w, code, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) { writeJSONCode(w, code, v) }

func writeJSONCode(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		data, _ = json.Marshal(errorBody{Error: "encoding response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(data, '\n'))
}
