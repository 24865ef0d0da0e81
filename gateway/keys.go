package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrbacd/mrbacd/secrets"
)

// upKey is one cached upstream key. The plaintext lives only here and in
// the Authorization header of upstream requests.
type upKey struct {
	apiKey  string
	keyID   string
	version secrets.Version
	authHdr []string // the Authorization header value, "Bearer " + apiKey, built once
}

// errNoKey: the workspace's key could not be read yet.
var errNoKey = errors.New("upstream key not available")

// keyCache holds one workspace's upstream key and refreshes it from the store.
type keyCache struct {
	workspace string
	keyName   string
	store     KeyReader
	target    secrets.Target
	log       *slog.Logger

	cur  atomic.Pointer[upKey]
	stop context.CancelFunc // ends the poller
	mu   sync.Mutex         // serializes store reads
	// lastSame is when a read after an upstream 401 last found the store
	// still holding the refused key (under mu): a burst of 401s for a key
	// revoked without rotation then reads the store once per
	// minRereadAfter401, not once per request.
	lastSame time.Time
}

// minRereadAfter401 bounds store reads triggered by upstream 401s.
const minRereadAfter401 = time.Second

// get returns the cached key or nil.
func (k *keyCache) get() *upKey { return k.cur.Load() }

// poll compares the store's current version with the cached one and
// re-reads on change. It never logs key material.
func (k *keyCache) poll(ctx context.Context) error {
	d, err := k.store.Describe(ctx, k.target)
	if err != nil {
		return fmt.Errorf("describe key %s: %w", k.keyName, err)
	}
	if c := k.get(); c != nil && d.Exists && d.Current == c.version {
		return nil
	}
	_, err = k.reload(ctx, nil)
	return err
}

// reload reads the store. With stale set (the key an upstream 401 refused),
// it returns at once when another caller already replaced stale.
func (k *keyCache) reload(ctx context.Context, stale *upKey) (*upKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.get()
	if stale != nil && c != nil && c != stale {
		return c, nil
	}
	if stale != nil && c == stale && time.Since(k.lastSame) < minRereadAfter401 {
		return c, nil
	}
	v, err := k.store.Read(ctx, k.target)
	if err != nil {
		return k.get(), fmt.Errorf("read key %s: %w", k.keyName, err)
	}
	if v.APIKey == "" {
		return k.get(), fmt.Errorf("read key %s: %w: empty api_key", k.keyName, errNoKey)
	}
	old := k.get()
	if stale != nil && stale.apiKey == v.APIKey {
		k.lastSame = time.Now()
	}
	if old != nil && old.apiKey == v.APIKey {
		if old.version != v.Version {
			nk := *old
			nk.version = v.Version
			k.cur.Store(&nk)
			return &nk, nil
		}
		return old, nil
	}
	nk := &upKey{apiKey: v.APIKey, keyID: v.KeyID, version: v.Version, authHdr: []string{"Bearer " + v.APIKey}}
	k.cur.Store(nk)
	if old != nil {
		k.log.Info("gateway upstream key changed", "workspace", k.workspace, "key_name", k.keyName,
			"key_id", v.KeyID, "old_key_id", old.keyID, "version", string(v.Version))
	}
	return nk, nil
}

// run polls until ctx ends.
func (k *keyCache) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, every*5)
			if err := k.poll(pctx); err != nil && ctx.Err() == nil {
				k.log.Warn("gateway key poll failed", "workspace", k.workspace, "key_name", k.keyName, "err", err)
			}
			cancel()
		}
	}
}
