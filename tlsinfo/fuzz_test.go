package tlsinfo

import (
	"crypto/tls"
	"path/filepath"
	"testing"

	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

// FuzzTracker feeds arbitrary bytes to both directions in chunks of
// arbitrary size, alternating, and checks that the Tracker neither panics
// nor holds more than its buffer limit, and stops when it says it stopped.
func FuzzTracker(f *testing.F) {
	for _, name := range []string{"smithproxy-ja4-1.hex", "ja3rs-chrome-grease.hex", "ja3java-openssl-ssl3.hex"} {
		msg := readHex(f, filepath.Join("clienthello", name))
		f.Add(makeRecords(recordHandshake, msg, 1<<14), []byte{0x15, 3, 3, 0, 2, 2, 40}, uint8(0))
		f.Add(makeRecords(recordHandshake, msg, 100), []byte{}, uint8(7))
	}
	p := newPKI(f)
	for _, cfg := range []*tls.Config{
		{Certificates: []tls.Certificate{p.rsa}, MaxVersion: tls.VersionTLS12},
		{Certificates: []tls.Certificate{p.ecdsa}},
		{Certificates: []tls.Certificate{p.ecdsa}, CurvePreferences: []tls.CurveID{tls.CurveP256}},
	} {
		srv := testpki.StartTLS(f, cfg, nil)
		fl, err := capture(f, srv.Addr, p.clientConfig(), echoOnce)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fl.stream(ClientToServer), fl.stream(ServerToClient), uint8(255))
		f.Add(fl.stream(ClientToServer), fl.stream(ServerToClient), uint8(3))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), []byte("HTTP/1.1 200 OK\r\n"), uint8(1))
	f.Add([]byte{0x80, 0x2e, 0x01, 0x03, 0x01}, []byte{}, uint8(0))
	f.Add([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, []byte{0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0xff, 0xff, 0xff}, uint8(2))

	const maxBuffer = 4096
	f.Fuzz(func(t *testing.T, client, server []byte, chunk uint8) {
		n := 1 + int(chunk)%64
		if chunk == 255 {
			n = 1 << 16
		}
		tr := NewTracker(maxBuffer)
		ts := [2][]byte{client, server}
		for i := 0; len(ts[0])+len(ts[1]) > 0; i++ {
			dir := Direction(i % 2)
			k := min(n, len(ts[dir]))
			more := tr.Feed(dir, ts[dir][:k], at(i))
			ts[dir] = ts[dir][k:]
			for d := range tr.dirs {
				if c := cap(tr.dirs[d].hs.buf); c > maxBuffer {
					t.Fatalf("%s holds %d bytes, limit %d", Direction(d), c, maxBuffer)
				}
			}
			if info := tr.Info(); (info.NotTLS != "" || info.Err != nil) && more {
				t.Fatalf("Feed wants more after stopping: %s", summary(info))
			}
		}
		// End as a relay would: by FIN, reset or the proxy's cut.
		switch chunk % 3 {
		case 0:
			tr.EOF(ClientToServer, 0)
		case 1:
			tr.Reset(ClientToServer, 0)
		default:
			tr.Cut(0)
			tr.Reset(ClientToServer, 0)
		}
		tr.EOF(ServerToClient, 0)
		if tr.Feed(ClientToServer, []byte{0x16}, 0) || tr.Feed(ServerToClient, []byte{0x16}, 0) {
			t.Fatal("Feed wants more after EOF")
		}
		info := tr.Info()
		_ = summary(info)
		if ev := info.Event(); ev != nil && ev.Failure != nil && ev.Failure.Phase == "" {
			t.Fatalf("handshake_failure without a phase: %+v", *ev.Failure)
		}
	})
}
