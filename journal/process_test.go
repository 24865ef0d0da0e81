package journal

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
)

// TestMain lets the test binary act as a second process sharing the journal.
func TestMain(m *testing.M) {
	if mode := os.Getenv("STATE_TEST_CHILD"); mode != "" {
		os.Exit(child(mode, os.Getenv("STATE_TEST_PATH"), os.Getenv("STATE_TEST_NAME")))
	}
	os.Exit(m.Run())
}

// child races the parent's other child for keys: for each of 20 keys it
// tries BeginRotation and AcquireLease and prints what it won.
func child(mode, path, name string) int {
	ctx := context.Background()
	db, err := Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer db.Close()
	// Start together: say ready, then wait for the parent's go (a line on stdin).
	if err := os.WriteFile(path+".ready."+name, nil, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "waiting for go:", err)
		return 1
	}
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("key-%02d", i)
		err := db.BeginRotation(ctx, Rotation{ID: name + "-" + key, KeyName: key})
		switch {
		case err == nil:
			fmt.Println("rotation", key)
		case strings.Contains(err.Error(), ErrRotationInFlight.Error()):
		default:
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ok, err := db.AcquireLease(ctx, "lease-"+key, name, time.Hour)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if ok {
			fmt.Println("lease", key)
		}
		if _, _, err := db.Enqueue(ctx, Message{Dedupe: "msg-" + key, Kind: "k"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// Two real processes share the file: each key's rotation and lease are won
// exactly once, and each dedupe id is enqueued once.
func TestTwoProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	outs := make([]bytes.Buffer, 3)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	gos := make([]io.WriteCloser, len(outs))
	for i := range outs {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "STATE_TEST_CHILD=race", "STATE_TEST_PATH="+path, fmt.Sprintf("STATE_TEST_NAME=p%d", i))
		cmd.Stdout = &outs[i]
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if gos[i], err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := cmd.Wait(); err != nil {
				errs[i] = fmt.Errorf("child %d: %v: %s", i, err, stderr.String())
			}
		}(i)
	}
	testenv.WaitFor(t, 30*time.Second, "the children to open the journal", func() bool {
		ready, _ := filepath.Glob(path + ".ready.*")
		return len(ready) == len(outs)
	})
	for _, w := range gos {
		if _, err := io.WriteString(w, "go\n"); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wins := map[string]int{}
	for i := range outs {
		sc := bufio.NewScanner(&outs[i])
		for sc.Scan() {
			wins[sc.Text()]++
		}
	}
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("key-%02d", i)
		if wins["rotation "+key] != 1 || wins["lease "+key] != 1 {
			t.Errorf("%s: %d rotation wins, %d lease wins; want 1 each", key, wins["rotation "+key], wins["lease "+key])
		}
	}
	ctx := context.Background()
	if n, _ := db.PendingCount(ctx); n != 20 {
		t.Errorf("pending = %d, want 20 (one per dedupe id)", n)
	}
	if fl, _ := db.InFlightRotations(ctx); len(fl) != 20 {
		t.Errorf("in flight = %d, want 20", len(fl))
	}
}

// A rotation-like sequence handles a plaintext key only in the caller: the
// journal's files must not contain it (nor its distinctive suffix).
func TestNoPlaintextInJournal(t *testing.T) {
	ctx := context.Background()
	db, clk, path := openTest(t)
	buf := make([]byte, 24)
	rand.Read(buf)
	plaintext := "sk-test-" + hex.EncodeToString(buf)
	hidden := "sk-t****" + plaintext[len(plaintext)-4:] // what the platform shows as hidden_key

	rot := Rotation{ID: "rot-1", Status: StatusInFlight, KeyName: "dev-team-key", OldKeyID: "key-old", NewKeyName: "dev-team-key-20261127-rot1", Trigger: "cron"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	run, err := db.StartRun(ctx, "rotate", "cron", `{"force":true}`)
	must(err)
	ok, err := db.AcquireLease(ctx, "rotate:dev-team-key", "host:1", time.Minute)
	if err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	must(db.BeginRotation(ctx, rot))
	for _, step := range []Step{StepCreate, StepVerify, StepPublish, StepPropagate, StepReverify, StepRevoke} {
		clk.Add(time.Second)
		rot.Step = step
		rot.NewKeyID = "key-new"
		if step == "publish" {
			rot.StoreVersion = "3"
		}
		if step == "propagate" {
			rot.PropagateUntil = clk.Now().Add(time.Minute)
		}
		must(db.UpdateRotation(ctx, rot))
	}
	rot.Status = StatusDone
	must(db.UpdateRotation(ctx, rot))
	_, _, err = db.Enqueue(ctx, Message{Dedupe: "rotation:rot-1", Kind: "rotation_digest",
		Payload: []byte(`{"key_name":"dev-team-key","new_key_id":"key-new","hidden_key":"` + hidden + `"}`)})
	must(err)
	_, err = db.SyncFindings(ctx, "audit", []Finding{{ID: "unused:key-x", Kind: "unused", Subject: hidden}}, clk.Now())
	must(err)
	must(db.FinishRun(ctx, run, RunOK, "", `{"rotated":["dev-team-key"]}`))
	must(db.ReleaseLease(ctx, "rotate:dev-team-key", "host:1"))

	// Scan the live files (WAL included) before and after a checkpoint.
	scan := func(when string) {
		t.Helper()
		for _, suffix := range []string{"", "-wal", "-shm"} {
			b, err := os.ReadFile(path + suffix)
			if os.IsNotExist(err) {
				continue
			}
			must(err)
			if bytes.Contains(b, []byte(plaintext)) || bytes.Contains(b, []byte(plaintext[8:])) {
				t.Fatalf("%s: journal file %s contains the key plaintext", when, filepath.Base(path+suffix))
			}
		}
	}
	scan("live")
	must(db.Vacuum(ctx))
	scan("after checkpoint")
	// Sanity: the scan would find what it looks for.
	b, _ := os.ReadFile(path)
	if !bytes.Contains(b, []byte("dev-team-key-20261127-rot1")) {
		t.Fatal("scan sanity check failed: the new key name is not in the file")
	}
}
