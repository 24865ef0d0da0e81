package daemon_test

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// vmRSS reads a process's resident set size in kB from /proc.
func vmRSS(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// TestMeasure prints the idle RSS of `mrbacd run` managing 50 keys (all
// bootstrapped, so the store and journal hold them) and its start-to-ready
// time (process start to READY=1 on $NOTIFY_SOCKET, and to the first answer
// on the admin socket). It asserts nothing about the figures (targets:
// under 30 MB and under 200 ms); run it with
//
//	go test -count=1 -run TestMeasure -v ./test/daemon/
func TestMeasure(t *testing.T) {
	const keys, starts = 50, 3
	e := newEnv(t, startSandbox(t))
	e.writeConfig(cfgOpts{keys: keys, propagationWait: "1s"})
	p := e.start()
	if r := e.ctl("run", "rotate", "--wait"); r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("rotated %d of %d keys (%d bootstrapped)", keys, keys, keys)) {
		t.Fatalf("bootstrapping %d keys: %+v", keys, r)
	}
	p.stop(t, syscall.SIGTERM, 6*time.Second)

	var ready, answered []time.Duration
	var rss []int
	for i := 0; i < starts; i++ {
		p := e.start()
		ready = append(ready, p.ready)
		answered = append(answered, p.answered)
		select { // an idle window: timers armed, nothing running
		case <-p.done:
			t.Fatalf("the daemon exited while idle (%d)", p.code)
		case <-time.After(2 * time.Second):
		}
		if r := e.ctl("status"); r.code != 0 {
			t.Fatalf("status: %+v", r)
		}
		rss = append(rss, vmRSS(t, p.cmd.Process.Pid))
		if code, _ := p.stop(t, syscall.SIGTERM, 6*time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i] < ready[j] })
	sort.Slice(answered, func(i, j int) bool { return answered[i] < answered[j] })
	sort.Ints(rss)
	med := starts / 2
	fmt.Printf("mrbacd run, %d managed keys, %d starts:\n", keys, starts)
	fmt.Printf("  start to READY=1:        median %v (min %v, max %v)  target < 200ms: ratio %.2f\n",
		ready[med].Round(time.Millisecond), ready[0].Round(time.Millisecond), ready[starts-1].Round(time.Millisecond),
		float64(ready[med])/float64(200*time.Millisecond))
	fmt.Printf("  start to socket answer:  median %v (min %v, max %v)\n",
		answered[med].Round(time.Millisecond), answered[0].Round(time.Millisecond), answered[starts-1].Round(time.Millisecond))
	fmt.Printf("  idle VmRSS after 2s:     median %.1f MB (min %.1f, max %.1f)  target < 30 MB: ratio %.2f\n",
		float64(rss[med])/1024, float64(rss[0])/1024, float64(rss[starts-1])/1024, float64(rss[med])/1024/30)
}
