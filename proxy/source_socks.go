package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/socks5"
	"github.com/inspectproxy/inspectproxy/stream"
)

// socksSource is the SOCKS5 listener: each CONNECT becomes a stream of the
// pipeline, under the same access rules and with the same event as an
// HTTP CONNECT (source "socks5").
type socksSource struct {
	log    *zap.Logger
	lim    config.Limits
	auth   socks5.Config
	policy *access.Policy
	pipe   *pipeline
	conns  *connTracker
}

// serve accepts until ln is closed; each connection is counted before its
// goroutine starts, so shutdown waits for it.
func (s *socksSource) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			_ = c.Close()
			return fmt.Errorf("proxy: SOCKS listener gave a %T, not a TCP connection", c)
		}
		slot := s.conns.admit()
		go s.handle(tc, slot, time.Now())
	}
}

// handle reads the SOCKS5 handshake (bounded by limits.header_timeout),
// applies the access rules, and hands a CONNECT to the pipeline. A refusal
// is answered in SOCKS (a reply code) and recorded.
func (s *socksSource) handle(c *net.TCPConn, slot bool, start time.Time) {
	defer s.conns.done()
	client := addrPort(c.RemoteAddr())
	rec := newRecord(s.pipe.newID(), start, client.String(), event.SourceSOCKS5, s.log, s.pipe.out, s.pipe.bounds)
	rec.release = func() { s.conns.free(slot) }
	_ = c.SetDeadline(start.Add(s.lim.HeaderTimeout))
	req, err := socks5.Handshake(c, s.auth)
	target := ""
	if req != nil {
		target = req.Target()
	}
	refuse := func(r socks5.Reply, msg string) {
		_ = socks5.WriteReply(c, r, netip.AddrPort{})
		_ = c.Close()
		rec.setKind(event.KindTunnel, target)
		rec.setError(msg)
		rec.finish(nil)
	}
	switch {
	case err != nil:
		// The handshake has answered the client already (no acceptable
		// method, bad credentials, BIND or UDP ASSOCIATE, SOCKS4).
		_ = c.Close()
		rec.setKind(event.KindTunnel, target)
		rec.setError(err.Error())
		rec.finish(nil)
		return
	case !slot:
		msg := s.conns.refusal(slot)
		rec.setLimit("limits.max_connections", msg) // before refuse writes the event
		refuse(socks5.GeneralFailure, msg)
		return
	case s.conns.inShutdown():
		refuse(socks5.GeneralFailure, s.conns.refusal(slot))
		return
	}
	if err := s.policy.Client(client); err != nil {
		refuse(socks5.NotAllowed, err.Error())
		return
	}
	// A name is held to what a CONNECT target may be: a numeric name
	// such as 127.1 means 127.0.0.1 to some resolvers and not to others.
	a, err := access.ParseAuthority(target)
	if err != nil {
		refuse(socks5.GeneralFailure, err.Error())
		return
	}
	target = a.String()
	_ = c.SetDeadline(time.Time{})
	st := &stream.Stream{
		Source: event.SourceSOCKS5,
		Client: client,
		Target: target,
		Start:  start,
		ID:     rec.ev.ID,
		Accept: func(netip.AddrPort) (stream.Conn, []byte, error) {
			// BND.ADDR: the address the client reached the proxy at.
			if err := socks5.WriteReply(c, socks5.Succeeded, addrPort(c.LocalAddr())); err != nil {
				_ = c.Close()
				return nil, nil, err
			}
			return stream.TCP{TCPConn: c}, nil, nil
		},
		Refuse: func(rf stream.Refusal) {
			_ = socks5.WriteReply(c, socks5.ReplyFor(rf), netip.AddrPort{})
			_ = c.Close()
		},
	}
	s.pipe.serve(st, rec)
}
