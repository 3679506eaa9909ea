package wireguard

import (
	"encoding/base64"
	"html/template"
	"net/http"

	"github.com/skip2/go-qrcode"
)

// SetupHandler serves a page with every peer's config as text and as a QR
// code to scan with the WireGuard app. The configs hold the devices'
// private keys: mount it only where the live console is (its token and
// client rules), never on the setup page the proxy serves to its clients.
// config renders a peer's config text.
func SetupHandler(store *Store, config func(Peer) (string, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peers, err := store.Peers()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		type item struct {
			Peer   Peer
			Config string
			QR     template.URL // a data: URL of the PNG
		}
		items := make([]item, 0, len(peers))
		for _, p := range peers {
			text, err := config(p)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			png, err := qrcode.Encode(text, qrcode.Medium, 384)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			items = append(items, item{p, text, template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))})
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = setupPage.Execute(w, items)
	})
}

var setupPage = template.Must(template.New("wireguard").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>inspectproxy: WireGuard devices</title>
<style>body{font:15px/1.4 system-ui,sans-serif;margin:1.5em;max-width:60em}pre{background:#f4f4f4;padding:.8em;overflow-x:auto}
section{border-top:1px solid #ccc;padding-top:1em;margin-top:1em}img{image-rendering:pixelated;width:16em;height:16em}</style>
</head><body>
<h1>Capture a whole device with WireGuard</h1>
<p>Install the WireGuard app, tap <b>+</b> → <b>Create from QR code</b> and scan the device's code; switch the tunnel on.
Every TCP connection and DNS lookup of the device is then an event. Add a device with
<code>inspectproxy wireguard peer add NAME</code>.</p>
{{range .}}<section><h2>{{.Peer.Name}}</h2>
<p>Tunnel address {{range $i, $a := .Peer.Addresses}}{{if $i}}, {{end}}{{$a}}{{end}}; added {{.Peer.Created.Format "2006-01-02 15:04 MST"}}.</p>
<img src="{{.QR}}" alt="QR code of {{.Peer.Name}}'s WireGuard config">
<pre>{{.Config}}</pre></section>
{{else}}<p><b>No devices yet.</b></p>{{end}}
</body></html>
`))
