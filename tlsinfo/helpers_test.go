package tlsinfo

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// chunk is one piece of data as the client's side of a connection saw it: a write
// (ClientToServer) or a read (ServerToClient).
type chunk struct {
	dir  Direction
	data []byte
}

// flow is a connection's chunks in the order they happened. The client
// only writes what answers bytes it already read, so replaying a flow in
// order keeps cause before effect, as a proxy feeding before forwarding does.
type flow []chunk

// at is the time given to Feed for event i: i milliseconds, so that tests
// can name the event a time points to.
func at(i int) time.Duration { return time.Duration(i) * time.Millisecond }

// stream returns one direction's bytes.
func (f flow) stream(dir Direction) []byte {
	var b []byte
	for _, e := range f {
		if e.dir == dir {
			b = append(b, e.data...)
		}
	}
	return b
}

// recordingConn records a client's reads and writes into a flow.
type recordingConn struct {
	net.Conn
	mu sync.Mutex
	f  *flow
}

func (c *recordingConn) record(dir Direction, p []byte) {
	c.mu.Lock()
	*c.f = append(*c.f, chunk{dir, bytes.Clone(p)})
	c.mu.Unlock()
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.record(ClientToServer, p)
	return c.Conn.Write(p)
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.record(ServerToClient, p[:n])
	}
	return n, err
}

// echoOnce writes a message, reads the echo and closes: app data both ways.
func echoOnce(c *tls.Conn) error {
	msg := []byte("ping over TLS")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	for n := 0; n < len(buf); {
		k, err := c.Read(buf[n:])
		if err != nil {
			return err
		}
		n += k
	}
	return nil
}

// capture dials addr with a real tls.Client over loopback, runs talk (nil:
// handshake only) and returns the recorded flow and the talk error.
func capture(t testing.TB, addr string, cfg *tls.Config, talk func(*tls.Conn) error) (flow, error) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	var f flow
	rc := &recordingConn{Conn: raw, f: &f}
	c := tls.Client(rc, cfg)
	err = c.Handshake()
	if err == nil && talk != nil {
		err = talk(c)
	}
	c.Close()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append(flow(nil), f...), err
}

// replay feeds a flow to a fresh Tracker, event i at(i), splitting events as
// split says (nil: whole), then ends both directions.
func replay(f flow, maxBuffer int, split func(i int, data []byte) [][]byte) *Tracker {
	tr := NewTracker(maxBuffer)
	for i, e := range f {
		parts := [][]byte{e.data}
		if split != nil {
			parts = split(i, e.data)
		}
		for _, p := range parts {
			tr.Feed(e.dir, p, at(i))
		}
	}
	tr.EOF(ClientToServer, at(len(f)))
	tr.EOF(ServerToClient, at(len(f)))
	return tr
}

// summary renders everything a Tracker found as text, certificates by hash,
// so runs can be compared and shown in failures.
func summary(info Info) string {
	var b strings.Builder
	fmt.Fprintf(&b, "NotTLS=%q Err=%v\n", info.NotTLS, info.Err)
	if ch := info.ClientHello; ch != nil {
		fmt.Fprintf(&b, "ClientHello=%+v\n", *ch)
	}
	if sh := info.ServerHello; sh != nil {
		fmt.Fprintf(&b, "ServerHello=%+v\n", *sh)
	}
	fmt.Fprintf(&b, "HRR=%v Version=%s Suite=%s Resumed=%v SKE=%q OCSP=%v\n", info.Retry != nil,
		VersionName(info.Version), CipherSuiteName(info.CipherSuite), info.Resumed, info.ServerKeyExchangeGroup, info.OCSPStapled)
	for _, c := range info.Certificates {
		sum := sha256.Sum256(c.Raw)
		fmt.Fprintf(&b, "cert %x\n", sum[:8])
	}
	fmt.Fprintf(&b, "CertErr=%v Alerts=%q/%q\n", info.CertificateErr, info.ClientAlert, info.ServerAlert)
	fmt.Fprintf(&b, "JA3=%s %s JA4=%s JA3S=%s %s\n", info.JA3, info.JA3Hash, info.JA4, info.JA3S, info.JA3SHash)
	fmt.Fprintf(&b, "times CH=%v SH=%v done=%v up=%v down=%v\n", info.ClientHelloAt, info.ServerHelloAt,
		info.HandshakeDoneAt, info.AppDataUpAt, info.AppDataDownAt)
	return b.String()
}

// wireRecord is a record as an independent, simple scan of a stream finds
// it: the test oracle for timings.
type wireRecord struct {
	typ       uint8
	length    int
	msgType   uint8 // first handshake message type, for handshake records
	start     int   // stream offset of the header
	headerEvt int   // event in which the header completed
	endEvt    int   // event in which the body ended
}

// records scans one direction of a flow into records.
func records(f flow, dir Direction) []wireRecord {
	var evtOf []int // event index of every byte of the stream
	var s []byte
	for i, e := range f {
		if e.dir == dir {
			s = append(s, e.data...)
			for range e.data {
				evtOf = append(evtOf, i)
			}
		}
	}
	var out []wireRecord
	for off := 0; off+5 <= len(s); {
		n := int(s[off+3])<<8 | int(s[off+4])
		if off+5+n > len(s) {
			break
		}
		r := wireRecord{typ: s[off], length: n, start: off, headerEvt: evtOf[off+4], endEvt: evtOf[off+4+n]}
		if n > 0 {
			r.msgType = s[off+5]
		}
		out = append(out, r)
		off += 5 + n
	}
	return out
}

// makeRecords frames payload as records of typ with at most size bytes each.
func makeRecords(typ uint8, payload []byte, size int) []byte {
	var out []byte
	for len(payload) > 0 {
		n := min(size, len(payload))
		out = append(out, typ, 3, 3, byte(n>>8), byte(n))
		out = append(out, payload[:n]...)
		payload = payload[n:]
	}
	return out
}

// readHex reads a testdata hex file; lines starting with # are comments.
func readHex(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var h strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			h.WriteString(strings.TrimSpace(line))
		}
	}
	b, err := hex.DecodeString(h.String())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

// pki is the test CA with RSA and ECDSA leaves for localhost.
type pki struct {
	ca, other  *testpki.CA // other is a CA nobody trusts
	rsa, ecdsa tls.Certificate
}

func newPKI(t testing.TB) *pki {
	ca := testpki.NewCA(t, "tlsinfo test CA")
	return &pki{
		ca:    ca,
		other: testpki.NewCA(t, "untrusted CA"),
		rsa:   ca.Leaf(t, testpki.LeafOpts{}),
		ecdsa: ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256}),
	}
}

func (p *pki) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: p.ca.Pool, ServerName: "localhost"}
}
