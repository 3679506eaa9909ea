package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/internal/netns"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
	"github.com/inspectproxy/inspectproxy/onboard"
)

func setupProxy(t *testing.T, edit func(*config.Config)) *harness {
	t.Helper()
	page, err := onboard.New(onboard.Options{Proxies: []string{"192.0.2.10:8080"}})
	if err != nil {
		t.Fatal(err)
	}
	return startProxyWith(t, edit, Options{Setup: page})
}

// TestSetupPage: the setup page answers a proxied request for
// http://inspectproxy.setup/ (curl -x, as a phone with the proxy set) and a
// plain GET sent straight to the listener; an https CONNECT to it is told
// to use http.
func TestSetupPage(t *testing.T) {
	curl := testtool.Need(t, "curl")
	h := setupProxy(t, nil)
	for _, args := range [][]string{
		{"-x", "http://" + h.addr, "http://" + onboard.Host + "/"},
		{"http://" + h.addr + "/"},
	} {
		out, err := exec.Command(curl, append([]string{"-sS", "--noproxy", "", "-w", "\n%{http_code}"}, args...)...).CombinedOutput()
		if err != nil || !strings.HasSuffix(string(out), "\n200") || !strings.Contains(string(out), "192.0.2.10:8080") {
			t.Errorf("curl %v: %v\n%.300s", args, err, out)
		}
		if ev := h.event(); ev.Target != onboard.Host+":80" || ev.Error != "" {
			t.Errorf("setup event target=%q error=%q", ev.Target, ev.Error)
		}
	}
	resp, _ := rawRequest(t, h.addr, "CONNECT "+onboard.Host+":443 HTTP/1.1\r\nHost: "+onboard.Host+":443\r\n\r\n", false)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("CONNECT to the setup host: %d, want 400 pointing to http://", resp.StatusCode)
	}
	h.event()
}

// TestSetupPageAuth: with proxy auth on, a phone's browser asking the
// listener directly is asked for the credentials (401), and gets the page
// with them.
func TestSetupPageAuth(t *testing.T) {
	h := setupProxy(t, func(c *config.Config) { c.Access.Username, c.Access.Password = "qa", "secret" })
	resp, _ := rawRequest(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false)
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("direct GET without credentials: %d %v", resp.StatusCode, resp.Header)
	}
	h.event()
	auth := strings.Replace(basic("qa", "secret"), "Proxy-Authorization", "Authorization", 1)
	resp, _ = rawRequest(t, h.addr, "GET / HTTP/1.1\r\nHost: x\r\n"+auth+"\r\n", true)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("direct GET with credentials: %d", resp.StatusCode)
	}
	h.event()
}

// TestSetupPageRefusesOthers: a client the access rules refuse gets 403
// for the setup page too.
func TestSetupPageRefusesOthers(t *testing.T) {
	pair := netns.New(t)
	h := setupProxy(t, outsideAllowList)
	c := dialFromPeer(t, pair, h.addr)
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("setup page from a refused client: %v %v, want 403", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	h.event()
}

// OPTIONS * is the proxy's, setup page or not.
func TestOptionsStarWithSetupPage(t *testing.T) {
	h := setupProxy(t, nil)
	resp, _ := rawRequest(t, h.addr, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", true)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Allow") == "" {
		t.Errorf("OPTIONS *: %d %v, want 200 with Allow", resp.StatusCode, resp.Header)
	}
	h.event()
}
