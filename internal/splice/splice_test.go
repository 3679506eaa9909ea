package splice

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// copyFunc is a way to run Copy: on the sockets themselves (splice), or on
// wrappers that hide them (the read/write loop).
type copyFunc func(p *Pool, dst, src *net.TCPConn, count func(int64)) (int64, error)

func spliced(p *Pool, dst, src *net.TCPConn, count func(int64)) (int64, error) {
	return p.CopyProgress(dst, src, Progress{Moved: count})
}

// wrapped hides the *net.TCPConn so Copy takes its read/write loop.
func wrapped(p *Pool, dst, src *net.TCPConn, count func(int64)) (int64, error) {
	return p.CopyProgress(struct{ net.Conn }{dst}, struct{ net.Conn }{src}, Progress{Moved: count})
}

// ways are the paths through Copy: splice with pipes to spare, splice
// with one pipe for both directions (the other goes through a buffer), and
// the read/write loop.
var ways = []struct {
	name string
	pool func() *Pool
	copy copyFunc
}{
	{"splice", func() *Pool { return &Pool{IdleTimeout: 50 * time.Millisecond} }, spliced},
	{"one pipe", func() *Pool { return &Pool{Max: 1, IdleTimeout: 50 * time.Millisecond} }, spliced},
	{"read/write loop", func() *Pool { return &Pool{} }, wrapped},
}

type result struct {
	n   int64
	err error
}

// tunnel is client ↔ [pc | relay | ps] ↔ server on loopback, the relay
// being two Copy calls that pass a FIN on as CloseWrite, as a proxy does.
type tunnel struct {
	client, server *net.TCPConn // the peers' sockets
	pc, ps         *net.TCPConn // the relay's
	up, down       chan result  // client→server, server→client
	wg             sync.WaitGroup
	// carried is what the tunnel carried before a transfer, in Copy's
	// counts: up and down.
	carried [2]int64
	// counted is what CopyProgress reported as it went: up and down.
	counted [2]atomic.Int64
}

func newTunnel(t testing.TB, p *Pool, copy copyFunc) *tunnel {
	t.Helper()
	tu := &tunnel{up: make(chan result, 1), down: make(chan result, 1)}
	tu.client, tu.pc = testnet.Pair(t)
	tu.ps, tu.server = testnet.Pair(t)
	run := func(dst, src *net.TCPConn, out chan result, counted *atomic.Int64) {
		defer tu.wg.Done()
		n, err := copy(p, dst, src, func(n int64) { counted.Add(n) })
		if err == nil {
			_ = dst.CloseWrite()
		}
		out <- result{n, err}
	}
	tu.wg.Add(2)
	go run(tu.ps, tu.pc, tu.up, &tu.counted[0])
	go run(tu.pc, tu.ps, tu.down, &tu.counted[1])
	t.Cleanup(tu.close)
	return tu
}

func (tu *tunnel) close() {
	for _, c := range []*net.TCPConn{tu.client, tu.server, tu.pc, tu.ps} {
		_ = c.Close()
	}
	tu.wg.Wait()
}

func wait(t testing.TB, ch chan result, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Copy did not return", what)
		return result{}
	}
}

// sender writes size pseudo-random bytes from seed in writes of random
// sizes up to chunk, pausing every pauseEvery writes (0: never) so the
// relay's source runs dry, then half-closes. It returns the SHA-256 of
// what it wrote.
func sender(c *net.TCPConn, seed uint64, size, chunk, pauseEvery int) (sum [32]byte, err error) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	data := rand.NewChaCha8(key)
	sizes := rand.New(rand.NewPCG(seed, seed))
	h := sha256.New()
	buf := make([]byte, chunk)
	for i, left := 0, size; left > 0; i++ {
		n := min(left, 1+sizes.IntN(chunk))
		_, _ = data.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := c.Write(buf[:n]); err != nil {
			return sum, err
		}
		left -= n
		if pauseEvery > 0 && i%pauseEvery == pauseEvery-1 {
			time.Sleep(time.Millisecond)
		}
	}
	copy(sum[:], h.Sum(nil))
	return sum, c.CloseWrite()
}

// receiver reads to EOF and returns the count and SHA-256 of what came.
func receiver(c *net.TCPConn) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, struct{ io.Reader }{c})
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return n, sum, err
}

type flow struct {
	sum [32]byte
	n   int64
	err error
}

// transfer sends up bytes client→server and down bytes server→client at
// once, both ending with a FIN, and checks each side got exactly what the
// other sent and Copy counted exactly that.
func transfer(t testing.TB, tu *tunnel, up, down, chunk, pauseEvery int) {
	t.Helper()
	var wg sync.WaitGroup
	start := func(from, to *net.TCPConn, seed uint64, size int, s, g chan flow) {
		wg.Add(2)
		go func() {
			defer wg.Done()
			sum, err := sender(from, seed, size, chunk, pauseEvery)
			s <- flow{sum: sum, n: int64(size), err: err}
		}()
		go func() {
			defer wg.Done()
			n, sum, err := receiver(to)
			g <- flow{sum: sum, n: n, err: err}
		}()
	}
	sentUp, gotUp, sentDown, gotDown := make(chan flow, 1), make(chan flow, 1), make(chan flow, 1), make(chan flow, 1)
	start(tu.client, tu.server, 1, up, sentUp, gotUp)
	start(tu.server, tu.client, 2, down, sentDown, gotDown)
	wg.Wait()
	for _, d := range []struct {
		name      string
		sent, got flow
		copied    result
		before    int64
		counted   int64
	}{
		{"client→server", <-sentUp, <-gotUp, wait(t, tu.up, "up"), tu.carried[0], tu.counted[0].Load()},
		{"server→client", <-sentDown, <-gotDown, wait(t, tu.down, "down"), tu.carried[1], tu.counted[1].Load()},
	} {
		if d.sent.err != nil || d.got.err != nil || d.copied.err != nil {
			t.Fatalf("%s: send %v, receive %v, Copy %v", d.name, d.sent.err, d.got.err, d.copied.err)
		}
		if d.got.n != d.sent.n || d.got.sum != d.sent.sum {
			t.Errorf("%s: received %d bytes sha256 %x, sent %d bytes sha256 %x", d.name, d.got.n, d.got.sum, d.sent.n, d.sent.sum)
		}
		if d.copied.n-d.before != d.sent.n {
			t.Errorf("%s: Copy counted %d bytes (%d before this transfer), the receiver got %d", d.name, d.copied.n, d.before, d.got.n)
		}
		if d.counted != d.copied.n {
			t.Errorf("%s: the count callbacks add up to %d, Copy returned %d", d.name, d.counted, d.copied.n)
		}
	}
}

func TestCopyExact(t *testing.T) {
	cases := []struct {
		name             string
		up, down         int
		chunk, pauseEach int
	}{
		{"8 MiB each way in big writes", 8 << 20, 8 << 20, 256 << 10, 0},
		{"4 MiB up, nothing down", 4 << 20, 0, 64 << 10, 0},
		{"many small bursts", 600 << 10, 900 << 10, 700, 20},
		{"one byte each way", 1, 1, 1, 0},
		{"nothing at all", 0, 0, 1, 0},
	}
	for _, w := range ways {
		for _, c := range cases {
			t.Run(w.name+"/"+c.name, func(t *testing.T) {
				tu := newTunnel(t, w.pool(), w.copy)
				transfer(t, tu, c.up, c.down, c.chunk, c.pauseEach)
			})
		}
	}
}

// side is who a Copy error blames: the source on a read, the destination
// on a write.
func side(dir string, err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return "no *Error: " + err.Error()
	}
	switch {
	case dir == "up" && e.Op == Read, dir == "down" && e.Op == Write:
		return "client"
	case dir == "up" && e.Op == Write, dir == "down" && e.Op == Read:
		return "server"
	}
	return "Op " + e.Op.String()
}

func abort(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

func TestCopyEnds(t *testing.T) {
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			// A FIN from one side ends that direction with a nil error,
			// and the other direction keeps working.
			for _, first := range []string{"client", "server"} {
				t.Run("FIN from "+first, func(t *testing.T) {
					tu := newTunnel(t, w.pool(), w.copy)
					from, to, dir, other := tu.client, tu.server, tu.up, tu.down
					if first == "server" {
						from, to, dir, other = tu.server, tu.client, tu.down, tu.up
					}
					if _, err := from.Write([]byte("last words")); err != nil {
						t.Fatal(err)
					}
					_ = from.CloseWrite()
					b, err := io.ReadAll(to)
					if err != nil || string(b) != "last words" {
						t.Fatalf("after the FIN the other side read %q, %v (want the bytes, then EOF)", b, err)
					}
					if r := wait(t, dir, first); r.err != nil || r.n != 10 {
						t.Fatalf("%s's direction: Copy = %d, %v; want 10, nil (EOF)", first, r.n, r.err)
					}
					// The half-closed connection still carries the other way.
					if _, err := to.Write([]byte("reply")); err != nil {
						t.Fatal(err)
					}
					_ = to.CloseWrite()
					if b, err := io.ReadAll(from); err != nil || string(b) != "reply" {
						t.Fatalf("reply after half-close: read %q, %v", b, err)
					}
					if r := wait(t, other, "other"); r.err != nil || r.n != 5 {
						t.Fatalf("other direction: Copy = %d, %v; want 5, nil", r.n, r.err)
					}
				})
			}
			// An RST names the side that sent it: an idle relay sees it on a
			// read; one writing to the side that reset sees it on the write.
			for _, c := range []struct {
				name  string
				who   string
				busy  bool // the other side streams towards the one that resets
				errno []syscall.Errno
			}{
				{"client RST while idle", "client", false, []syscall.Errno{syscall.ECONNRESET}},
				{"server RST while idle", "server", false, []syscall.Errno{syscall.ECONNRESET}},
				{"client RST while the server streams", "client", true, []syscall.Errno{syscall.ECONNRESET, syscall.EPIPE}},
				{"server RST while the client streams", "server", true, []syscall.Errno{syscall.ECONNRESET, syscall.EPIPE}},
			} {
				t.Run(c.name, func(t *testing.T) {
					tu := newTunnel(t, w.pool(), w.copy)
					resetter, streamer := tu.client, tu.server
					if c.who == "server" {
						resetter, streamer = tu.server, tu.client
					}
					// One exchange first, so both directions have carried bytes.
					if _, err := tu.client.Write([]byte("ping")); err != nil {
						t.Fatal(err)
					}
					readN(t, tu.server, 4)
					if _, err := tu.server.Write([]byte("pong")); err != nil {
						t.Fatal(err)
					}
					readN(t, tu.client, 4)
					if c.busy {
						go flood(streamer)
						time.Sleep(50 * time.Millisecond) // the relay's pipe or buffer is full and waiting
					}
					abort(resetter)
					// The reader of the reset socket sees the RST, unless the
					// other direction writing to it saw it first: the kernel
					// reports a reset once, and a later read sees EOF.
					readsIt, writesIt, readDir, writeDir := tu.up, tu.down, "up", "down"
					if c.who == "server" {
						readsIt, writesIt, readDir, writeDir = tu.down, tu.up, "down", "up"
					}
					reader := wait(t, readsIt, "reader of the reset socket")
					blamed := 0
					if reader.err != nil {
						blamed++
						checkBlame(t, readDir, reader.err, c.who, c.errno)
					}
					if c.busy {
						w := wait(t, writesIt, "writer to the reset socket")
						if w.err == nil {
							t.Fatalf("%s direction wrote to a reset socket and returned no error", writeDir)
						}
						blamed++
						checkBlame(t, writeDir, w.err, c.who, c.errno)
					}
					if blamed == 0 {
						t.Fatalf("the reset was reported nowhere")
					}
				})
			}
		})
	}
}

// checkBlame checks that err from direction dir blames who, with one of
// the errnos.
func checkBlame(t *testing.T, dir string, err error, who string, errnos []syscall.Errno) {
	t.Helper()
	if got := side(dir, err); got != who {
		t.Errorf("%s direction: %v blames %s, want %s", dir, err, got, who)
	}
	for _, e := range errnos {
		if errors.Is(err, e) {
			return
		}
	}
	t.Errorf("%s direction: error %v, want one of %v", dir, err, errnos)
}

// legs are the two connections of a relay without the relay: client–pc
// and ps–server, closed when the test ends.
func legs(t testing.TB) (client, pc, ps, server *net.TCPConn) {
	client, pc = testnet.Pair(t)
	ps, server = testnet.Pair(t)
	t.Cleanup(func() {
		for _, c := range []*net.TCPConn{client, pc, ps, server} {
			c.Close()
		}
	})
	return client, pc, ps, server
}

// flood writes to c until a write fails.
func flood(c *net.TCPConn) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

func readN(t testing.TB, c net.Conn, n int) {
	t.Helper()
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
}

func TestCopyDeadlines(t *testing.T) {
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			t.Run("read deadline, then none", func(t *testing.T) {
				// As a proxy bounds the wait for a ClientHello: the copy
				// ends on the deadline with nothing lost, and a new copy
				// after the deadline is cleared carries on.
				p := w.pool()
				client, pc, ps, server := legs(t)
				_ = pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				n, err := w.copy(p, ps, pc, nil)
				var e *Error
				if n != 0 || !errors.As(err, &e) || e.Op != Read || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("Copy = %d, %v; want 0 and a read error with os.ErrDeadlineExceeded", n, err)
				}
				_ = pc.SetReadDeadline(time.Time{})
				done := make(chan result, 1)
				go func() { n, err := w.copy(p, ps, pc, nil); done <- result{n, err} }()
				msg := []byte("after the deadline")
				if _, err := client.Write(msg); err != nil {
					t.Fatal(err)
				}
				_ = client.CloseWrite()
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(server, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("server read %q, %v", got, err)
				}
				if r := wait(t, done, "second copy"); r.err != nil || r.n != int64(len(msg)) {
					t.Fatalf("second Copy = %d, %v", r.n, r.err)
				}
			})
			t.Run("write deadline on a destination that does not read", func(t *testing.T) {
				p := w.pool()
				client, pc, ps, _ := legs(t) // the server reads nothing
				go flood(client)
				_ = ps.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				n, err := w.copy(p, ps, pc, nil)
				var e *Error
				if !errors.As(err, &e) || e.Op != Write || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("Copy = %d, %v; want a write error with os.ErrDeadlineExceeded", n, err)
				}
				if e.Unsent <= 0 {
					t.Errorf("Unsent = %d; the destination was full, so bytes read were left over", e.Unsent)
				}
			})
		})
	}
}

// TestBlocked: a destination whose reader stops reading holds the copy up;
// Progress.Blocked says so once, however long the copy waits, and the
// copy completes when the reader reads again.
func TestBlocked(t *testing.T) {
	client, pc := testnet.Pair(t)
	ps, server := testnet.Pair(t)
	defer client.Close()
	defer server.Close()
	defer pc.Close()
	defer ps.Close()
	var blocked atomic.Int32
	done := make(chan result, 1)
	go func() {
		n, err := (&Pool{}).CopyProgress(pc, ps, Progress{Blocked: func() { blocked.Add(1) }})
		_ = pc.CloseWrite()
		done <- result{n, err}
	}()
	const size = 64 << 20 // more than loopback's buffers hold
	go func() {
		_, _ = server.Write(bytes.Repeat([]byte{'x'}, size))
		_ = server.CloseWrite()
	}()
	// The client does not read until the copy has said it waits.
	for deadline := time.Now().Add(10 * time.Second); blocked.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Blocked not called while the reader did not read")
		}
	}
	time.Sleep(20 * time.Millisecond) // waiting longer changes nothing
	if got := blocked.Load(); got != 1 {
		t.Fatalf("Blocked called %d times while the reader did not read, want 1", got)
	}
	n, err := io.Copy(io.Discard, client)
	if err != nil || n != size {
		t.Fatalf("client read %d, %v; want %d", n, err, size)
	}
	if r := <-done; r.err != nil || r.n != size {
		t.Fatalf("copy = %d, %v; want %d", r.n, r.err, size)
	}
	if got := blocked.Load(); got != 1 {
		t.Fatalf("Blocked called %d times in all, want 1", got)
	}
}
