package ats

import (
	"bytes"
	"os"
	"testing"

	"github.com/inspectproxy/inspectproxy/event"
)

// FuzzParsePlist feeds arbitrary bytes to the plist reader and evaluates
// an event under whatever policy comes out: errors are fine, panics not.
func FuzzParsePlist(f *testing.F) {
	if b, err := os.ReadFile("testdata/Info.plist"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("bplist00"))
	f.Add([]byte(`<plist><dict><key>NSAppTransportSecurity</key><dict><key>NSExceptionDomains</key><dict><key>a.b</key><string>x</string></dict></dict></dict></plist>`))
	ev := &event.Event{Kind: event.KindTunnel, Target: "a.b:443", TLS: &event.TLS{Version: "TLS 1.0", VersionCode: 0x0301, Cipher: "TLS_RSA_WITH_AES_128_CBC_SHA", CipherCode: 0x002f}}
	f.Fuzz(func(t *testing.T, b []byte) {
		app, err := ParsePlist(bytes.NewReader(b))
		if err != nil {
			return
		}
		_ = app.Evaluate(ev)
	})
}
