package access

import (
	"fmt"
	"net"

	"github.com/inspectproxy/inspectproxy/config"
)

// CheckBound applies the open-proxy rule to the address a listener
// actually bound (key names its config key: "listen", "socks.listen"):
// without access.allow_clients or proxy auth it must be loopback. Call it
// right after binding; a name such as localhost is resolved by then, so
// an /etc/hosts entry pointing it elsewhere is caught.
func CheckBound(c *config.Config, key string, bound net.Addr) error {
	if c.ClientsRestricted() || BoundLoopback(bound) {
		return nil
	}
	return fmt.Errorf("%w: %s bound %s, which is not a loopback address; set access.allow_clients and/or access.username and access.password, or listen on 127.0.0.1 or [::1]", config.ErrOpenProxy, key, bound)
}

// BoundLoopback reports whether a listener's bound address is loopback
// (IPv4-mapped included): what a listener without authentication must be.
func BoundLoopback(bound net.Addr) bool {
	ap, err := addrPort(bound)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
