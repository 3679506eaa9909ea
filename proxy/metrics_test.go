package proxy

import (
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/metrics"
)

// TestMetricsObserver wires the Prometheus metrics as the proxy's
// observer and reads them back after a tunnel and a refused request.
func TestMetricsObserver(t *testing.T) {
	m := metrics.New()
	h := startProxyWith(t, nil, Options{Observers: []Observer{m}})
	c := h.connect(tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) }))
	echo(t, c, []byte("x"))
	c.Close()
	h.event()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`inspectproxy_events_total{kind="tunnel"} 1`,
		`inspectproxy_open_connections{kind="tunnel"} 0`,
		`inspectproxy_tcp_connect_seconds_count{kind="tunnel"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
