package wiretest

import (
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
	"github.com/inspectproxy/inspectproxy/internal/wirecap"
)

// record is one TLS record found by a plain scan of a stream.
type record struct {
	typ, hsType uint8
	end         int64 // stream offset just past the record
}

// records scans stream from off for TLS records.
func records(stream []byte, off int64) []record {
	var out []record
	for off+5 <= int64(len(stream)) {
		n := int64(stream[off+3])<<8 | int64(stream[off+4])
		if off+5+n > int64(len(stream)) {
			break
		}
		r := record{typ: stream[off], end: off + 5 + n}
		if n > 0 {
			r.hsType = stream[off+5]
		}
		out = append(out, r)
		off = r.end
	}
	return out
}

// handshakeRecordsAt returns, for each handshake record of type hsType in
// a side's stream from off, when its last byte was on the wire (ms since
// start).
func handshakeRecordsAt(s *wirecap.Side, off int64, hsType uint8, start time.Time) []float64 {
	var out []float64
	for _, r := range records(s.Stream, off) {
		if r.typ == 22 && r.hsType == hsType {
			if at, ok := s.At(r.end - 1); ok {
				out = append(out, float64(at.Sub(start).Nanoseconds())/1e6)
			}
		}
	}
	return out
}

// tsharkHello is what tshark reads from one hello on the upstream leg.
type tsharkHello struct {
	server        bool
	hsType        int
	selectedGroup int   // a HelloRetryRequest's key_share group
	keyShares     []int // a ClientHello's key share groups
	cookie        bool
}

// tsharkHellos has tshark dissect the upstream leg as TLS.
func tsharkHellos(t *testing.T, tr *wirecap.Trace, server netip.AddrPort) []tsharkHello {
	t.Helper()
	tshark := testtool.Need(t, "tshark")
	path := filepath.Join(t.TempDir(), "tls.pcapng")
	if err := tr.WritePcapng(path); err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(int(server.Port()))
	out, err := exec.Command(tshark, "-r", path, "-d", "tcp.port=="+port+",tls", "-Y", "tcp.port=="+port+" && tls.handshake.type",
		"-T", "fields", "-E", "separator=;", "-E", "aggregator=,", "-e", "tcp.srcport", "-e", "tls.handshake.type",
		"-e", "tls.handshake.extensions_key_share_selected_group", "-e", "tls.handshake.extensions_key_share_group",
		"-e", "tls.handshake.extension.type").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var hs []tsharkHello
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ";")
		if len(f) < 5 {
			continue
		}
		h := tsharkHello{server: f[0] == port}
		h.hsType, _ = strconv.Atoi(strings.Split(f[1], ",")[0])
		h.selectedGroup, _ = strconv.Atoi(f[2])
		for _, g := range strings.Split(f[3], ",") {
			if v, err := strconv.Atoi(g); err == nil {
				h.keyShares = append(h.keyShares, v)
			}
		}
		for _, e := range strings.Split(f[4], ",") {
			h.cookie = h.cookie || e == "44"
		}
		hs = append(hs, h)
	}
	return hs
}

// TestHelloRetryAgainstTheWire is the HRR: openssl s_server
// accepting only P-256, openssl s_client offering a key share for X448
// first, through the proxy. tshark reads the handshake from the capture;
// the wire gives the times.
func TestHelloRetryAgainstTheWire(t *testing.T) {
	attempts(t, func(t *testing.T, late *lateTimes) {
		openssl := testtool.Need(t, "openssl")
		ca := testpki.NewCA(t, "wiretest CA")
		certFile, keyFile := testpki.WriteFiles(t, ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256}))
		server := netip.MustParseAddrPort(testtool.OpenSSLServer(t, "-cert", certFile, "-key", keyFile, "-groups", "P-256", "-www"))
		p := startProxy(t, nil)
		cp := capture(t, p.addr, server)
		cmd := exec.Command(openssl, "s_client", "-proxy", p.addr.String(), "-connect", fmt.Sprintf("localhost:%d", server.Port()),
			"-servername", "localhost", "-groups", "X448:P-256", "-CAfile", ca.WriteCert(t), "-ign_eof")
		cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\n\r\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl s_client: %v\n%s", err, out)
		}
		ev := p.event()
		tr := stopCapture(t, cp)
		l := findLegs(t, tr, ev, server)
		if l.upstream == nil {
			t.Fatal("the upstream leg is not in the capture")
		}
		check(t, ev, l, expect{}, late)

		hs := tsharkHellos(t, tr, server)
		var hrr, ch2 *tsharkHello
		nCH := 0
		for i := range hs {
			switch h := &hs[i]; {
			case h.server && h.hsType == 2 && h.selectedGroup != 0 && hrr == nil:
				hrr = h
			case !h.server && h.hsType == 1:
				if nCH++; nCH == 2 {
					ch2 = h
				}
			}
		}
		if hrr == nil || ch2 == nil {
			t.Fatalf("tshark found no HelloRetryRequest and second ClientHello: %+v", hs)
		}
		tl := ev.TLS
		if tl == nil || tl.HelloRetry == nil {
			t.Fatalf("event has no tls.hello_retry_request (tls %+v)", tl)
		}
		got := tl.HelloRetry
		if int(got.GroupCode) != hrr.selectedGroup || got.Cookie != hrr.cookie || len(got.KeyShares) != len(ch2.keyShares) {
			t.Errorf("hello_retry_request group %d cookie %v key_shares %v; tshark: group %d cookie %v key shares %v",
				got.GroupCode, got.Cookie, got.KeyShares, hrr.selectedGroup, hrr.cookie, ch2.keyShares)
		}
		// Times: client messages as they reached the proxy on the client leg,
		// server messages on the upstream leg.
		chs := handshakeRecordsAt(l.client.Client, l.reqLen, 1, ev.Start)
		shs := handshakeRecordsAt(l.upstream.Server, 0, 2, ev.Start)
		if len(chs) != 2 || len(shs) != 2 {
			t.Fatalf("the wire shows %d ClientHellos and %d ServerHellos, want 2 and 2", len(chs), len(shs))
		}
		late.within(t, "client_hello_ms", tl.ClientHelloMS, &chs[0], finTolerance, finTolerance)
		late.within(t, "hello_retry_request.at_ms", got.AtMS, &shs[0], finTolerance, finTolerance)
		late.within(t, "second_client_hello_ms", got.SecondClientHelloMS, &chs[1], finTolerance, finTolerance)
		late.within(t, "server_hello_ms", tl.ServerHelloMS, &shs[1], finTolerance, finTolerance)
		if tl.HandshakeMS == nil || *tl.HandshakeMS < chs[1]-chs[0] {
			t.Errorf("handshake_ms %s does not count the retry's round trip (%.3f ms on the wire)", fmtMS(tl.HandshakeMS), chs[1]-chs[0])
		}
	})
}

// TestChromiumAgainstTheWire is issue scenario 3 with the real peers:
// Chromium through the proxy to openssl s_server -www. Chromium closes
// first; the server may then send its close_notify and FIN, which the
// client's kernel answers with a reset. Every connection Chromium opened
// is checked against the wire.
func TestChromiumAgainstTheWire(t *testing.T) {
	attempts(t, func(t *testing.T, late *lateTimes) {
		chromium := testtool.Need(t, "chromium")
		ca := testpki.NewCA(t, "wiretest CA")
		certFile, keyFile := testpki.WriteFiles(t, ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256}))
		server := netip.MustParseAddrPort(testtool.OpenSSLServer(t, "-cert", certFile, "-key", keyFile, "-www"))
		p := startProxy(t, nil)
		cp := capture(t, p.addr, server)
		// Only localhost goes to the proxy: Chromium's own background requests
		// (every name with a dot) go direct, where its resolver refuses them,
		// so nothing leaves the machine.
		// At the lowest priority: Chromium shares the two CPUs with the proxy,
		// and the test measures the proxy's record, not how long it waits
		// while the browser tears down its renderer.
		cmd := exec.Command("nice", "-n", "19", chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
			"--proxy-server=http://"+p.addr.String(), "--proxy-bypass-list=<-loopback>;*.*",
			"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
			"--ignore-certificate-errors", "--dump-dom", fmt.Sprintf("https://localhost:%d/", server.Port()))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "s_server") {
			t.Fatalf("chromium: %v\n%s", err, out[max(0, len(out)-1500):])
		}
		var evs []*event.Event
		for {
			select {
			case ev := <-p.events.ch:
				evs = append(evs, ev)
				continue
			case <-time.After(500 * time.Millisecond):
			}
			break
		}
		if len(evs) == 0 {
			evs = append(evs, p.event())
		}
		tr := stopCapture(t, cp)
		reproduced := false
		target := fmt.Sprintf("localhost:%d", server.Port())
		for i, ev := range evs {
			if ev.Target != target {
				// Chromium's own background requests (component updates).
				t.Logf("not to the server: kind %s target %s error %q", ev.Kind, ev.Target, ev.Error)
				continue
			}
			t.Run(fmt.Sprintf("connection %d", i), func(t *testing.T) {
				l := findLegs(t, tr, ev, server)
				if l.upstream == nil {
					t.Fatalf("the upstream leg is not in the capture; event kind %s target %s error %q, client sent %q", ev.Kind, ev.Target, ev.Error, l.client.Client.Stream[:min(len(l.client.Client.Stream), 200)])
				}
				// A browser's close is held to 5 ms. Chromium keeps its
				// connections idle for a few hundred milliseconds before it
				// closes them; on this project's virtual machines the proxy's
				// thread then wakes 1-4 ms after the kernel stamped the FIN
				// (an idle vCPU must be woken), where the scripted scenarios,
				// which close at once, hold ±0.5 ms.
				w := check(t, ev, l, expect{finTolerance: 5}, late)
				reproduced = reproduced || w.firstFIN == "client" && w.rst == "client" && w.rstCause == "data_after_close"
			})
		}
		// Whether s_server's close_notify comes after Chromium's FIN varies
		// from run to run; "data after the client closed" reproduces it with
		// scripted peers every time.
		t.Logf("client close, late server data and client reset seen: %v", reproduced)
	})
}
