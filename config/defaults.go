package config

import "time"

// Default values, filled by applyDefaults.
const (
	DefaultBaseURL         = "https://api.mistral.ai"
	DefaultAdminKeyEnv     = "MISTRAL_ADMIN_KEY"
	DefaultAdminAuthHeader = "bearer"
	DefaultMistralTimeout  = 30 * time.Second
	DefaultMaxRetries      = 4
	DefaultStatePath       = "/var/lib/mrbacd/state.db"
	DefaultAdminSocket     = "/run/mrbacd/admin.sock"
	DefaultSocketMode      = "0600"
	DefaultLogFormat       = "text"
	DefaultLogLevel        = "info"
	DefaultVaultMount      = "secret"
	DefaultVaultAuthMethod = "token"
	DefaultVaultTokenEnv   = "VAULT_TOKEN"
	DefaultKubernetesJWT   = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultFileStoreDir    = "/var/lib/mrbacd/secrets"
	DefaultValueFormat     = "json"
	DefaultRotateEvery     = 90 * Day
	DefaultPropagationWait = 60 * time.Second
	DefaultExpirationGrace = 30 * Day
	DefaultTimezone        = "UTC"
	DefaultRotateSchedule  = "0 3 * * *"
	DefaultRotateTimeout   = time.Hour
	DefaultConcurrency     = 4
	DefaultVerifyTimeout   = 2 * time.Minute
	DefaultAuditSchedule   = "30 2 * * *"
	DefaultAuditTimeout    = 30 * time.Minute
	DefaultUnusedAfter     = 30 * Day
	DefaultExpiringWithin  = 14 * Day
	DefaultBudgetSchedule  = "*/30 * * * *"
	DefaultBudgetTimeout   = 10 * time.Minute
	DefaultGatewayMaxBody  = 1 << 20
	DefaultShutdownTimeout = 10 * time.Second
	DefaultHALease         = 15 * time.Second
	DefaultGatewayRead     = 30 * time.Second
	DefaultGatewayMaxConns = 10000
)

// MinHALease and MaxHALease bound ha.lease.
const (
	MinHALease = time.Second
	MaxHALease = 10 * time.Minute
)

// DefaultThresholds are the budget fractions that raise a finding.
func DefaultThresholds() []float64 { return []float64{0.5, 0.8, 1.0} }

func setStr(p *string, def string) {
	if *p == "" {
		*p = def
	}
}

func setDur(p *Duration, def time.Duration) {
	if *p == 0 {
		*p = Duration(def)
	}
}

// applyDefaults fills every unset field with its default. It is the one
// place defaults live; it runs after decoding and before validation.
func applyDefaults(c *Config) {
	m := &c.Mistral
	setStr(&m.BaseURL, DefaultBaseURL)
	if m.AdminKeyEnv == "" && m.AdminKeyFile == "" {
		m.AdminKeyEnv = DefaultAdminKeyEnv
	}
	setStr(&m.AdminAuthHeader, DefaultAdminAuthHeader)
	setDur(&m.Timeout, DefaultMistralTimeout)
	if m.MaxRetries == nil {
		n := DefaultMaxRetries
		m.MaxRetries = &n
	}

	if c.State.Postgres == nil {
		setStr(&c.State.Path, DefaultStatePath)
	}
	setStr(&c.Admin.Socket, DefaultAdminSocket)
	setStr(&c.Admin.SocketMode, DefaultSocketMode)
	setStr(&c.Log.Format, DefaultLogFormat)
	setStr(&c.Log.Level, DefaultLogLevel)

	if v := c.Secrets.Vault; v != nil {
		setStr(&v.Mount, DefaultVaultMount)
		setStr(&v.Auth.Method, DefaultVaultAuthMethod)
		setStr(&v.Auth.Mount, v.Auth.Method)
		switch v.Auth.Method {
		case "token":
			if v.Auth.TokenEnv == "" && v.Auth.TokenFile == "" {
				v.Auth.TokenEnv = DefaultVaultTokenEnv
			}
		case "kubernetes":
			setStr(&v.Auth.JWTFile, DefaultKubernetesJWT)
		}
	}
	if c.Secrets.File == nil {
		c.Secrets.File = &FileStore{}
	}
	setStr(&c.Secrets.File.Dir, DefaultFileStoreDir)

	for i := range c.Keys {
		k := &c.Keys[i]
		setStr(&k.Store.ValueFormat, DefaultValueFormat)
		setDur(&k.RotateEvery, DefaultRotateEvery)
		setDur(&k.PropagationWait, DefaultPropagationWait)
		setDur(&k.ExpirationGrace, DefaultExpirationGrace)
	}

	j := &c.Jobs
	setStr(&j.Timezone, DefaultTimezone)
	setStr(&j.Rotate.Schedule, DefaultRotateSchedule)
	setDur(&j.Rotate.Timeout, DefaultRotateTimeout)
	if j.Rotate.Concurrency == 0 {
		j.Rotate.Concurrency = DefaultConcurrency
	}
	setDur(&j.Rotate.VerifyTimeout, DefaultVerifyTimeout)
	setStr(&j.Audit.Schedule, DefaultAuditSchedule)
	setDur(&j.Audit.Timeout, DefaultAuditTimeout)
	setDur(&j.Audit.UnusedAfter, DefaultUnusedAfter)
	setDur(&j.Audit.ExpiringWithin, DefaultExpiringWithin)
	setStr(&j.Budget.Schedule, DefaultBudgetSchedule)
	setDur(&j.Budget.Timeout, DefaultBudgetTimeout)
	if j.Budget.Thresholds == nil {
		j.Budget.Thresholds = DefaultThresholds()
	}

	if c.Gateway.MaxBodyBytes == 0 {
		c.Gateway.MaxBodyBytes = DefaultGatewayMaxBody
	}
	setDur(&c.Gateway.ReadTimeout, DefaultGatewayRead)
	if c.Gateway.MaxConnections == 0 {
		c.Gateway.MaxConnections = DefaultGatewayMaxConns
	}
	if c.Roles == nil {
		c.Roles = map[string]Role{}
	}
	if c.Prices == nil {
		c.Prices = map[string]ModelPrice{}
	}
	setDur(&c.ShutdownTimeout, DefaultShutdownTimeout)
	setDur(&c.HA.Lease, DefaultHALease)
}
