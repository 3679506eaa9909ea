package wiretest

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/config"
)

// Scripted peers. Sleeps pace a scenario (they never decide an assertion):
// what happened is read from the capture.

func write(c *net.TCPConn, n int) { _, _ = c.Write(bytes.Repeat([]byte{'x'}, n)) }

func readN(c *net.TCPConn, n int) { _, _ = io.ReadFull(c, make([]byte, n)) }

func abort(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

func drain(c *net.TCPConn) { _, _ = readAll(c) }

// sendAfterEOF reads to the server's FIN, then 30 ms later sends 40 B,
// n times 20 ms apart, and half-closes 20 ms after the last (issue
// scenarios 1 and 2).
func sendAfterEOF(n int) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		drain(c)
		time.Sleep(30 * time.Millisecond)
		for i := range n {
			if i > 0 {
				time.Sleep(20 * time.Millisecond)
			}
			write(c, 40)
		}
		time.Sleep(20 * time.Millisecond)
		_ = c.CloseWrite()
		time.Sleep(20 * time.Millisecond)
	}
}

// serverExchange and clientExchange are the scenarios' common start: the
// client sends 100 B, the server answers with 5000 B; then each goes on
// with then (nil: nothing; the server then closes).
func serverExchange(then func(*net.TCPConn)) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		readN(c, 100)
		write(c, 5000)
		if then != nil {
			then(c)
		}
	}
}

func clientExchange(then func(*net.TCPConn)) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		write(c, 100)
		readN(c, 5000)
		if then != nil {
			then(c)
		}
	}
}

// unreadDownload is a server that sends 6 MB and closes, and a client
// that sends its 100 B and reads nothing until 50 ms after the server's
// write returned, then goes on with then.
func unreadDownload(then func(*net.TCPConn)) (server, client func(*net.TCPConn)) {
	written := make(chan struct{})
	server = serverExchange(func(c *net.TCPConn) {
		write(c, 6_000_000)
		close(written)
	})
	client = func(c *net.TCPConn) {
		write(c, 100)
		<-written
		time.Sleep(50 * time.Millisecond)
		then(c)
	}
	return server, client
}

// tcpScenario is a scripted client and server through one tunnel.
type tcpScenario struct {
	name   string
	edit   func(*config.Config)
	server func(*net.TCPConn)
	client func(*net.TCPConn)
	// stop, when set, runs after the client script (the proxy's shutdown).
	stop   func(p *proxyRun)
	expect expect
	// reproduced checks that the wire shows what the scenario is about.
	reproduced func(w wire) string
}

func tcpScenarios() []tcpScenario {
	reset := make(chan struct{}) // FIN then RST: the server has reset
	resetServer, resetClient := unreadDownload(abort)
	slowServer, slowClient := unreadDownload(drain)
	return []tcpScenario{
		{
			name:   "client-first close",
			server: serverExchange(drain),
			client: clientExchange(func(c *net.TCPConn) {
				_ = c.CloseWrite()
				drain(c)
			}),
			reproduced: wantFirstFIN("client"),
		},
		{
			name:       "server-first close",
			server:     serverExchange(nil),
			client:     clientExchange(drain),
			reproduced: wantFirstFIN("server"),
		},
		{
			name:       "client RST",
			server:     serverExchange(drain),
			client:     clientExchange(abort),
			reproduced: wantRST("client", "abort"),
		},
		{
			name: "server RST",
			server: serverExchange(func(c *net.TCPConn) {
				time.Sleep(5 * time.Millisecond)
				abort(c)
			}),
			client:     clientExchange(drain),
			reproduced: wantRST("server", "abort"),
		},
		{
			// The server resets while 1 MiB is on its way to a client
			// that reads slowly.
			name: "RST mid-transfer",
			server: func(c *net.TCPConn) {
				readN(c, 100)
				for range 64 {
					write(c, 16<<10)
				}
				abort(c)
			},
			client: func(c *net.TCPConn) {
				write(c, 100)
				buf := make([]byte, 4<<10)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					time.Sleep(200 * time.Microsecond)
				}
			},
			reproduced: wantRST("server", "abort"),
		},
		{
			name: "FIN then RST",
			server: serverExchange(func(c *net.TCPConn) {
				_ = c.CloseWrite()
				time.Sleep(20 * time.Millisecond)
				abort(c)
				close(reset)
			}),
			client: clientExchange(func(c *net.TCPConn) {
				drain(c)
				<-reset // the client stays open until the server has reset
				time.Sleep(20 * time.Millisecond)
			}),
			reproduced: wantRST("server", "abort"),
		},
		{
			// Issue scenario 1: the server's kernel answers data sent after
			// its close with a reset, ~30 ms after its FIN.
			name:       "data after the server closed",
			server:     serverExchange(nil),
			client:     clientExchange(sendAfterEOF(1)),
			reproduced: wantRST("server", "data_after_close"),
		},
		{
			// Issue scenario 2: as 1, with a second 40 B 20 ms after the
			// first; the server resets, the client only sends data and FIN.
			name:       "data after the server closed, twice",
			server:     serverExchange(nil),
			client:     clientExchange(sendAfterEOF(2)),
			reproduced: wantRST("server", "data_after_close"),
		},
		{
			// Issue scenario 3 with scripted peers: the client closes; 7 ms
			// later the server sends 24 B and closes; the client's kernel
			// answers the 24 B with a reset.
			name: "data after the client closed",
			server: serverExchange(func(c *net.TCPConn) {
				drain(c)
				time.Sleep(7 * time.Millisecond)
				write(c, 24)
			}),
			client:     clientExchange(nil), // the harness closes it
			reproduced: wantRST("client", "data_after_close"),
		},
		{
			// The server sends more than a client that does not read can
			// take, and closes: its FIN waits in the proxy's socket behind
			// data the proxy cannot pass on (6 MB: more than the client's
			// window and the proxy's send buffer toward it, less than
			// that and the proxy's receive buffer from the server). 50 ms
			// after the server's write returned, the client resets. The
			// event must date the FIN when it arrived, before the reset,
			// not when the proxy could have read it.
			name:   "FIN behind unread data, then the client resets",
			server: resetServer,
			client: resetClient,
			reproduced: func(w wire) string {
				if w.firstFIN != "server" || w.rst != "client" || w.rstCause != "abort" {
					return "want the server's FIN, then a reset by the client (abort)"
				}
				return ""
			},
		},
		{
			// The download case: as above, but the client reads it all
			// after 50 ms, then closes. The server's FIN is dated when it
			// reached the proxy, not when the client had read up to it.
			name:       "server closes while the client is slow to read",
			server:     slowServer,
			client:     slowClient,
			reproduced: wantFirstFIN("server"),
		},
		{
			name:       "proxy idle timeout",
			edit:       func(c *config.Config) { c.Limits.IdleTimeout = 300 * time.Millisecond },
			server:     serverExchange(drain),
			client:     clientExchange(drain),
			expect:     expect{proxyCause: "proxy_idle_timeout"},
			reproduced: wantRST("proxy", ""),
		},
		{
			name: "proxy half-close timeout",
			edit: func(c *config.Config) { c.Limits.HalfCloseTimeout = 300 * time.Millisecond },
			server: serverExchange(func(c *net.TCPConn) {
				drain(c)
				time.Sleep(time.Second) // its side stays open until the proxy cuts
			}),
			client: clientExchange(func(c *net.TCPConn) {
				_ = c.CloseWrite()
				drain(c)
			}),
			expect:     expect{proxyCause: "proxy_half_close_timeout"},
			reproduced: wantRST("proxy", ""),
		},
		{
			name:       "proxy shutdown",
			edit:       func(c *config.Config) { c.Limits.ShutdownGrace = 200 * time.Millisecond },
			server:     serverExchange(drain),
			client:     clientExchange(drain), // until the proxy cuts
			stop:       func(p *proxyRun) { go p.cancel() },
			expect:     expect{proxyCause: "proxy_shutdown"},
			reproduced: wantRST("proxy", ""),
		},
	}
}

func wantFirstFIN(side string) func(w wire) string {
	return func(w wire) string {
		if w.firstFIN != side || w.rst != "" {
			return "want the " + side + " to close first without a reset"
		}
		return ""
	}
}

func wantRST(side, cause string) func(w wire) string {
	return func(w wire) string {
		if w.rst != side || side != "proxy" && w.rstCause != cause {
			return "want a reset by the " + side + " (" + cause + ")"
		}
		return ""
	}
}

// TestTCPAgainstTheWire runs each scenario through the proxy, captures
// both legs and checks the event against the capture.
func TestTCPAgainstTheWire(t *testing.T) {
	for i, sc := range tcpScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			attempts(t, func(t *testing.T, late *lateTimes) {
				sc := tcpScenarios()[i] // a run's own channels and state
				p := startProxy(t, sc.edit)
				server := tcpServer(t, sc.server)
				cp := capture(t, p.addr, server)
				c := p.connect(t, server)
				clientDone := make(chan struct{})
				go func() {
					defer close(clientDone)
					sc.client(c)
					c.Close()
				}()
				if sc.stop != nil {
					time.Sleep(50 * time.Millisecond) // the exchange is over; the tunnel idles
					sc.stop(p)
				}
				ev := p.event()
				<-clientDone
				tr := stopCapture(t, cp)
				l := findLegs(t, tr, ev, server)
				if l.upstream == nil {
					t.Fatal("the upstream leg is not in the capture")
				}
				w := l.wire(ev, sc.expect.tol())
				if why := sc.reproduced(w); why != "" {
					t.Fatalf("the scenario did not reproduce on the wire (%s): history %s, rst %q/%q", why, w.historyString(), w.rst, w.rstCause)
				}
				check(t, ev, l, sc.expect, late)
			})
		})
	}
}
