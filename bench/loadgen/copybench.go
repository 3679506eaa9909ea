package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/inspectproxy/inspectproxy/internal/loopback"
	"github.com/inspectproxy/inspectproxy/internal/splice"
)

// ---- copybench ----

// cmdCopybench measures the byte copy alone, without TLS, nginx or other
// processes: source → relay → sink over loopback TCP in this process,
// the relay's Copy on a locked OS thread whose CPU time (user + system,
// getrusage RUSAGE_THREAD) is the copy's cost. The copies take turns,
// round by round, so the machine's other load hits them alike.
func cmdCopybench(args []string) error {
	fs := flag.NewFlagSet("copybench", flag.ExitOnError)
	size := fs.Int64("size", 1<<30, "bytes per copy")
	rounds := fs.Int("rounds", 5, "copies per variant, interleaved (median reported)")
	chunk := fs.Int("chunk", 256<<10, "the source's write size")
	_ = fs.Parse(args)
	pool := &splice.Pool{}
	variants := []struct {
		name string
		cp   func(dst, src *net.TCPConn) (int64, error)
	}{
		{"io.Copy", func(dst, src *net.TCPConn) (int64, error) { return io.Copy(dst, src) }},
		{"splice.Pool.Copy", func(dst, src *net.TCPConn) (int64, error) { return pool.Copy(dst, src) }},
	}
	type sample struct{ mibps, cpu, sys float64 }
	got := make([][]sample, len(variants))
	for r := range *rounds {
		for i, v := range variants {
			mibps, user, sys, err := copyOnce(v.cp, *size, *chunk)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", v.name, r+1, err)
			}
			gib := float64(*size) / (1 << 30)
			got[i] = append(got[i], sample{mibps, (user + sys) / gib, sys / gib})
		}
	}
	fmt.Printf("| copy | MiB/s | relay CPU s/GiB | of which system | rounds |\n|---|---:|---:|---:|---:|\n")
	for i, v := range variants {
		med := func(f func(sample) float64) (m, lo, hi float64) {
			var xs []float64
			for _, s := range got[i] {
				xs = append(xs, f(s))
			}
			slices.Sort(xs)
			return xs[len(xs)/2], xs[0], xs[len(xs)-1]
		}
		m, lo, hi := med(func(s sample) float64 { return s.mibps })
		c, clo, chi := med(func(s sample) float64 { return s.cpu })
		sy, _, _ := med(func(s sample) float64 { return s.sys })
		fmt.Printf("| %s | %.0f (%.0f–%.0f) | %.3f (%.3f–%.3f) | %.3f | %d |\n", v.name, m, lo, hi, c, clo, chi, sy, len(got[i]))
	}
	return nil
}

// copyOnce sends size bytes source → relay → sink and returns the
// throughput and the relay thread's user and system CPU seconds.
func copyOnce(cp func(dst, src *net.TCPConn) (int64, error), size int64, chunk int) (mibps, user, sys float64, err error) {
	source, rin, err := loopback.Pair()
	if err != nil {
		return 0, 0, 0, err
	}
	defer source.Close()
	defer rin.Close()
	rout, sink, err := loopback.Pair()
	if err != nil {
		return 0, 0, 0, err
	}
	defer rout.Close()
	defer sink.Close()
	go func() {
		buf := make([]byte, chunk)
		for left := size; left > 0; {
			n, err := source.Write(buf[:min(int64(len(buf)), left)])
			if err != nil {
				return
			}
			left -= int64(n)
		}
		_ = source.CloseWrite()
	}()
	sunk := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, sink)
		sunk <- n
	}()
	type out struct {
		n          int64
		err        error
		el         time.Duration
		user, syst float64
	}
	res := make(chan out, 1)
	go func() {
		runtime.LockOSThread() // the copy's CPU is this thread's
		defer runtime.UnlockOSThread()
		var r0, r1 unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_THREAD, &r0)
		t0 := time.Now()
		n, err := cp(rout, rin)
		el := time.Since(t0)
		_ = unix.Getrusage(unix.RUSAGE_THREAD, &r1)
		_ = rout.CloseWrite()
		sec := func(t unix.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
		res <- out{n, err, el, sec(r1.Utime) - sec(r0.Utime), sec(r1.Stime) - sec(r0.Stime)}
	}()
	o := <-res
	if o.err != nil {
		return 0, 0, 0, o.err
	}
	if n := <-sunk; n != size || o.n != size {
		return 0, 0, 0, fmt.Errorf("copied %d, sink got %d, sent %d", o.n, n, size)
	}
	return float64(size) / (1 << 20) / o.el.Seconds(), o.user, o.syst, nil
}
