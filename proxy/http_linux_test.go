package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/inspectproxy/inspectproxy/event"
)

// TestPlainHTTPServerCloses: a server that closes after each response
// (HTTP/1.0 style) sent the first FIN even if the proxy never read it.
func TestPlainHTTPServerCloses(t *testing.T) {
	h := startProxy(t, nil)
	addr := tcpServer(t, func(c *net.TCPConn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		req.Body.Close()
		// Corked, the response and the FIN leave in one segment: the
		// proxy cannot have the body without the FIN behind it, however
		// the goroutines are scheduled.
		cork(t, c, 1)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		_ = c.CloseWrite()
		cork(t, c, 0)
		time.Sleep(50 * time.Millisecond) // the proxy lets go with the FIN unread
	})
	pu, _ := url.Parse("http://" + h.addr)
	cl := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	get(t, cl, "http://"+addr+"/")
	cl.CloseIdleConnections()
	ev := h.event()
	if len(ev.Upstreams) != 1 || ev.Upstreams[0].TCP.FirstFIN != event.SideServer {
		t.Errorf("upstreams %+v, want the server's FIN first", ev.Upstreams)
	}
}

// cork sets TCP_CORK on c: while on, the kernel holds what is written
// until it can fill a segment, or until a FIN, which then rides with it.
func cork(t *testing.T, c *net.TCPConn, on int) {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Error(err)
		return
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, on) }); err != nil || serr != nil {
		t.Errorf("TCP_CORK: %v %v", err, serr)
	}
}
