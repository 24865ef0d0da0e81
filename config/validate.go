package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mrbacd/mrbacd/jobs/scheduler"
)

// MaxKeyNameLen bounds a managed key's name, so generated platform key
// names (<name>-<yyyymmdd>-<short rotation id>) stay short.
const MaxKeyNameLen = 40

var (
	keyNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hex64RE   = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// validator checks a decoded, defaulted config; it locates each problem
// through the decoder's field positions.
type validator struct {
	d   *decoder
	cfg *Config
}

// at returns the position of path or of its nearest recorded ancestor.
func (v *validator) at(path string) position {
	for p := path; p != ""; {
		if pos, ok := v.d.pos[p]; ok {
			return pos
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	if pos, ok := v.d.pos[""]; ok {
		return pos
	}
	return position{1, 1}
}

// set reports whether path was written in the file.
func (v *validator) set(path string) bool {
	_, ok := v.d.pos[path]
	return ok
}

func (v *validator) errorf(path, format string, args ...any) {
	if v.d.failed[path] {
		return // already reported by the decoder
	}
	pos := v.at(path)
	v.d.probs = append(v.d.probs, Problem{File: v.d.file, Line: pos.line, Col: pos.col, Field: path, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) oneOf(path, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.errorf(path, "must be one of %s, got %s", strings.Join(allowed, ", "), quoteShort(val))
}

// envFile checks a pair of *_env / *_file fields: at most one, and a valid
// variable name. required demands one of them.
func (v *validator) envFile(path, name, env, file string, required bool) {
	switch {
	case env != "" && file != "":
		v.errorf(join(path, name+"_env"), "set only one of %s_env and %s_file", name, name)
	case required && env == "" && file == "" && !v.d.inline[join(path, name)]:
		v.errorf(path, "one of %s_env or %s_file is required", name, name)
	}
	if env != "" && !envNameRE.MatchString(env) {
		v.errorf(join(path, name+"_env"), "not a valid environment variable name (letters, digits and _; give the variable's name, not the secret)")
	}
}

func (v *validator) nonNegative(path string, n float64) {
	if n < 0 {
		v.errorf(path, "must not be negative")
	}
}

func (v *validator) listen(path, addr string) {
	if addr == "" {
		return
	}
	if _, port, err := net.SplitHostPort(addr); err != nil {
		v.errorf(path, "must be host:port, e.g. 127.0.0.1:9464")
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.errorf(path, "invalid port %s", quoteShort(port))
	}
}

func (v *validator) httpURL(path, s string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.errorf(path, "must be an http or https URL")
		return
	}
	if u.User != nil {
		v.errorf(path, "must not carry credentials")
	}
}

func (v *validator) validate() {
	c := v.cfg
	v.validateMistral()

	v.validateState()
	if l := c.HA.Lease.D(); l < MinHALease || l > MaxHALease {
		v.errorf("ha.lease", "must be from %s to %s", MinHALease, MaxHALease)
	}
	if mode, err := strconv.ParseUint(c.Admin.SocketMode, 8, 32); err != nil || mode > 0o777 {
		v.errorf("admin.socket_mode", "must be an octal file mode such as 0600 or 0660")
	} else if mode&0o007 != 0 {
		v.errorf("admin.socket_mode", "must not grant access to others (the last digit must be 0)")
	}
	for i, uid := range c.Admin.AllowedUIDs {
		if uid < 0 {
			v.errorf(fmt.Sprintf("admin.allowed_uids[%d]", i), "must not be negative")
		}
	}
	v.listen("metrics.listen", c.Metrics.Listen)
	v.oneOf("log.format", c.Log.Format, "text", "json")
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")

	v.validateSecrets()
	v.validateNotify()
	wsNames := v.validateWorkspaces()
	v.validateKeys(wsNames)
	v.validateJobs()
	v.validateRoles()
	v.validateGateway(wsNames)

	for _, name := range sortedKeys(c.Prices) {
		p := c.Prices[name]
		path := "prices." + name
		if !ValidModelPattern(name) || strings.HasSuffix(name, "*") {
			v.errorf(path, "not a valid model name")
		}
		v.nonNegative(path+".input", p.InputPerM)
		v.nonNegative(path+".output", p.OutputPerM)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (v *validator) validateMistral() {
	m := v.cfg.Mistral
	v.httpURL("mistral.base_url", m.BaseURL)
	v.envFile("mistral", "admin_key", m.AdminKeyEnv, m.AdminKeyFile, true)
	v.oneOf("mistral.admin_auth_header", m.AdminAuthHeader, "bearer", "x-api-key")
	if m.MaxRetries != nil && (*m.MaxRetries < 0 || *m.MaxRetries > 20) {
		v.errorf("mistral.max_retries", "must be between 0 and 20")
	}
}

// validateState checks the journal's location: a SQLite path or a
// PostgreSQL DSN source, exactly one.
func (v *validator) validateState() {
	s := v.cfg.State
	switch {
	case s.Postgres == nil && v.set("state.postgres"):
		// "postgres:" with nothing after it must not fall back to SQLite.
		v.errorf("state.postgres", "empty: give dsn_env or dsn_file (or remove it to use the SQLite state.path)")
	case s.Postgres != nil && s.Path != "":
		v.errorf("state.postgres", "set only one of state.path (SQLite) and state.postgres")
	case s.Postgres != nil:
		v.envFile("state.postgres", "dsn", s.Postgres.DSNEnv, s.Postgres.DSNFile, true)
	case s.Path == "":
		v.errorf("state.path", "required (or state.postgres)")
	}
}

func (v *validator) validateSecrets() {
	s := v.cfg.Secrets
	if vs := s.Vault; vs != nil {
		if vs.Address == "" {
			v.errorf("secrets.vault.address", "required")
		} else {
			v.httpURL("secrets.vault.address", vs.Address)
		}
		if strings.Trim(vs.Mount, "/") == "" {
			v.errorf("secrets.vault.mount", "must not be empty")
		}
		a := vs.Auth
		p := "secrets.vault.auth"
		v.oneOf(p+".method", a.Method, "token", "approle", "kubernetes")
		switch a.Method {
		case "token":
			v.envFile(p, "token", a.TokenEnv, a.TokenFile, true)
		case "approle":
			if a.RoleIDFile == "" {
				v.errorf(p, "role_id_file is required for approle")
			}
			v.envFile(p, "secret_id", a.SecretIDEnv, a.SecretIDFile, true)
		case "kubernetes":
			if a.Role == "" {
				v.errorf(p+".role", "required for kubernetes auth")
			}
		}
		if a.Method != "token" && (a.TokenEnv != "" || a.TokenFile != "") {
			v.errorf(p, "token_env and token_file apply only to method token")
		}
	}
	if as := s.AWS; as != nil {
		if as.Endpoint != "" {
			v.httpURL("secrets.aws.endpoint", as.Endpoint)
		}
		if as.RoleARN != "" && !strings.HasPrefix(as.RoleARN, "arn:") {
			v.errorf("secrets.aws.role_arn", "must be an ARN (arn:aws:iam::ACCOUNT:role/NAME)")
		}
		if as.ExternalIDEnv != "" && !envNameRE.MatchString(as.ExternalIDEnv) {
			v.errorf("secrets.aws.external_id_env", "not a valid environment variable name")
		}
	}
	if s.File != nil && s.File.Dir == "" {
		v.errorf("secrets.file.dir", "required")
	}
}

func (v *validator) validateNotify() {
	sl := v.cfg.Notify.Slack
	if sl == nil {
		return
	}
	p := "notify.slack"
	v.envFile(p, "token", sl.TokenEnv, sl.TokenFile, false)
	v.envFile(p, "webhook_url", sl.WebhookURLEnv, sl.WebhookURLFile, false)
	hasToken := sl.TokenEnv != "" || sl.TokenFile != ""
	hasHook := sl.WebhookURLEnv != "" || sl.WebhookURLFile != ""
	switch {
	case hasToken && hasHook:
		v.errorf(p, "use a bot token or a webhook, not both")
	case !hasToken && !hasHook && !v.d.inline[p+".token"] && !v.d.inline[p+".webhook_url"]:
		v.errorf(p, "one of token_env, token_file, webhook_url_env or webhook_url_file is required")
	case hasToken && sl.Channel == "" && (sl.Channels.Critical == "" || sl.Channels.Warning == "" || sl.Channels.Info == ""):
		v.errorf(p+".channel", "required with a bot token (or set all of channels.critical, warning and info)")
	}
	if sl.APIURL != "" {
		v.httpURL(p+".api_url", sl.APIURL)
	}
	v.validateSlackActions(sl, hasToken)
}

func (v *validator) validateWorkspaces() map[string]bool {
	names := map[string]bool{}
	uuids := map[string]int{}
	for i, w := range v.cfg.Workspaces {
		p := fmt.Sprintf("workspaces[%d]", i)
		switch {
		case strings.TrimSpace(w.Name) == "":
			v.errorf(p+".name", "required")
		case names[w.Name]:
			v.errorf(p+".name", "duplicate workspace name %s", quoteShort(w.Name))
		}
		names[w.Name] = true
		if w.UUID != "" {
			if j, dup := uuids[w.UUID]; dup {
				v.errorf(p+".uuid", "same uuid as workspaces[%d]", j)
			}
			uuids[w.UUID] = i
		}
		for j, m := range w.Models {
			if !ValidModelPattern(m) {
				v.errorf(fmt.Sprintf("%s.models[%d]", p, j), "invalid model pattern %s: use a model name, \"*\" or a prefix like \"mistral-*\"", quoteShort(m))
			}
		}
		v.nonNegative(p+".rpm", float64(w.RPM))
		v.nonNegative(p+".monthly_budget_usd", w.MonthlyBudgetUSD)
	}
	return names
}

func (v *validator) refError(path, kind, name string, known map[string]bool) {
	msg := fmt.Sprintf("%s %s is not declared", kind, quoteShort(name))
	if s := closest(name, sortedKeys(known)); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	v.errorf(path, "%s", msg)
}

func (v *validator) validateKeys(ws map[string]bool) {
	c := v.cfg
	names := map[string]bool{}
	locs := map[string]string{}
	for i, k := range c.Keys {
		p := fmt.Sprintf("keys[%d]", i)
		switch {
		case k.Name == "":
			v.errorf(p+".name", "required")
		case len(k.Name) > MaxKeyNameLen || !keyNameRE.MatchString(k.Name):
			v.errorf(p+".name", "must be 1 to %d characters of a-z, 0-9 and -, starting and ending with a letter or digit", MaxKeyNameLen)
		case names[k.Name]:
			v.errorf(p+".name", "duplicate key name %s", quoteShort(k.Name))
		}
		names[k.Name] = true
		switch {
		case k.Workspace == "":
			v.errorf(p+".workspace", "required")
		case !ws[k.Workspace]:
			v.refError(p+".workspace", "workspace", k.Workspace, ws)
		}
		sp := p + ".store"
		st := k.Store
		switch st.Backend {
		case "":
			v.errorf(sp+".backend", "required: vault, aws or file")
		case "vault":
			if c.Secrets.Vault == nil {
				v.errorf(sp+".backend", "backend vault is not configured: add secrets.vault")
			}
			if st.Path == "" {
				v.errorf(sp+".path", "required for backend vault")
			}
			if st.SecretID != "" {
				v.errorf(sp+".secret_id", "applies only to backend aws; use path")
			}
		case "aws":
			if c.Secrets.AWS == nil {
				v.errorf(sp+".backend", "backend aws is not configured: add secrets.aws")
			}
			if st.SecretID == "" {
				v.errorf(sp+".secret_id", "required for backend aws")
			}
			if st.Path != "" {
				v.errorf(sp+".path", "applies only to backends vault and file; use secret_id")
			}
		case "file":
			if st.Path == "" {
				v.errorf(sp+".path", "required for backend file")
			} else if msg := fileStorePathProblem(st.Path); msg != "" {
				v.errorf(sp+".path", "%s", msg)
			}
			if st.SecretID != "" {
				v.errorf(sp+".secret_id", "applies only to backend aws; use path")
			}
		default:
			v.errorf(sp+".backend", "must be one of vault, aws, file, got %s", quoteShort(st.Backend))
		}
		v.oneOf(sp+".value_format", st.ValueFormat, "json", "raw")
		if loc := st.Backend + ":" + st.Location(); st.Location() != "" {
			if other, dup := locs[loc]; dup {
				v.errorf(sp, "same store target as %s", other)
			}
			locs[loc] = p
		}
		if k.PropagationWait >= k.RotateEvery {
			v.errorf(p+".propagation_wait", "must be shorter than rotate_every")
		}
	}
}

func (v *validator) validateJobs() {
	j := v.cfg.Jobs
	if _, err := time.LoadLocation(j.Timezone); err != nil || j.Timezone == "Local" {
		v.errorf("jobs.timezone", "unknown time zone %s: use an IANA name such as UTC or Europe/Paris", quoteShort(j.Timezone))
	}
	for _, s := range []struct{ path, spec string }{
		{"jobs.rotate.schedule", j.Rotate.Schedule},
		{"jobs.audit.schedule", j.Audit.Schedule},
		{"jobs.budget.schedule", j.Budget.Schedule},
	} {
		if _, err := scheduler.ParseSchedule(s.spec); err != nil {
			v.errorf(s.path, "%v", err)
		}
	}
	if j.Rotate.Concurrency < 1 || j.Rotate.Concurrency > 64 {
		v.errorf("jobs.rotate.concurrency", "must be between 1 and 64")
	}
	th := j.Budget.Thresholds
	if len(th) == 0 {
		v.errorf("jobs.budget.thresholds", "at least one threshold is required (omit the key for 0.5, 0.8, 1.0)")
	}
	for i, t := range th {
		p := fmt.Sprintf("jobs.budget.thresholds[%d]", i)
		if t <= 0 || t > 10 {
			v.errorf(p, "must be in (0, 10], a fraction of the monthly budget")
		} else if i > 0 && t <= th[i-1] {
			v.errorf(p, "thresholds must be strictly ascending")
		}
	}
}

func (v *validator) validateRoles() {
	for _, name := range sortedKeys(v.cfg.Roles) {
		r := v.cfg.Roles[name]
		p := "roles." + name
		if strings.TrimSpace(name) == "" {
			v.errorf(p, "empty role name")
		}
		if len(r.Models) == 0 {
			v.errorf(p+".models", "at least one model pattern is required (\"*\" allows all)")
		}
		for j, m := range r.Models {
			if !ValidModelPattern(m) {
				v.errorf(fmt.Sprintf("%s.models[%d]", p, j), "invalid model pattern %s: use a model name, \"*\" or a prefix like \"mistral-*\"", quoteShort(m))
			}
		}
		v.nonNegative(p+".max_tokens_per_request", float64(r.MaxTokensPerRequest))
		v.nonNegative(p+".daily_tokens", float64(r.DailyTokens))
		v.nonNegative(p+".rpm", float64(r.RPM))
		v.nonNegative(p+".hourly_usd", r.HourlyUSD)
		v.nonNegative(p+".daily_usd", r.DailyUSD)
		v.nonNegative(p+".max_concurrent", float64(r.MaxConcurrent))
	}
}

func (v *validator) validateGateway(ws map[string]bool) {
	g := v.cfg.Gateway
	v.listen("gateway.listen", g.Listen)
	if g.MaxBodyBytes <= 0 {
		v.errorf("gateway.max_body_bytes", "must be positive")
	}
	if g.MaxConnections < 1 {
		v.errorf("gateway.max_connections", "must be at least 1")
	}
	roles := map[string]bool{}
	for name := range v.cfg.Roles {
		roles[name] = true
	}
	names := map[string]bool{}
	hashes := map[string]int{}
	for i, cl := range g.Clients {
		p := fmt.Sprintf("gateway.clients[%d]", i)
		switch {
		case cl.Name == "":
			v.errorf(p+".name", "required")
		case names[cl.Name]:
			v.errorf(p+".name", "duplicate client name %s", quoteShort(cl.Name))
		}
		names[cl.Name] = true
		switch {
		case cl.Role == "":
			v.errorf(p+".role", "required")
		case !roles[cl.Role]:
			v.refError(p+".role", "role", cl.Role, roles)
		}
		switch {
		case cl.Workspace == "":
			v.errorf(p+".workspace", "required")
		case !ws[cl.Workspace]:
			v.refError(p+".workspace", "workspace", cl.Workspace, ws)
		}
		n := 0
		for _, s := range []string{cl.TokenSHA256, cl.TokenFile, cl.TokenEnv} {
			if s != "" {
				n++
			}
		}
		switch {
		case n == 0 && !v.d.inline[p+".token"]:
			v.errorf(p, "one of token_sha256, token_file or token_env is required")
		case n > 1:
			v.errorf(p, "set only one of token_sha256, token_file and token_env")
		}
		if cl.TokenSHA256 != "" {
			if !hex64RE.MatchString(cl.TokenSHA256) {
				v.errorf(p+".token_sha256", "must be 64 hex digits (the SHA-256 of the token)")
			} else {
				h := strings.ToLower(cl.TokenSHA256)
				if j, dup := hashes[h]; dup {
					v.errorf(p+".token_sha256", "same token as gateway.clients[%d]", j)
				}
				hashes[h] = i
			}
		}
		if cl.TokenEnv != "" && !envNameRE.MatchString(cl.TokenEnv) {
			v.errorf(p+".token_env", "not a valid environment variable name")
		}
	}
}

// fileStorePathProblem applies the file store's path rules: a relative,
// slash-separated path whose elements are not empty and do not start with
// a dot (the store adds ".json").
func fileStorePathProblem(p string) string {
	if strings.HasPrefix(p, "/") {
		return "must be relative to secrets.file.dir (the store adds .json), e.g. team/dev-key"
	}
	if strings.ContainsAny(p, "\x00\\") {
		return "must not contain a NUL or a backslash"
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || strings.HasPrefix(el, ".") {
			return "elements must not be empty or start with a dot (no ., .. or hidden names)"
		}
	}
	return ""
}
