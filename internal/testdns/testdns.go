// Package testdns is a DNS server on loopback for tests: names answer with
// the A and AAAA records a test sets (and optional delays, for Happy
// Eyeballs), so that a name resolving to 0.0.0.0 or to an unreachable
// IPv6 address needs no /etc/hosts entry. Resolver returns a
// net.Resolver that asks only this server.
package testdns

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Server answers A and AAAA queries from its table over UDP.
type Server struct {
	pc      net.PacketConn
	replies sync.WaitGroup // delayed replies in flight

	mu      sync.Mutex
	closing bool
	records map[string][]netip.Addr // lowercase FQDN
	delay   map[dnsmessage.Type]time.Duration
	queries int
}

// Start starts a server with names mapped to addresses (IPv4 addresses
// are A records, IPv6 ones AAAA); it stops when the test ends. A name
// missing from the table is NXDOMAIN; a name with no address of the asked
// family answers with no records.
func Start(t testing.TB, names map[string][]netip.Addr) *Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{pc: pc, records: map[string][]netip.Addr{}, delay: map[dnsmessage.Type]time.Duration{}}
	for n, as := range names {
		s.Set(n, as...)
	}
	done := make(chan struct{})
	go s.serve(done)
	t.Cleanup(func() {
		// Send the delayed replies first: a resolver left waiting for
		// one keeps its goroutine until its own timeout.
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.replies.Wait()
		pc.Close()
		<-done
	})
	return s
}

// Set replaces a name's addresses.
func (s *Server) Set(name string, addrs ...netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[fqdn(name)] = addrs
}

// Delay holds answers of one type (dnsmessage.TypeA or TypeAAAA) for d.
func (s *Server) Delay(typ dnsmessage.Type, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay[typ] = d
}

// Queries is how many queries the server has answered.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Addr is the server's UDP address.
func (s *Server) Addr() string { return s.pc.LocalAddr().String() }

// Resolver is a pure-Go resolver that sends every query to s. (/etc/hosts
// is still read first, so use names under .test.)
func (s *Server) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", s.Addr())
	}}
}

func fqdn(n string) string { return strings.ToLower(strings.TrimSuffix(n, ".")) + "." }

func (s *Server) serve(done chan struct{}) {
	defer close(done)
	buf := make([]byte, 512)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			continue
		}
		s.queries++
		addrs, known := s.records[strings.ToLower(q.Name.String())]
		delay := s.delay[q.Type]
		s.replies.Add(1)
		s.mu.Unlock()
		reply := answer(h.ID, q, addrs, known)
		go func() {
			defer s.replies.Done()
			time.Sleep(delay)
			_, _ = s.pc.WriteTo(reply, from)
		}()
	}
}

func answer(id uint16, q dnsmessage.Question, addrs []netip.Addr, known bool) []byte {
	rcode := dnsmessage.RCodeSuccess
	if !known {
		rcode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, Authoritative: true, RecursionAvailable: true, RCode: rcode})
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(q)
	_ = b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}
	for _, a := range addrs {
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			_ = b.AResource(rh, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && !a.Is4():
			_ = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
	}
	out, _ := b.Finish()
	return out
}
