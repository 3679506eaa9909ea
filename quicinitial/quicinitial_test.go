package quicinitial

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// rfcInitial is the protected client Initial of RFC 9001 Appendix A.2.
func rfcInitial(t testing.TB) []byte {
	f, err := os.Open("testdata/rfc9001-a2-client-initial.hex")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var h strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); !strings.HasPrefix(l, "#") {
			h.WriteString(l)
		}
	}
	b, err := hex.DecodeString(h.String())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeysRFC9001 checks the derived client keys against RFC 9001 A.1.
func TestKeysRFC9001(t *testing.T) {
	dcid, _ := hex.DecodeString("8394c8f03e515708")
	k, err := clientKeys(dcid)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(k.iv); got != "fa044b2f42a3fd3b46fb255c" {
		t.Errorf("iv %s", got)
	}
	// The header protection key, checked through RFC 9001 A.2's mask:
	// sample d1b1c98dd7689fb8ec11d242b123dc9b gives mask 437b9aec36.
	sample, _ := hex.DecodeString("d1b1c98dd7689fb8ec11d242b123dc9b")
	var mask [16]byte
	k.hp.Encrypt(mask[:], sample)
	if got := hex.EncodeToString(mask[:5]); got != "437b9aec36" {
		t.Errorf("mask %s", got)
	}
}

// TestRFC9001ClientInitial reads the published Initial: its ClientHello
// names example.com and offers ALPN "alpn" (RFC 9001 A.2's CRYPTO frame).
func TestRFC9001ClientInitial(t *testing.T) {
	var r Reader
	if !r.Feed(rfcInitial(t)) {
		t.Fatal("not done after the whole ClientHello")
	}
	q, err := r.Result()
	if err != nil {
		t.Fatal(err)
	}
	if q.Version != "1" || q.SNI != "example.com" || !slices.Equal(q.ALPN, []string{"alpn"}) {
		t.Errorf("got %+v", q)
	}
}

func TestMalformed(t *testing.T) {
	good := rfcInitial(t)
	flipped := slices.Clone(good)
	flipped[100] ^= 1
	v2 := slices.Clone(good)
	v2[4] = 2
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"short header", []byte{0x40, 1, 2, 3}, "not a long-header packet"},
		{"truncated", good[:30], "past the datagram"},
		{"tampered", flipped, "does not decrypt"},
		{"other version", v2, "only version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Reader
			if !r.Feed(tc.in) {
				t.Fatal("not done")
			}
			if _, err := r.Result(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestQUICGoClient reads the Initials of a real client (quic-go with Go's
// TLS, whose post-quantum key share spreads the ClientHello over more
// than one packet) as they arrive on a UDP socket.
func TestQUICGoClient(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialErr := make(chan error, 1)
	go func() {
		_, err := quic.DialAddr(ctx, pc.LocalAddr().String(), &tls.Config{ServerName: "api.example.test", NextProtos: []string{"h3"}}, &quic.Config{HandshakeIdleTimeout: 5 * time.Second})
		dialErr <- err
	}()
	var r Reader
	buf := make([]byte, 2048)
	datagrams := 0
	for !r.Done() {
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", datagrams, err)
		}
		datagrams++
		r.Feed(buf[:n])
	}
	cancel()
	if err := <-dialErr; err == nil || !errors.Is(err, context.Canceled) {
		t.Logf("dial: %v", err)
	}
	q, err := r.Result()
	if err != nil {
		t.Fatal(err)
	}
	if q.Version != "1" || q.SNI != "api.example.test" || !slices.Equal(q.ALPN, []string{"h3"}) {
		t.Errorf("got %+v", q)
	}
	t.Logf("ClientHello read from %d datagrams", datagrams)
}

func FuzzReader(f *testing.F) {
	good := rfcInitial(f)
	f.Add(good)
	f.Add(good[:60])
	f.Add([]byte{0xc0, 0, 0, 0, 1, 0, 0, 0, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Reader
		r.Feed(b)
		r.Feed(b)
		_, _ = r.Result()
	})
}
