package kubernetes_test

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// createSecretRE matches a documented `kubectl ... create secret generic
// NAME` command (continued lines joined) and its --from-file=KEY= parts.
var (
	createSecretRE = regexp.MustCompile(`create secret generic ([a-z0-9-]+)((?:\s+--from-file=[a-z0-9-]+=\S+)+)`)
	fromFileRE     = regexp.MustCompile(`--from-file=([a-z0-9-]+)=`)
)

// TestReadmeCreatesEverySecret: the README's `kubectl create secret`
// commands create exactly the Secrets and keys the pods reference, so
// following it starts every pod.
func TestReadmeCreatesEverySecret(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	documented := map[string]bool{}
	for _, m := range createSecretRE.FindAllStringSubmatch(text, -1) {
		for _, k := range fromFileRE.FindAllStringSubmatch(m[2], -1) {
			documented[m[1]+"/"+k[1]] = true
		}
	}
	b := loadBuilt(t)
	used := map[string]bool{}
	for _, d := range b.o.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					used[e.ValueFrom.SecretKeyRef.Name+"/"+e.ValueFrom.SecretKeyRef.Key] = true
				}
			}
		}
	}
	if len(used) == 0 {
		t.Fatal("no pod reads a Secret")
	}
	if got, want := slices.Sorted(maps.Keys(documented)), slices.Sorted(maps.Keys(used)); !slices.Equal(got, want) {
		t.Errorf("README creates %v, the pods read %v", got, want)
	}
}
