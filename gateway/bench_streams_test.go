package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mrbacd/mrbacd/internal/testenv"
)

// BenchmarkStreams (issue 11's capacity goal): N concurrent streaming
// requests (MRBACD_BENCH_STREAMS, default 5000) against an upstream that
// sends a chunk every 50 ms (40 chunks each, after all N are open), in
// three phases: direct to the upstream, through a bare
// httputil.ReverseProxy (the floor), and through the gateway. The upstream
// and the load client run in child processes (this test binary re-run),
// so this process holds nothing but the proxy under test: its resident
// memory and CPU are the proxy's. Each chunk carries its send time; the
// client records receive minus send, so a phase's latency less the direct
// phase's is what the proxy adds per chunk.
//
// Reported per proxy: resident memory (VmRSS, after a GC and
// FreeOSMemory before the phase) and Go heap+stacks per open stream, CPU
// per relayed chunk (getrusage of this process while the streams flow),
// and chunk latency p50/p99 with the part added over direct. The process
// raises its open-files limit to the hard limit (each stream is two
// sockets here, one in each child).
func BenchmarkStreams(b *testing.B) {
	n := int(envSeconds("MRBACD_BENCH_STREAMS", 5000, 9000) / time.Second)
	raiseNoFile(b)
	type result struct {
		name               string
		rssPer, heapPer    float64 // bytes per open stream
		cpuPerChunk        time.Duration
		p50, p99           time.Duration
		chunks, errs, open int
	}
	var results []result
	for _, phase := range []string{"direct", "bare", "gateway"} {
		up := startBenchChild(b, "upstream", map[string]string{"MRBACD_BENCH_N": strconv.Itoa(n)})
		var target, token string
		var inflight func() int64
		switch phase {
		case "direct":
			target, token = up.addr, "unused"
		case "bare":
			var open atomic.Int64
			u, _ := url.Parse(up.addr)
			rp := &httputil.ReverseProxy{
				Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Header.Set("Authorization", "Bearer up") },
				Transport:     NewTransport(),
				FlushInterval: -1,
				ErrorLog:      log.New(io.Discard, "", 0),
			}
			target = startServer(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				open.Add(1)
				defer open.Add(-1)
				rp.ServeHTTP(w, r)
			}))
			token, inflight = "unused", open.Load
		case "gateway":
			e := newEnv(b, withRoles(map[string]Role{"bench": {
				Models: []string{"mistral-small-latest"}, MaxTokensPerRequest: 64,
				DailyTokens: 1 << 50, HourlyUSD: 1e12, DailyUSD: 1e12, MaxConcurrent: 1 << 30,
			}}), withOptions(func(o *Options) { o.UpstreamURL = up.addr }))
			e.gw.log = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			l := e.principal("bench").ledger
			target, token, inflight = e.url, e.tokens["bench"], l.inflight.Load
		}
		runtime.GC()
		debug.FreeOSMemory()
		rss0, heap0 := rssBytes(), heapBytes()
		cl := startBenchChild(b, "client", map[string]string{"MRBACD_BENCH_N": strconv.Itoa(n), "MRBACD_BENCH_URL": target + pathChat, "MRBACD_BENCH_TOKEN": token})
		r := result{name: phase}
		var cpu0 time.Duration
		if inflight != nil {
			waitOpen(b, inflight, int64(n), cl)
			cpu0 = cpuTime()
			// sleep: the benchmark's pacing, the streams flow a second before memory is sampled mid-way
			time.Sleep(time.Second)
			r.open = int(inflight())
			r.rssPer = float64(rssBytes()-rss0) / float64(n)
			r.heapPer = float64(heapBytes()-heap0) / float64(n)
		}
		var out benchClientResult
		if err := json.NewDecoder(cl.stdout).Decode(&out); err != nil {
			b.Fatalf("%s: client result: %v", phase, err)
		}
		cl.wait(b)
		if inflight != nil {
			r.cpuPerChunk = (cpuTime() - cpu0) / time.Duration(max(out.Chunks, 1))
		}
		up.close(b)
		r.p50, r.p99, r.chunks, r.errs = time.Duration(out.P50), time.Duration(out.P99), out.Chunks, out.Errors
		if out.Errors > 0 {
			b.Logf("%s: %d errors, first: %s", phase, out.Errors, out.FirstErr)
		}
		results = append(results, r)
	}
	d := results[0]
	for _, r := range results[1:] {
		b.ReportMetric(r.rssPer/1024, r.name+"-rss-KiB/stream")
		b.ReportMetric(r.heapPer/1024, r.name+"-heap-KiB/stream")
		b.ReportMetric(us(r.cpuPerChunk), r.name+"-cpu-us/chunk")
		b.ReportMetric(us(r.p50-d.p50), r.name+"-added-p50-us")
		b.ReportMetric(us(r.p99-d.p99), r.name+"-added-p99-us")
	}
	for _, r := range results {
		b.Logf("%-7s %d streams (%d open mid-way), %d chunks, %d errors: latency p50 %v p99 %v (added over direct p50 %v p99 %v) | RSS %.1f KiB/stream (%.0f MB for %d), heap+stacks %.1f KiB/stream | CPU %v/chunk",
			r.name, n, r.open, r.chunks, r.errs, r.p50, r.p99, r.p50-d.p50, r.p99-d.p99, r.rssPer/1024, r.rssPer*float64(n)/1e6, n, r.heapPer/1024, r.cpuPerChunk)
	}
	g, p := results[2], results[1]
	b.Logf("gateway / bare proxy: RSS %.2f×, CPU per chunk %.2f×, added p99 %v vs %v",
		g.rssPer/p.rssPer, float64(g.cpuPerChunk)/float64(p.cpuPerChunk), g.p99-d.p99, p.p99-d.p99)
	b.ReportMetric(0, "ns/op")
}

// raiseNoFile sets the open-files soft limit to the hard limit (children
// inherit it).
func raiseNoFile(b *testing.B) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		b.Fatal(err)
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		b.Fatal(err)
	}
	b.Logf("open files limit %d", rl.Cur)
}

// waitOpen waits until nearly all n streams are open through the proxy
// (a stream that failed early must not stall the run), failing b when the
// client exits first or a minute passes.
func waitOpen(b *testing.B, inflight func() int64, n int64, cl *benchChild) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exited := false
	open := testenv.Until(ctx, func() bool {
		if inflight() >= n-n/100 {
			return true
		}
		select {
		case <-cl.done:
			exited = true
			return true
		default:
			return false
		}
	})
	if exited {
		out, _ := io.ReadAll(cl.stdout)
		b.Fatalf("the client exited (%v %v) with %d of %d streams open: %s", cl.state, cl.err, inflight(), n, out)
	}
	if !open {
		b.Fatalf("only %d of %d streams opened", inflight(), n)
	}
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func heapBytes() int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}

// benchChild is this test binary re-run as the upstream or the client.
type benchChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	addr   string // the upstream's base URL
	done   chan struct{}
	state  *os.ProcessState
	err    error
}

func startBenchChild(b *testing.B, role string, env map[string]string) *benchChild {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "MRBACD_BENCH_CHILD="+role)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &benchChild{cmd: cmd, stdin: in, stdout: bufio.NewReader(out), done: make(chan struct{})}
	go func() {
		st, err := cmd.Process.Wait()
		c.state, c.err = st, err
		close(c.done)
	}()
	b.Cleanup(func() { in.Close(); cmd.Process.Kill(); <-c.done })
	if role == "upstream" {
		line, err := c.stdout.ReadString('\n')
		if err != nil {
			b.Fatalf("upstream child: %v", err)
		}
		c.addr = strings.TrimSpace(line)
	}
	return c
}

func (c *benchChild) close(b *testing.B) { c.stdin.Close(); c.wait(b) }

func (c *benchChild) wait(b *testing.B) {
	<-c.done
	if c.err != nil || !c.state.Success() {
		b.Logf("child: %v %v", c.state, c.err)
	}
}

// TestMain runs the benchmark children when asked (MRBACD_BENCH_CHILD).
func TestMain(m *testing.M) {
	switch os.Getenv("MRBACD_BENCH_CHILD") {
	case "upstream":
		os.Exit(benchUpstreamMain())
	case "client":
		os.Exit(benchClientMain())
	}
	os.Exit(m.Run())
}

const (
	benchChunks   = 40
	benchInterval = 50 * time.Millisecond
)

// benchUpstreamMain serves streams: headers and a first chunk at once;
// once N requests are open, a chunk every 50 ms (at a random phase per
// stream), each stamped with its send time, the last with usage. It prints
// its URL and serves until stdin closes.
func benchUpstreamMain() int {
	n, _ := strconv.Atoi(os.Getenv("MRBACD_BENCH_N"))
	var arrived atomic.Int64
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fl := w.(http.Flusher)
		buf := make([]byte, 0, 512)
		chunk := func(i int, last bool) bool {
			buf = append(buf[:0], `data: {"t":`...)
			buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
			buf = append(buf, `,"id":"cmpl-bench","object":"chat.completion.chunk","created":1796650000,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"lorem ipsum dolor sit amet "},"finish_reason":null}]`...)
			if last {
				buf = append(buf, `,"usage":{"prompt_tokens":12,"completion_tokens":40,"total_tokens":52}`...)
			}
			buf = append(buf, "}\n\n"...)
			if last {
				buf = append(buf, "data: [DONE]\n\n"...)
			}
			if _, err := w.Write(buf); err != nil {
				return false
			}
			fl.Flush()
			return true
		}
		chunk(0, false)
		if arrived.Add(1) == int64(n) {
			close(release)
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		// sleep: each stream starts its 50 ms pace at a random phase, as independent upstream generations do
		time.Sleep(time.Duration(rand.Int64N(int64(benchInterval))))
		t := time.NewTicker(benchInterval)
		defer t.Stop()
		for i := 1; i <= benchChunks; i++ {
			if !chunk(i, i == benchChunks) {
				return
			}
			if i < benchChunks {
				<-t.C
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	fmt.Println("http://" + ln.Addr().String())
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// benchClientResult is what the client child prints.
type benchClientResult struct {
	Chunks   int    `json:"chunks"`
	Errors   int    `json:"errors"`
	FirstErr string `json:"first_err"`
	P50      int64  `json:"p50_ns"`
	P99      int64  `json:"p99_ns"`
}

// benchClientMain opens N streams (started over about a second), reads
// every chunk and records its latency (receive minus send time), leaving
// out each stream's first chunk (sent before all streams were open).
func benchClientMain() int {
	n, _ := strconv.Atoi(os.Getenv("MRBACD_BENCH_N"))
	target, token := os.Getenv("MRBACD_BENCH_URL"), os.Getenv("MRBACD_BENCH_TOKEN")
	tr := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true, IdleConnTimeout: time.Minute}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	body := chatBody("mistral-small-latest", 64, true, "stream me a long answer")
	var mu sync.Mutex
	var res benchClientResult
	var lat []int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine, err := benchStream(client, target, token, body)
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			if err != nil {
				if res.Errors++; res.FirstErr == "" {
					res.FirstErr = err.Error()
				}
			}
		}()
		// sleep: the client ramps its streams up (a ramp, not a SYN flood)
		time.Sleep(200 * time.Microsecond)
	}
	wg.Wait()
	slices.Sort(lat)
	res.Chunks = len(lat)
	if len(lat) > 0 {
		res.P50, res.P99 = lat[len(lat)/2], lat[int(0.99*float64(len(lat)-1))]
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

var stampPrefix = []byte(`data: {"t":`)

// benchStream runs one stream and returns its chunk latencies.
func benchStream(c *http.Client, target, token, body string) ([]int64, error) {
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	br := bufio.NewReaderSize(resp.Body, 8<<10)
	lat := make([]int64, 0, benchChunks)
	first := true
	for {
		line, err := br.ReadSlice('\n')
		now := time.Now().UnixNano()
		if rest, ok := bytes.CutPrefix(line, stampPrefix); ok {
			if j := bytes.IndexByte(rest, ','); j > 0 {
				if t, perr := strconv.ParseInt(string(rest[:j]), 10, 64); perr == nil && !first {
					lat = append(lat, now-t)
				}
			}
			first = false
		}
		if err == io.EOF {
			if len(lat) != benchChunks {
				return lat, fmt.Errorf("stream ended after %d chunks", len(lat))
			}
			return lat, nil
		}
		if err != nil {
			return lat, err
		}
	}
}
