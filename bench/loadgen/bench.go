package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// get sends one GET with Connection: close on an established TLS
// connection and reads the whole body into w. It returns the body size.
func get(c net.Conn, host, path string, w io.Writer, buf []byte) (int64, error) {
	return request(c, host, path, "close", w, buf)
}

// request is get with the Connection header given: "keep-alive" leaves
// the connection open after the response.
func request(c net.Conn, host, path, connection string, w io.Writer, buf []byte) (int64, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: inspectproxy-bench\r\nConnection: %s\r\n\r\n", path, host, connection); err != nil {
		return 0, fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 16<<10), nil)
	if err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	n, err := io.CopyBuffer(w, resp.Body, buf)
	if err != nil {
		return n, fmt.Errorf("read body: %w", err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("body %d bytes, Content-Length %d", n, resp.ContentLength)
	}
	return n, nil
}

// ---- rate ----

func cmdRate(args []string) error {
	fs := flag.NewFlagSet("rate", flag.ExitOnError)
	var c common
	c.register(fs)
	conc := fs.Int("c", 16, "concurrent clients")
	dur := fs.Duration("d", 10*time.Second, "measured duration")
	warm := fs.Duration("warmup", 2*time.Second, "unmeasured warm-up before it")
	path := fs.String("path", "/small", "small file to GET")
	pid := fs.Int("pid", 0, "proxy process whose CPU time is measured")
	cfg, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if *warm > 0 {
		runRate(&c, cfg, *conc, *warm, *path)
	}
	cpu0 := treeCPU(*pid)
	lat, errs, sample, elapsed := runRate(&c, cfg, *conc, *dur, *path)
	cpu := treeCPU(*pid) - cpu0
	r := Result{Label: c.label, Test: "rate", Concurrency: *conc, Seconds: round(elapsed.Seconds(), 2), Ops: len(lat), Errors: errs, ErrorSample: sample}
	if *pid > 0 && len(lat) > 0 {
		r.ProxyCPUSeconds = round(cpu, 2)
		r.ProxyCPUMSPerOp = round(cpu*1000/float64(len(lat)), 3)
	}
	if elapsed > 0 {
		r.OpsPerSec = round(float64(len(lat))/elapsed.Seconds(), 1)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		r.P50MS = round(pct(lat, 0.50), 2)
		r.P90MS = round(pct(lat, 0.90), 2)
		r.P99MS = round(pct(lat, 0.99), 2)
	}
	return emit(r, c.out)
}

// runRate runs conc workers for d, each doing new connection + CONNECT +
// TLS handshake + GET (Connection: close) in a loop. Latencies are in ms.
func runRate(c *common, cfg *tls.Config, conc int, d time.Duration, path string) (lat []float64, errs int, sample string, elapsed time.Duration) {
	start := time.Now()
	deadline := start.Add(d)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			var myErrs int
			var myErr string
			buf := make([]byte, 32<<10)
			dialer := &net.Dialer{Timeout: c.timeout}
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := rateOp(c, cfg, dialer, path, buf); err != nil {
					myErrs++
					if myErr == "" {
						myErr = err.Error()
					}
					time.Sleep(10 * time.Millisecond) // do not spin on a dead proxy
					continue
				}
				mine = append(mine, float64(time.Since(t0).Microseconds())/1000)
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += myErrs
			if sample == "" {
				sample = myErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lat, errs, sample, time.Since(start)
}

func rateOp(c *common, cfg *tls.Config, d *net.Dialer, path string, buf []byte) error {
	conn, _, err := dialTunnel(d, c.proxy, c.target, c.timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(c.timeout))
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	n, err := get(tc, c.target, path, io.Discard, buf)
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("empty body")
	}
	return nil
}

func pct(sorted []float64, p float64) float64 {
	i := int(p * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func round(v float64, digits int) float64 {
	s := strconv.FormatFloat(v, 'f', digits, 64)
	r, _ := strconv.ParseFloat(s, 64)
	return r
}

// ---- download ----

func cmdDownload(args []string) error {
	fs := flag.NewFlagSet("download", flag.ExitOnError)
	var c common
	c.register(fs)
	path := fs.String("path", "/big", "big file to GET")
	crcFile := fs.String("crcfile", "", "file with `size crc` written by mkfile; the body must match")
	runs := fs.Int("runs", 3, "downloads; the median is reported")
	pid := fs.Int("pid", 0, "proxy process whose CPU time is measured")
	cfg, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	var wantSize int64 = -1
	var wantCRC uint32
	if *crcFile != "" {
		b, err := os.ReadFile(*crcFile)
		if err != nil {
			return err
		}
		if _, err := fmt.Sscanf(string(b), "%d %x", &wantSize, &wantCRC); err != nil {
			return fmt.Errorf("%s: %w", *crcFile, err)
		}
	}
	r := Result{Label: c.label, Test: "download"}
	buf := make([]byte, 256<<10)
	cpu0 := treeCPU(*pid)
	var total int64
	for i := range *runs {
		conn, _, err := dialTunnel(&net.Dialer{Timeout: c.timeout}, c.proxy, c.target, c.timeout)
		if err != nil {
			return err
		}
		tc := tls.Client(conn, cfg)
		_ = tc.SetDeadline(time.Now().Add(c.timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return fmt.Errorf("handshake: %w", err)
		}
		_ = tc.SetDeadline(time.Now().Add(10 * time.Minute))
		h := crc32.New(castagnoli)
		t0 := time.Now()
		n, err := get(tc, c.target, *path, h, buf)
		el := time.Since(t0)
		tc.Close()
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		if wantSize >= 0 && (n != wantSize || h.Sum32() != wantCRC) {
			return fmt.Errorf("run %d: WRONG BYTES: got %d bytes crc %08x, want %d bytes crc %08x", i+1, n, h.Sum32(), wantSize, wantCRC)
		}
		r.Bytes = n
		total += n
		r.Runs = append(r.Runs, round(float64(n)/el.Seconds()/(1<<20), 1))
		fmt.Fprintf(os.Stderr, "download %s run %d: %d bytes in %.2fs, crc ok=%v\n", c.label, i+1, n, el.Seconds(), wantSize >= 0)
	}
	s := slices.Clone(r.Runs)
	slices.Sort(s)
	r.MiBPerSec = s[len(s)/2]
	if *pid > 0 && total > 0 {
		r.ProxyCPUSeconds = round(treeCPU(*pid)-cpu0, 2)
		r.ProxyCPUSecPerGiB = round(r.ProxyCPUSeconds/(float64(total)/(1<<30)), 2)
	}
	return emit(r, c.out)
}

// ---- idle ----

func cmdIdle(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	var c common
	c.register(fs)
	n := fs.Int("n", 5000, "tunnels to hold")
	openers := fs.Int("c", 64, "tunnels opened concurrently")
	pid := fs.Int("pid", 0, "proxy process whose RSS (with its child processes) is measured")
	settle := fs.Duration("settle", 3*time.Second, "wait after the last tunnel opened before measuring")
	hold := fs.Duration("hold", 0, "keep the tunnels open this much longer (or until SIGTERM)")
	maxOpen := fs.Duration("max-open", 5*time.Minute, "give up opening after this long")
	path := fs.String("get", "", "after the handshake, one keep-alive GET of this path, so both directions have carried data (empty: none)")
	cfg, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	var base procStat
	if *pid > 0 {
		base = treeStat(*pid)
	}
	var peakPoll atomic.Int64
	stopPoll := make(chan struct{})
	pollDone := make(chan struct{})
	go func() { // VmHWM misses child processes' sum; poll VmRSS too
		defer close(pollDone)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopPoll:
				return
			case <-t.C:
				if *pid > 0 {
					if s := treeStat(*pid); s.rss > peakPoll.Load() {
						peakPoll.Store(s.rss)
					}
				}
			}
		}
	}()
	t0 := time.Now()
	giveUp := t0.Add(*maxOpen)
	conns := make([]*tls.Conn, *n)
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range *openers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &net.Dialer{Timeout: c.timeout}
			for {
				i := int(next.Add(1) - 1)
				if i >= *n || time.Now().After(giveUp) {
					return
				}
				conn, _, err := dialTunnel(d, c.proxy, c.target, c.timeout)
				if err == nil {
					tc := tls.Client(conn, cfg)
					_ = tc.SetDeadline(time.Now().Add(c.timeout))
					if err = tc.Handshake(); err == nil && *path != "" {
						_, err = request(tc, c.target, *path, "keep-alive", io.Discard, nil)
					}
					if err == nil {
						_ = tc.SetDeadline(time.Time{})
						conns[i] = tc
						continue
					}
					conn.Close()
				}
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}()
	}
	wg.Wait()
	openTime := time.Since(t0)
	opened := 0
	for _, tc := range conns {
		if tc != nil {
			opened++
		}
	}
	fmt.Fprintf(os.Stderr, "idle %s: %d/%d tunnels open in %.1fs (%d failed%s)\n", c.label, opened, *n, openTime.Seconds(), failed.Load(), errNote(&firstErr))
	time.Sleep(*settle)
	r := Result{Label: c.label, Test: "idle", Tunnels: *n, Opened: opened, OpenSeconds: round(openTime.Seconds(), 1), Errors: int(failed.Load()), IdleGet: *path}
	if s, ok := firstErr.Load().(string); ok {
		r.ErrorSample = s
	}
	if *pid > 0 {
		held := treeStat(*pid)
		close(stopPoll)
		<-pollDone
		r.BaseRSSKiB, r.HoldRSSKiB = base.rss, held.rss
		r.PeakRSSKiB = max(held.hwm, peakPoll.Load(), held.rss)
		r.ProxyFDs, r.ProxyThreads, r.ProxyPipeFDs = held.fds, held.threads, held.pipe
		if opened > 0 {
			r.PerTunnelKiB = round(float64(held.rss-base.rss)/float64(opened), 1)
		}
	} else {
		close(stopPoll)
		<-pollDone
	}
	// Are the tunnels still up? A proxy that dropped them would look cheap.
	alive := 0
	for _, tc := range conns {
		if tc == nil {
			continue
		}
		_ = tc.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [1]byte
		if _, err := tc.Read(b[:]); err != nil && isTimeoutErr(err) {
			alive++
		}
	}
	if alive < opened {
		fmt.Fprintf(os.Stderr, "idle %s: only %d of %d tunnels still open at measurement\n", c.label, alive, opened)
		r.Errors += opened - alive
	}
	if err := emit(r, c.out); err != nil {
		return err
	}
	if *hold > 0 {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		select {
		case <-sig:
		case <-time.After(*hold):
		}
	}
	for _, tc := range conns {
		if tc != nil {
			tc.NetConn().Close()
		}
	}
	return nil
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func errNote(v *atomic.Value) string {
	if s, ok := v.Load().(string); ok {
		return "; first: " + s
	}
	return ""
}

// procStat is a process tree's memory in KiB, open fds and threads.
type procStat struct {
	rss, hwm      int64
	fds, threads  int
	sockets, pipe int
}

// treeStat sums VmRSS and VmHWM over pid and its descendants.
func treeStat(pid int) procStat {
	var s procStat
	for _, p := range descendants(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "VmRSS:":
				s.rss += v
			case "VmHWM:":
				s.hwm += v
			case "Threads:":
				s.threads += int(v)
			}
		}
		fd := fdStat(p)
		s.fds += fd.fds
		s.sockets += fd.sockets
		s.pipe += fd.pipe
	}
	return s
}

func fdStat(pid int) procStat {
	var s procStat
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return s
	}
	for _, e := range ents {
		s.fds++
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(l, "socket:"):
			s.sockets++
		case strings.HasPrefix(l, "pipe:"):
			s.pipe++
		}
	}
	return s
}

// treeCPU is the user+system CPU seconds of pid and its descendants (0
// for pid 0). Clock ticks are taken as 100 per second, Linux's USER_HZ.
func treeCPU(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	var ticks int64
	for _, p := range descendants(pid) {
		f := statFields(strconv.Itoa(p))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return float64(ticks) / 100
}

// statFields are the fields of /proc/PID/stat after "pid (comm)"; comm may
// hold spaces and parentheses, so they start after the last ')'.
func statFields(pid string) []string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func descendants(pid int) []int {
	parent := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(e.Name()) // state ppid ...
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[pp] = append(parent[pp], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, parent[out[i]]...)
	}
	sort.Ints(out[1:])
	return out
}

// ---- mkfile ----

func cmdMkfile(args []string) error {
	fs := flag.NewFlagSet("mkfile", flag.ExitOnError)
	out := fs.String("out", "", "file to write")
	size := fs.Int64("size", 1<<30, "bytes")
	seed := fs.Uint64("seed", 1, "PRNG seed")
	_ = fs.Parse(args)
	if *out == "" {
		return errors.New("-out is required")
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	var key [32]byte
	key[0] = byte(*seed)
	rng := rand.NewChaCha8(key)
	h := crc32.New(castagnoli)
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	buf := make([]byte, 1<<20)
	for left := *size; left > 0; {
		n := int64(len(buf))
		if left < n {
			n = left
		}
		_, _ = rng.Read(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		return err
	}
	return os.WriteFile(*out+".crc", fmt.Appendf(nil, "%d %08x\n", *size, h.Sum32()), 0o644)
}
