package config

import (
	"time"

	"github.com/mrbacd/mrbacd/jobs"
	"github.com/mrbacd/mrbacd/jobs/scheduler"
)

// Config is the whole of mrbacd's configuration: the strategy as code.
// Field names follow the YAML keys. Defaults are filled by applyDefaults,
// in one place; every other package reads the filled-in values.
type Config struct {
	// Path is the file the config was loaded from (not a YAML key).
	Path string `yaml:"-"`

	Mistral    Mistral               `yaml:"mistral"`
	State      State                 `yaml:"state"`
	Admin      Admin                 `yaml:"admin"`
	Metrics    Metrics               `yaml:"metrics"`
	Log        Log                   `yaml:"log"`
	Secrets    Secrets               `yaml:"secrets"`
	Notify     Notify                `yaml:"notify"`
	Workspaces []Workspace           `yaml:"workspaces"`
	Keys       []Key                 `yaml:"keys"`
	Jobs       Jobs                  `yaml:"jobs"`
	Roles      map[string]Role       `yaml:"roles"`
	Gateway    Gateway               `yaml:"gateway"`
	Prices     map[string]ModelPrice `yaml:"prices"`
	HA         HA                    `yaml:"ha"`
	// ShutdownTimeout bounds a graceful stop (default 10s).
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`

	// hash is the SHA-256 of the source bytes (see Hash).
	hash string
}

// Mistral says how to reach the platform.
type Mistral struct {
	// BaseURL of the platform (default https://api.mistral.ai).
	BaseURL string `yaml:"base_url"`
	// AdminKeyEnv / AdminKeyFile name where the admin key is read from.
	AdminKeyEnv  string `yaml:"admin_key_env"`
	AdminKeyFile string `yaml:"admin_key_file"`
	// AdminAuthHeader is "bearer" (default) or "x-api-key".
	AdminAuthHeader string `yaml:"admin_auth_header"`
	// Timeout of one HTTP attempt (default 30s).
	Timeout Duration `yaml:"timeout"`
	// MaxRetries on 429/5xx/timeouts (default 4).
	MaxRetries *int `yaml:"max_retries"`
}

// State locates the journal: a SQLite file (path, the default) or a
// PostgreSQL database (postgres); exactly one.
type State struct {
	// Path is the SQLite journal's file (default /var/lib/mrbacd/state.db
	// when postgres is not set).
	Path string `yaml:"path"`
	// Postgres, when set, puts the journal in PostgreSQL, shared by every
	// daemon and gateway configured with it.
	Postgres *PostgresState `yaml:"postgres"`
}

// PostgresState says where the PostgreSQL journal's DSN (a URL or a
// key=value connection string; a secret, as it may hold a password) is read
// from: exactly one of an environment variable and a file.
type PostgresState struct {
	DSNEnv  string `yaml:"dsn_env"`
	DSNFile string `yaml:"dsn_file"`
}

// HA configures leader election among the daemons sharing a journal.
type HA struct {
	// Lease is the leader's tenure without renewal (default 15s): a
	// standby takes over at most this long after the leader stopped
	// renewing (killed, paused, cut off). Renewed every third of it.
	Lease Duration `yaml:"lease"`
}

// Admin configures the unix-socket admin API.
type Admin struct {
	Socket      string `yaml:"socket"`       // default /run/mrbacd/admin.sock
	AllowedUIDs []int  `yaml:"allowed_uids"` // the daemon's own uid is always allowed
	SocketMode  string `yaml:"socket_mode"`  // octal string, default "0600"
	SocketGroup string `yaml:"socket_group"` // group name or gid; mode then typically 0660
}

// Metrics configures the Prometheus listener ("" disables it).
type Metrics struct {
	Listen string `yaml:"listen"`
}

// Log configures slog.
type Log struct {
	Format string `yaml:"format"` // "text" (default) or "json"
	Level  string `yaml:"level"`  // debug, info (default), warn, error; MRBACD_LOG_LEVEL overrides
}

// Secrets holds the configured store backends; a key's store names one.
type Secrets struct {
	Vault *VaultStore `yaml:"vault"`
	AWS   *AWSStore   `yaml:"aws"`
	File  *FileStore  `yaml:"file"`
}

// VaultStore configures HashiCorp Vault KV v2.
type VaultStore struct {
	Address       string    `yaml:"address"`
	Mount         string    `yaml:"mount"` // default "secret"
	Namespace     string    `yaml:"namespace"`
	CACert        string    `yaml:"ca_cert"`
	TLSServerName string    `yaml:"tls_server_name"`
	Auth          VaultAuth `yaml:"auth"`
}

// VaultAuth selects one auth method: token, approle or kubernetes.
type VaultAuth struct {
	Method string `yaml:"method"` // token (default), approle, kubernetes

	TokenEnv  string `yaml:"token_env"`
	TokenFile string `yaml:"token_file"`

	RoleIDFile      string `yaml:"role_id_file"`
	SecretIDFile    string `yaml:"secret_id_file"`
	SecretIDEnv     string `yaml:"secret_id_env"`
	WrappedSecretID bool   `yaml:"wrapped_secret_id"`
	Mount           string `yaml:"mount"` // auth mount path, default = method name

	Role    string `yaml:"role"`     // kubernetes role
	JWTFile string `yaml:"jwt_file"` // default /var/run/secrets/kubernetes.io/serviceaccount/token
}

// AWSStore configures AWS Secrets Manager.
type AWSStore struct {
	Region        string `yaml:"region"`
	Endpoint      string `yaml:"endpoint"`
	RoleARN       string `yaml:"role_arn"`
	ExternalIDEnv string `yaml:"external_id_env"`
	KMSKeyID      string `yaml:"kms_key_id"`
}

// FileStore configures the embedded file store. When secrets.file is
// absent, applyDefaults fills it with the default directory, so a key with
// backend file needs no secrets section; its store path is relative to Dir.
type FileStore struct {
	Dir string `yaml:"dir"` // default /var/lib/mrbacd/secrets
}

// Notify configures where findings go. With no Slack, notifications go to stdout.
type Notify struct {
	Slack  *Slack `yaml:"slack"`
	Stdout bool   `yaml:"stdout"`
}

// Slack configures the Slack notifier: a bot token or an incoming webhook.
type Slack struct {
	TokenEnv       string        `yaml:"token_env"`
	TokenFile      string        `yaml:"token_file"`
	WebhookURLEnv  string        `yaml:"webhook_url_env"`
	WebhookURLFile string        `yaml:"webhook_url_file"`
	Channel        string        `yaml:"channel"`
	Channels       SlackChannels `yaml:"channels"`
	// APIURL overrides Slack's API base (tests point it at slacktest); Socket
	// Mode's apps.connections.open goes there too.
	APIURL string `yaml:"api_url"`
	// AppTokenEnv / AppTokenFile hold an app-level token (xapp-...) with
	// connections:write: set, the daemon opens a Socket Mode connection and
	// its messages carry action buttons. Needs a bot token.
	AppTokenEnv  string `yaml:"app_token_env"`
	AppTokenFile string `yaml:"app_token_file"`
	// Operators may act from Slack; anyone else is told they may not.
	Operators []SlackOperator `yaml:"operators"`
}

// Slack operator actions.
const (
	ActionRotate      = "rotate"
	ActionRevoke      = "revoke"
	ActionSnooze      = "snooze"
	ActionAcknowledge = "acknowledge"
)

// SlackActions lists the actions an operator may be granted.
var SlackActions = []string{ActionRotate, ActionRevoke, ActionSnooze, ActionAcknowledge}

// SlackOperator grants a Slack user (by id, never by name) some actions.
type SlackOperator struct {
	User    string   `yaml:"user"`
	Actions []string `yaml:"actions"`
}

// SlackChannels routes by severity; empty entries fall back to Channel.
type SlackChannels struct {
	Critical string `yaml:"critical"`
	Warning  string `yaml:"warning"`
	Info     string `yaml:"info"`
}

// Workspace is one Mistral workspace the organization declares.
type Workspace struct {
	Name             string   `yaml:"name"`
	UUID             string   `yaml:"uuid"` // optional; resolved by name on the platform when empty
	Team             string   `yaml:"team"`
	Models           []string `yaml:"models"`
	RPM              int      `yaml:"rpm"`
	MonthlyBudgetUSD float64  `yaml:"monthly_budget_usd"`
}

// Key is one managed key.
type Key struct {
	Name            string   `yaml:"name"`
	Workspace       string   `yaml:"workspace"`
	OwnerUserID     string   `yaml:"owner_user_id"`
	Store           KeyStore `yaml:"store"`
	RotateEvery     Duration `yaml:"rotate_every"`     // default 90d
	PropagationWait Duration `yaml:"propagation_wait"` // default 60s
	// ExpirationGrace is added to RotateEvery for the platform-side expiration backstop (default 30d).
	ExpirationGrace Duration `yaml:"expiration_grace"`
}

// KeyStore is where a managed key's record lives.
type KeyStore struct {
	Backend     string `yaml:"backend"`      // vault, aws or file
	Path        string `yaml:"path"`         // vault and file
	SecretID    string `yaml:"secret_id"`    // aws
	ValueFormat string `yaml:"value_format"` // json (default) or raw
}

// Location returns the backend-specific path or secret id.
func (s KeyStore) Location() string {
	if s.Backend == "aws" {
		return s.SecretID
	}
	return s.Path
}

// Jobs configures the scheduled jobs.
type Jobs struct {
	Timezone string    `yaml:"timezone"` // default UTC
	Rotate   RotateJob `yaml:"rotate"`
	Audit    AuditJob  `yaml:"audit"`
	Budget   BudgetJob `yaml:"budget"`
}

// Table returns the job table: the time zone and the rotate, audit and
// budget jobs' schedules, timeouts and switches.
func (j Jobs) Table() (scheduler.Table, error) {
	return scheduler.NewTable(j.Timezone,
		scheduler.Spec{Name: jobs.Rotate, Schedule: j.Rotate.Schedule, Timeout: j.Rotate.Timeout.D(), Disabled: j.Rotate.Disabled},
		scheduler.Spec{Name: jobs.Audit, Schedule: j.Audit.Schedule, Timeout: j.Audit.Timeout.D(), Disabled: j.Audit.Disabled},
		scheduler.Spec{Name: jobs.Budget, Schedule: j.Budget.Schedule, Timeout: j.Budget.Timeout.D(), Disabled: j.Budget.Disabled})
}

// RotateJob configures rotation.
type RotateJob struct {
	Schedule string   `yaml:"schedule"` // default "0 3 * * *"
	Timeout  Duration `yaml:"timeout"`  // default 1h
	Disabled bool     `yaml:"disabled"`
	// Concurrency bounds API work across keys (default 4).
	Concurrency int `yaml:"concurrency"`
	// VerifyTimeout bounds verification retries of a new key (default 2m).
	VerifyTimeout Duration `yaml:"verify_timeout"`
}

// AuditJob configures the nightly audit.
type AuditJob struct {
	Schedule       string   `yaml:"schedule"` // default "30 2 * * *"
	Timeout        Duration `yaml:"timeout"`  // default 30m
	Disabled       bool     `yaml:"disabled"`
	UnusedAfter    Duration `yaml:"unused_after"`    // default 30d
	ExpiringWithin Duration `yaml:"expiring_within"` // default 14d
	RevokeUnused   bool     `yaml:"revoke_unused"`
}

// BudgetJob configures spend polling.
type BudgetJob struct {
	Schedule   string    `yaml:"schedule"` // default "*/30 * * * *"
	Timeout    Duration  `yaml:"timeout"`  // default 10m
	Disabled   bool      `yaml:"disabled"`
	Thresholds []float64 `yaml:"thresholds"` // default [0.5, 0.8, 1.0]
}

// Role is a set of limits enforced by the gateway.
type Role struct {
	Models              []string `yaml:"models"`
	MaxTokensPerRequest int      `yaml:"max_tokens_per_request"`
	DailyTokens         int64    `yaml:"daily_tokens"`
	RPM                 int      `yaml:"rpm"`
	HourlyUSD           float64  `yaml:"hourly_usd"`
	DailyUSD            float64  `yaml:"daily_usd"`
	// MaxConcurrent caps each client's requests in flight (0: no cap).
	MaxConcurrent int `yaml:"max_concurrent"`
}

// Gateway configures the role-enforcing proxy ("" listen disables it).
type Gateway struct {
	Listen       string `yaml:"listen"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"` // default 1 MiB
	// ReadTimeout bounds reading a request's headers and body; a stalled
	// client is cut off (default 30s).
	ReadTimeout Duration `yaml:"read_timeout"`
	// MaxConnections caps the connections the gateway serves at once;
	// beyond it new ones wait in the kernel's accept backlog (default
	// 10000).
	MaxConnections int             `yaml:"max_connections"`
	Clients        []GatewayClient `yaml:"clients"`
}

// GatewayClient is one principal of the gateway.
type GatewayClient struct {
	Name        string `yaml:"name"`
	Role        string `yaml:"role"`
	Workspace   string `yaml:"workspace"`
	TokenSHA256 string `yaml:"token_sha256"`
	TokenFile   string `yaml:"token_file"`
	TokenEnv    string `yaml:"token_env"`
}

// ModelPrice is USD per million tokens.
type ModelPrice struct {
	InputPerM  float64 `yaml:"input"`
	OutputPerM float64 `yaml:"output"`
}

// Duration is a time.Duration that also accepts a day suffix ("90d").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
