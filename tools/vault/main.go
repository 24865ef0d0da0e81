// Command vault builds HashiCorp Vault from its Go module so tests can run a
// real `vault server -dev`. It lives in a module of its own to keep Vault's
// dependency tree out of mrbacd's go.mod.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
