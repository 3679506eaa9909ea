package console

import (
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/event"
)

func find(t testing.TB, evs []*event.Event, id string) *event.Event {
	t.Helper()
	for _, ev := range evs {
		if ev.ID == id {
			return ev
		}
	}
	t.Fatalf("no sample event %s", id)
	return nil
}

// TestStoryWireOrder: the steps of sample connections come in the order
// the protocols put them on the wire (RFC 9293's three-way handshake and
// close, RFC 8446 §2 and RFC 5246 §7.3 message flows).
func TestStoryWireOrder(t *testing.T) {
	evs := sample(t)
	for _, tc := range []struct {
		id   string
		want []string // label from>to
	}{
		{"c0020", []string{ // TLS 1.3 tunnel, the client closes first
			"accept client>proxy", "CONNECT 93.184.215.14:443 client>proxy",
			"SYN proxy>server", "SYN-ACK server>proxy", "ACK proxy>server", "200 Connection established proxy>client",
			"ClientHello client>server", "ServerHello server>client",
			"{EncryptedExtensions, Certificate, CertificateVerify, Finished} server>client", "{Finished} client>server",
			"application data client>server", "application data server>client",
			"FIN (first) client>server", "half-close 0.60 ms proxy>proxy", "FIN server>client", "closed proxy>proxy",
		}},
		{"c0021", []string{ // DNS, then the server refuses: RST
			"accept client>proxy", "CONNECT down.example.com:443 client>proxy", "DNS down.example.com proxy>proxy",
			"RST server>proxy", "closed proxy>proxy",
		}},
	} {
		t.Run(tc.id, func(t *testing.T) {
			var got []string
			prev := -1.0
			for _, s := range Story(find(t, evs, tc.id)) {
				got = append(got, s.Label+" "+s.From+">"+s.To)
				if s.At < prev {
					t.Errorf("%s at %v after a step at %v", s.Label, s.At, prev)
				}
				prev = s.At
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("story:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
