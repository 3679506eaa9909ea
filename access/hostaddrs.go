package access

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// hostRefresh is how old the interface address list may get: a new DHCP
// address is seen within it, and listing interfaces (a netlink dump) costs
// at most once per interval rather than once per connection.
const hostRefresh = time.Second

// hostAddrs caches the addresses of this host's interfaces.
type hostAddrs struct {
	mu  sync.Mutex // held by the one caller refreshing
	cur atomic.Pointer[addrSet]
}

type addrSet struct {
	at    time.Time
	addrs map[netip.Addr]struct{}
}

// sharedHostAddrs is one cache for the process: the addresses belong to
// the host, not to a Policy.
var sharedHostAddrs = &hostAddrs{}

// has reports whether a (unmapped, no zone) is one of this host's
// interface addresses, refreshing the list when it is stale.
func (h *hostAddrs) has(a netip.Addr) bool {
	s := h.cur.Load()
	if s == nil || time.Since(s.at) > hostRefresh {
		s = h.refresh()
	}
	_, ok := s.addrs[a]
	return ok
}

func (h *hostAddrs) refresh() *addrSet {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.cur.Load()
	if old != nil && time.Since(old.at) <= hostRefresh { // another caller just did
		return old
	}
	s := &addrSet{at: time.Now(), addrs: map[netip.Addr]struct{}{}}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil && old != nil {
		// Keep what was known rather than forget every address; the
		// form-based rules (loopback, unspecified, link-local) still hold.
		s.addrs = old.addrs
	}
	for _, ia := range ifaddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				s.addrs[ip.Unmap()] = struct{}{}
			}
		}
	}
	h.cur.Store(s)
	return s
}
