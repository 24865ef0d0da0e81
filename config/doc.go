// Package config holds mrbacd's configuration: the YAML schema, strict
// decoding with a file:line:col for every problem, defaults filled in one
// place (applyDefaults), and validation of values and cross-references.
//
// Load and Parse never stop at the first problem: they return Problems, a
// list of every problem found, each naming the file, the position of the
// offending YAML node and the field path (for example keys[2].store.backend).
//
// Secrets never appear in the config: fields such as the Mistral admin key,
// the Slack token or a Vault token are read through a *_env or *_file field
// and ResolveSecret; an inline secret-looking field is a problem that says
// how to fix it.
//
// The file store backend needs no secrets.file section: when it is absent,
// Secrets.File is filled with the default directory /var/lib/mrbacd/secrets.
package config
