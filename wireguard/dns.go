package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/stream"
	"github.com/inspectproxy/inspectproxy/timing"
)

// startDNS answers UDP port 53 on one of the resolver's addresses.
func (s *Server) startDNS(a netip.Addr) error {
	proto := header.IPv4ProtocolNumber
	if a.Is6() {
		proto = header.IPv6ProtocolNumber
	}
	c, err := gonet.DialUDP(s.tun.stack, &tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: 53}, nil, proto)
	if err != nil {
		return fmt.Errorf("wireguard: DNS on %s: %w", a, err)
	}
	s.dnsConns = append(s.dnsConns, c)
	s.bg.Add(1)
	go s.serveDNS(c, netip.AddrPortFrom(a, 53))
	return nil
}

// maxDNSMessage is the largest query read; EDNS clients rarely offer
// more. maxAnswers keeps a reply within the 512 bytes of plain DNS over
// UDP (16 AAAA records with a long name), so it is never truncated.
const (
	maxDNSMessage = 4096
	maxAnswers    = 16
)

func (s *Server) serveDNS(c *gonet.UDPConn, local netip.AddrPort) {
	defer s.bg.Done()
	for {
		buf := make([]byte, maxDNSMessage)
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		ua, _ := from.(*net.UDPAddr)
		if ua == nil {
			continue
		}
		src := ua.AddrPort()
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		peer := s.peerOf(src.Addr())
		if peer == "" {
			continue
		}
		select {
		case s.dnsSem <- struct{}{}:
		default:
			s.log.Warn("DNS lookups in flight at their cap; query dropped (the device retries)", zap.String("peer", peer), zap.Int("cap", maxDNSInFlight))
			continue
		}
		s.bg.Add(1)
		go func(q []byte) {
			defer func() { <-s.dnsSem; s.bg.Done() }()
			if resp := s.answerDNS(q, src, local, peer); resp != nil {
				_, _ = c.WriteTo(resp, ua)
			}
		}(buf[:n])
	}
}

// answerDNS resolves one query on the host and builds the reply. A and
// AAAA are resolved; other types (HTTPS, TXT, ...) get an empty NOERROR
// answer, which clients take as "no such record" and go on with A/AAAA.
// Every query the device sent is one event; malformed ones get none
// and no reply.
func (s *Server) answerDNS(query []byte, src, local netip.AddrPort, peer string) []byte {
	start := time.Now()
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil
	}
	reply := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	ev := &event.Event{
		ID: s.newID(), Start: start, Client: src.String(), Target: local.String(),
		Kind: event.KindDNS, Source: event.SourceWireGuard, Peer: peer, DNS: &event.DNS{},
	}
	var answers []netip.Addr
	switch {
	case h.OpCode != 0 || len(qs) != 1 || qs[0].Class != dnsmessage.ClassINET:
		reply.RCode = dnsmessage.RCodeNotImplemented
		if len(qs) != 1 {
			reply.RCode = dnsmessage.RCodeFormatError
		}
		if len(qs) > 0 {
			setQuestion(ev.DNS, qs[0])
		}
		ev.Error = fmt.Sprintf("wireguard: DNS query with opcode %d, %d questions, class %v: only standard IN queries with one question are answered", h.OpCode, len(qs), classOf(qs))
	default:
		q := qs[0]
		setQuestion(ev.DNS, q)
		var d time.Duration
		answers, reply.RCode, d, err = s.resolve(ev.DNS.Name, q.Type)
		ev.DNS.MS = timing.MS(d)
		if err != nil {
			ev.Error = err.Error()
		}
		for _, a := range answers {
			ev.DNS.Answers = append(ev.DNS.Answers, a.String())
			s.links.Add(linkKey{peer, a}, link{stream.Lookup{Name: ev.DNS.Name, Duration: d}, start})
		}
	}
	ev.DNS.RCode, ev.DNS.RCodeCode = rcodeName(reply.RCode), int(reply.RCode)
	resp, err := buildReply(reply, qs, answers)
	if err != nil {
		ev.Error = fmt.Sprintf("wireguard: DNS reply: %v", err)
		resp = nil
	}
	ev.End = time.Now()
	s.opts.Emit(ev)
	return resp
}

func classOf(qs []dnsmessage.Question) string {
	if len(qs) == 0 {
		return "none"
	}
	return strings.TrimPrefix(qs[0].Class.String(), "Class")
}

func setQuestion(d *event.DNS, q dnsmessage.Question) {
	d.Name = strings.TrimSuffix(q.Name.String(), ".")
	d.Type, d.TypeCode = strings.TrimPrefix(q.Type.String(), "Type"), uint16(q.Type)
}

// resolve looks name up on the host. A name that exists without records
// of the type asked is NOERROR with no answers (NODATA), not NXDOMAIN: the
// host's resolver says "not found" for both, so the other family is asked.
func (s *Server) resolve(name string, t dnsmessage.Type) ([]netip.Addr, dnsmessage.RCode, time.Duration, error) {
	var network string
	switch t {
	case dnsmessage.TypeA:
		network = "ip4"
	case dnsmessage.TypeAAAA:
		network = "ip6"
	default:
		return nil, dnsmessage.RCodeSuccess, 0, nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.LookupTimeout)
	defer cancel()
	start := time.Now()
	addrs, err := s.opts.Resolver.LookupNetIP(ctx, network, name)
	d := time.Since(start)
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		for i, a := range addrs {
			addrs[i] = a.Unmap()
		}
		return addrs[:min(len(addrs), maxAnswers)], dnsmessage.RCodeSuccess, d, nil
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		if other, err2 := s.opts.Resolver.LookupNetIP(ctx, "ip", name); err2 == nil && len(other) > 0 {
			return nil, dnsmessage.RCodeSuccess, d, nil
		}
		return nil, dnsmessage.RCodeNameError, d, nil
	default:
		return nil, dnsmessage.RCodeServerFailure, d, fmt.Errorf("wireguard: resolve %s %s on the host: %w", t, name, err)
	}
}

func buildReply(h dnsmessage.Header, qs []dnsmessage.Question, answers []netip.Addr) ([]byte, error) {
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			return nil, err
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	for _, a := range answers {
		rh := dnsmessage.ResourceHeader{Name: qs[0].Name, Class: dnsmessage.ClassINET, TTL: answerTTL}
		var err error
		if a.Is4() {
			err = b.AResource(rh, dnsmessage.AResource{A: a.As4()})
		} else {
			err = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// rcodeName is the IANA mnemonic of a response code.
func rcodeName(c dnsmessage.RCode) string {
	switch c {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE%d", c)
}
