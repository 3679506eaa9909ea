package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/console"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/live"
	"github.com/inspectproxy/inspectproxy/onboard"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// ui is the console and the setup page of one serve.
type ui struct {
	hub *live.Hub
	// srv is the proxy once built, asked for the streams open when the
	// first console arrives.
	srv        atomic.Pointer[proxy.Server]
	consoleURL string // empty when the console is off or did not start
	setup      *onboard.Handler
	lan        []string
}

// openStreams is what a console arriving late is shown first.
func (u *ui) openStreams() []live.Conn {
	srv := u.srv.Load()
	if srv == nil {
		return nil
	}
	var out []live.Conn
	srv.OpenStreams(func(phase string, ev *event.Event) {
		out = append(out, live.Conn{Phase: live.Phase(phase), Event: ev})
	})
	return out
}

// startUI builds the live hub (with the events file's tail as history),
// the setup page, and the console on ui.listen. A console that cannot
// listen (port taken) is logged and left out: the proxy runs without it.
func startUI(ctx context.Context, cfg config.Config, wg *wgSetup, log *zap.Logger, caCert *x509.Certificate, app *ats.AppPolicy, o *proxy.Options) (*ui, error) {
	u := &ui{}
	var err error
	u.lan = cfg.Onboard.Addresses
	if len(u.lan) == 0 {
		if u.lan, err = onboard.LANAddrs(cfg.Listen); err != nil {
			return nil, err
		}
	}
	if cfg.Onboard.Enabled {
		if u.setup, err = onboard.New(onboard.Options{Proxies: u.lan, CA: caCert, PACDirect: cfg.Onboard.PACDirect, Version: version()}); err != nil {
			return nil, err
		}
		o.Setup = u.setup
	}
	if cfg.UI.Listen == "" {
		return u, nil
	}
	ln, err := console.Listen(cfg.UI.Listen, cfg.UI.Token)
	if errors.Is(err, syscall.EADDRINUSE) {
		log.Warn("console not started: its address is in use; set another with --ui ADDR (or --ui \"\" to switch it off)", zap.String("ui.listen", cfg.UI.Listen), zap.Error(err))
		return u, nil
	}
	if err != nil {
		return nil, err
	}
	pol, err := access.New(cfg.Access)
	if err != nil {
		ln.Close()
		return nil, err
	}
	// The hub, its history and the proxy's live phases exist only for a
	// console that is served: without one they would hold the events
	// file's tail and copies of open connections for nobody.
	u.hub = live.NewHub(live.Options{History: cfg.UI.History, Encode: console.Encode, Open: u.openStreams})
	hist, err := console.ReadHistory(cfg.Events.Path, cfg.UI.History)
	if err != nil {
		log.Warn("console: no history", zap.Error(err))
	}
	u.hub.Preload(hist)
	srv, err := console.New(console.Options{
		Hub: u.hub, Log: log.Named("console"), Token: cfg.UI.Token, App: app, Version: version(),
		History: cfg.UI.History, Setup: consoleSetup(wg, u.setup),
		// As at the proxy: this host, or access.allow_clients.
		Allow: func(a netip.Addr) bool { return pol.Client(netip.AddrPortFrom(a, 0)) == nil },
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	o.Live = live.Proxy{Hub: u.hub}
	o.Self = append(o.Self, ln.Addr())
	u.consoleURL = console.URL(ln.Addr(), cfg.UI.Token)
	go func() {
		if err := u.hub.Run(ctx); err != nil {
			log.Error("console hub", zap.Error(err))
		}
	}()
	go func() {
		if err := srv.Serve(ctx, ln); err != nil {
			log.Error("console", zap.Error(err))
		}
	}()
	return u, nil
}

// announce says where things are once the proxy listens: the addresses a
// phone types in, the console, the setup page.
func (u *ui) announce(log *zap.Logger, proxyAddr net.Addr) {
	if u.consoleURL != "" {
		log.Info("live console", zap.String("url", u.consoleURL))
	}
	if u.setup == nil {
		return
	}
	if len(u.lan) == 0 {
		log.Info("phones: the proxy listens on loopback only; to set up a phone, listen on the LAN with --listen 0.0.0.0:8080 --allow-clients 192.168.1.0/24",
			zap.Stringer("proxy", proxyAddr))
		return
	}
	urls := []string{"http://" + onboard.Host + "/"}
	for _, a := range u.lan {
		urls = append(urls, "http://"+a+"/")
	}
	log.Info("phones: set the Wi-Fi proxy to one of these addresses, then open the setup page", zap.Strings("proxy", u.lan), zap.Strings("setup", urls))
}
