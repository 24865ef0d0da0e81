package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/mistral/sandbox"
)

// TestKeyPolicyPlanAndRotate: with the organization's key-expiration
// policy at 30 days and rotate_every at its 90-day default, `mrbacd rotate`
// says the policy shortened the new keys, and `mrbacd plan` (text and
// --json) puts their due_at a day and more before their expiry.
func TestKeyPolicyPlanAndRotate(t *testing.T) {
	w := newRotateWorld(t)
	w.sb.SetKeyPolicy(w.sb.AdminActor(), sandbox.KeyPolicy{MaxDays: 30})
	code, out, errOut := w.run("rotate", "--config", w.cfgPath)
	if code != exitOK {
		t.Fatalf("rotate: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "key-expiration policy shortened the new key's expiration_date") {
		t.Fatalf("rotate output does not say the policy shortened the keys:\n%s", out)
	}
	code, out, errOut = w.run("plan", "--config", w.cfgPath, "--json")
	if code != exitOK {
		t.Fatalf("plan --json: exit %d\n%s", code, errOut)
	}
	var p struct {
		Rotate []struct {
			Key            string `json:"key"`
			Due            bool   `json:"due"`
			CreatedAt      string `json:"created_at"`
			DueAt          string `json:"due_at"`
			ExpiresAt      string `json:"expires_at"`
			EarlyForExpiry bool   `json:"early_for_expiry"`
		} `json:"rotate"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil || len(p.Rotate) != 2 {
		t.Fatalf("plan --json: %v\n%s", err, out)
	}
	for _, it := range p.Rotate {
		due, err1 := time.Parse(time.RFC3339, it.DueAt)
		exp, err2 := time.Parse(time.RFC3339, it.ExpiresAt)
		created, err3 := time.Parse(time.RFC3339, it.CreatedAt)
		if err1 != nil || err2 != nil || err3 != nil || it.Due || !it.EarlyForExpiry {
			t.Fatalf("plan item %+v: want not due, early for expiry, with due_at and expires_at", it)
		}
		if !due.Before(exp.Add(-24*time.Hour)) || !due.Before(created.Add(90*24*time.Hour)) || exp.Sub(created) > 32*24*time.Hour {
			t.Fatalf("%s: due_at %s, expires_at %s, created %s: want due a day and more before a 30-day expiry", it.Key, due, exp, created)
		}
	}
	code, out, _ = w.run("plan", "--config", w.cfgPath)
	if code != exitOK || !strings.Contains(out, "(expires ") || !strings.Contains(out, "key-expiration policy") {
		t.Fatalf("plan text does not show the early due date:\n%s", out)
	}
}
