package console

import (
	"encoding/json"
	"strings"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/live"
)

// row is one line of the console's list: the columns, cut from the event
// (the detail view fetches the whole event). Short JSON names keep a
// 10,000-row reset small.
type row struct {
	ID     string `json:"id"`
	Start  int64  `json:"t"` // Unix milliseconds
	Open   bool   `json:"open,omitempty"`
	Phase  string `json:"ph"`
	Client string `json:"cl"`
	Target string `json:"tg"`
	SNI    string `json:"sni,omitempty"`
	Kind   string `json:"k"`
	TLS    string `json:"tls,omitempty"`
	// ALPN is the negotiated protocol, or the client's offer with Offered
	// set (TLS 1.3 encrypts the server's choice).
	ALPN    string `json:"alpn,omitempty"`
	Offered bool   `json:"off,omitempty"`
	// ATS is yes, no or unknown; Rules the broken ones.
	ATS   string   `json:"ats,omitempty"`
	Rules []string `json:"rules,omitempty"`
	// App is allowed or blocked under the app's Info.plist, when given.
	App       string   `json:"app,omitempty"`
	DNS       *float64 `json:"dns,omitempty"`
	Connect   *float64 `json:"con,omitempty"`
	Handshake *float64 `json:"hs,omitempty"`
	TTFB      *float64 `json:"ttfb,omitempty"`
	Duration  *float64 `json:"dur,omitempty"`
	FirstFIN  string   `json:"fin,omitempty"`
	HalfClose *float64 `json:"half,omitempty"`
	RST       string   `json:"rst,omitempty"`
	Timeout   string   `json:"to,omitempty"`
	Up        int64    `json:"up,omitempty"`
	Down      int64    `json:"down,omitempty"`
	Requests  int      `json:"rq,omitempty"`
	Error     string   `json:"err,omitempty"`
}

func rowOf(c live.Conn) row {
	ev := c.Event
	r := row{
		ID: ev.ID, Start: ev.Start.UnixMilli(), Open: ev.End.IsZero(), Phase: string(c.Phase),
		Client: ev.Client, Target: ev.Target, Kind: ev.Kind, Requests: len(ev.HTTP), Error: ev.Error,
	}
	if t := ev.TCP; t != nil {
		r.DNS, r.Connect = t.DNSMS, t.ConnectMS
		r.FirstFIN, r.HalfClose, r.RST, r.Timeout = t.FirstFIN, t.HalfCloseMS, t.RST, t.Timeout
		r.Up, r.Down = t.BytesUp, t.BytesDown
		if !r.Open {
			d := t.DurationMS
			r.Duration = &d
		}
	}
	if t := ev.TLS; t != nil {
		r.TLS, r.SNI, r.Handshake, r.ALPN = t.Version, t.SNI, t.HandshakeMS, t.ALPN
		if r.ALPN == "" && t.ClientHello != nil && len(t.ClientHello.ALPN) > 0 {
			r.ALPN, r.Offered = strings.Join(t.ClientHello.ALPN, ","), true
		}
		if r.Error == "" && t.Failure != nil {
			r.Error = "TLS handshake failed: " + t.Failure.How + " by " + t.Failure.By
		}
	}
	r.TTFB = ttfb(ev)
	if a := ev.ATS; a != nil {
		r.ATS = a.Compliant
		for _, v := range a.Violations {
			r.Rules = append(r.Rules, v.Rule)
		}
		if a.App != nil {
			r.App = "blocked"
			if a.App.Allowed {
				r.App = "allowed"
			}
		}
	}
	return r
}

// ttfb is the first request's wait, or in a passthrough tunnel the first
// server data after the client's first data (event.TLS.TunnelTTFB).
func ttfb(ev *event.Event) *float64 {
	for _, h := range ev.HTTP {
		if h.WaitMS != nil {
			return h.WaitMS
		}
	}
	if d, ok := ev.TLS.TunnelTTFB(); ok {
		return &d
	}
	return nil
}

// batch is the message of one flush, and of a reset (Reset set: replace
// everything shown).
type batch struct {
	Reset bool  `json:"reset,omitempty"`
	Rows  []row `json:"rows"`
}

// Encode is the live.Encoder of the console's stream: give it to
// live.NewHub.
func Encode(changed []live.Conn) ([]byte, error) {
	b := batch{Rows: make([]row, 0, len(changed))}
	for _, c := range changed {
		b.Rows = append(b.Rows, rowOf(c))
	}
	return json.Marshal(b)
}

// encodeState is a reset: the history, then the open connections.
func encodeState(st live.State) ([]byte, error) {
	b := batch{Reset: true, Rows: make([]row, 0, len(st.Closed)+len(st.Open))}
	for _, ev := range st.Closed {
		b.Rows = append(b.Rows, rowOf(live.Conn{Phase: live.Closed, Event: ev}))
	}
	for _, c := range st.Open {
		b.Rows = append(b.Rows, rowOf(c))
	}
	return json.Marshal(b)
}
