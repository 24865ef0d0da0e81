package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// internalError starts the problem Parse reports if it recovers from a
// panic (a bug: the fuzz test fails on it).
const internalError = "internal error while parsing: "

// MaxFileSize bounds a config file.
const MaxFileSize = 4 << 20

// Load reads the config file at path and parses it (see Parse). The
// returned Config has Path set. Errors are Problems, except when the file
// cannot be read.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, Problems{{File: path, Line: 1, Col: 1, Message: fmt.Sprintf("file larger than %d bytes", MaxFileSize)}}
	}
	cfg, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	cfg.Path = path
	return cfg, nil
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// Parse decodes and validates a config; filename only labels problems.
// It returns every problem found as Problems (sorted by position), or a
// Config with all defaults filled in. It never panics.
func Parse(filename string, data []byte) (cfg *Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, Problems{{File: filename, Line: 1, Col: 1, Message: fmt.Sprintf("%s%v", internalError, r)}}
		}
	}()
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Problems{{File: filename, Line: 1, Col: 1, Message: "empty config"}}
		}
		return nil, Problems{yamlProblem(filename, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Problems{{File: filename, Line: extra.Line, Col: extra.Column, Message: "more than one YAML document; a config is one document"}}
	} else if !errors.Is(err, io.EOF) {
		return nil, Problems{yamlProblem(filename, err)}
	}

	d := newDecoder(filename)
	c := &Config{}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if rd := resolve(doc); rd != nil && isNull(rd) {
		return nil, Problems{{File: filename, Line: 1, Col: 1, Message: "empty config"}}
	}
	if resolve(doc) == nil || resolve(doc).Kind != yaml.MappingNode {
		return nil, Problems{{File: filename, Line: max(doc.Line, 1), Col: max(doc.Column, 1), Message: "the config must be a mapping of sections (mistral:, keys:, ...), got " + kindName(doc)}}
	}
	d.decode("", doc, reflect.ValueOf(c).Elem())
	checkExplicitZeros(d, c)
	applyDefaults(c)
	if !d.overflow {
		(&validator{d: d, cfg: c}).validate()
	}
	if len(d.probs) > 0 {
		return nil, d.probs.sorted()
	}
	sum := sha256.Sum256(data)
	c.hash = hex.EncodeToString(sum[:])
	return c, nil
}

// yamlProblem turns a YAML syntax error into a located Problem.
func yamlProblem(filename string, err error) Problem {
	p := Problem{File: filename, Line: 1, Col: 1, Message: err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		p.Message = te.Errors[0]
	}
	if m := yamlLineRE.FindStringSubmatch(p.Message); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
			p.Line = n
		}
		p.Message = p.Message[len(m[0]):]
	}
	p.Message = "invalid YAML: " + strings.TrimPrefix(p.Message, "yaml: ")
	return p
}

// Hash returns the SHA-256 (hex) of the source the config was parsed from.
func (c *Config) Hash() string { return c.hash }

// Key returns the managed key named name.
func (c *Config) Key(name string) (*Key, bool) {
	for i := range c.Keys {
		if c.Keys[i].Name == name {
			return &c.Keys[i], true
		}
	}
	return nil, false
}

// Workspace returns the workspace named name.
func (c *Config) Workspace(name string) (*Workspace, bool) {
	for i := range c.Workspaces {
		if c.Workspaces[i].Name == name {
			return &c.Workspaces[i], true
		}
	}
	return nil, false
}

// Role returns the role named name.
func (c *Config) Role(name string) (*Role, bool) {
	r, ok := c.Roles[name]
	if !ok {
		return nil, false
	}
	return &r, true
}

// checkExplicitZeros reports numbers written as zero where zero would be
// silently replaced by a default; it runs before applyDefaults.
func checkExplicitZeros(d *decoder, c *Config) {
	v := &validator{d: d, cfg: c}
	if v.set("jobs.rotate.concurrency") && c.Jobs.Rotate.Concurrency == 0 {
		v.errorf("jobs.rotate.concurrency", "must be between 1 and 64")
	}
	if v.set("gateway.max_body_bytes") && c.Gateway.MaxBodyBytes == 0 {
		v.errorf("gateway.max_body_bytes", "must be positive")
	}
	if v.set("gateway.max_connections") && c.Gateway.MaxConnections == 0 {
		v.errorf("gateway.max_connections", "must be at least 1")
	}
}
