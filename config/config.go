// Package config is inspectproxy's configuration: the struct below is the
// documentation. Values come from defaults, then the YAML file, then
// INSPECTPROXY_* environment variables, then command-line flags.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"golang.org/x/net/http/httpguts"

	"github.com/inspectproxy/inspectproxy/scope"
)

// ErrOpenProxy is returned by Validate for a non-loopback listener with no
// client allow-list and no proxy auth.
var ErrOpenProxy = errors.New("config: refusing to run as an open proxy")

// Config is the whole configuration.
type Config struct {
	// Listen is the proxy's address. Default 127.0.0.1:8080.
	Listen string `mapstructure:"listen"`
	// Events is where events are written and how that file is kept.
	Events Events `mapstructure:"events"`
	// Log configures the zap log on stderr.
	Log Log `mapstructure:"log"`
	// Access controls who may use the proxy and where it may connect.
	Access Access `mapstructure:"access"`
	// Limits bound resources per connection and in total.
	Limits Limits `mapstructure:"limits"`
	// TLS configures certificate probing and verification.
	TLS TLS `mapstructure:"tls"`
	// ATS is the App Transport Security policy events are checked against.
	ATS ATS `mapstructure:"ats"`
	// MITM configures decryption, off by default.
	MITM MITM `mapstructure:"mitm"`
	// Admin is the metrics and health listener.
	Admin Admin `mapstructure:"admin"`
	// Capture limits which connections are recorded.
	Capture Capture `mapstructure:"capture"`
	// Socks is the SOCKS5 listener, off by default.
	Socks Socks `mapstructure:"socks"`
	// OTLP exports each client connection as an OpenTelemetry trace.
	OTLP OTLP `mapstructure:"otlp"`
	// UI is the live web console.
	UI UI `mapstructure:"ui"`
	// Onboard is the phone setup page the proxy serves itself.
	Onboard Onboard `mapstructure:"onboard"`
	// WireGuard captures whole devices through a WireGuard tunnel; off
	// unless wireguard.listen is set.
	WireGuard WireGuard `mapstructure:"wireguard"`
}

// Capture scopes what is recorded, like mitmproxy's ignore_hosts and
// allow_hosts but with globs (path.Match syntax, matched without case; a
// "*" crosses dots, a pattern with ":" matches host:port). Connections out
// of scope are still proxied, and not recorded.
type Capture struct {
	// OnlyHosts, when set, records only connections to matching hosts.
	// Default empty (every host).
	OnlyHosts []string `mapstructure:"only_hosts"`
	// IgnoreHosts records no connection to matching hosts, e.g.
	// ["*.apple.com", "*.icloud.com"]. Default empty.
	IgnoreHosts []string `mapstructure:"ignore_hosts"`
}

// CaptureScope is the matcher of Capture: Recorded(target) says whether a
// connection to target is recorded.
func (c *Config) CaptureScope() scope.Hosts {
	return scope.Hosts{Only: c.Capture.OnlyHosts, Ignore: c.Capture.IgnoreHosts}
}

// Events configures the events file. The old form, a file name alone
// (`events: FILE`, INSPECTPROXY_EVENTS), still sets Path.
type Events struct {
	// Path is the JSON-lines file events are appended to; "-" is stdout.
	// Default inspect-events.jsonl.
	Path string `mapstructure:"path"`
	// MaxSize rotates the file before it grows past this many megabytes
	// (MiB): it is renamed NAME-TIMESTAMP.EXT and a new one started. 0
	// never rotates (rotate with logrotate, which sends SIGHUP). Default 0.
	MaxSize int `mapstructure:"max_size"`
	// MaxBackups is how many rotated files are kept, the oldest removed
	// first; 0 keeps them all. Default 0.
	MaxBackups int `mapstructure:"max_backups"`
	// Compress gzips rotated files (NAME-TIMESTAMP.EXT.gz). Default false.
	Compress bool `mapstructure:"compress"`
	// QueueBytes bounds the events waiting for the writer. When it is full
	// (the disk stalls), new events are dropped and counted, never waited
	// for. Default 16MiB.
	QueueBytes int `mapstructure:"queue_bytes"`
	// CloseTimeout bounds writing what is queued at shutdown; events still
	// queued then are counted as dropped. Default 5s.
	CloseTimeout time.Duration `mapstructure:"close_timeout"`
}

// Log configures logging.
type Log struct {
	// Format is "console" (human-readable) or "json". Default console.
	Format string `mapstructure:"format"`
	// Level is debug, info, warn or error. Default info.
	Level string `mapstructure:"level"`
}

// Access controls clients and destinations.
type Access struct {
	// AllowClients lists client networks (CIDR or IP) allowed to connect;
	// empty allows everyone who can reach the listener. Clients on this
	// host (loopback, or one of its own addresses) are always allowed, so
	// the proxy can be tried from the machine it runs on. Default empty.
	AllowClients []string `mapstructure:"allow_clients"`
	// Username and Password enable proxy Basic auth when both are set.
	// Default empty (no auth).
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	// DenyDestinations lists networks (CIDR or IP) the proxy will not
	// connect to, checked after DNS for every address a name resolves to.
	// IPv4-mapped entries (::ffff:192.0.2.0/120) mean their IPv4 network;
	// other IPv6 entries match IPv6 destinations only. Default empty.
	DenyDestinations []string `mapstructure:"deny_destinations"`
	// AllowLocalDestinations lets clients on other hosts reach this host
	// itself: loopback, unspecified (0.0.0.0, ::), link-local
	// (169.254.0.0/16 with cloud metadata, fe80::/10) and the addresses of
	// its interfaces. Clients on this host may always reach those; nobody
	// may reach the proxy's own listeners (a loop). Default false.
	AllowLocalDestinations bool `mapstructure:"allow_local_destinations"`
}

// Limits bound what one client can hold.
type Limits struct {
	// MaxConnections caps concurrent client streams (HTTP, SOCKS5); one
	// over it is answered at once (503, or SOCKS5 reply 0x01) and leaves an
	// event. Lowered to fit the open-file limit (2 descriptors a tunnel).
	// Default 4096.
	MaxConnections int `mapstructure:"max_connections"`
	// HeaderTimeout bounds reading a request's headers (slowloris). Default 10s.
	HeaderTimeout time.Duration `mapstructure:"header_timeout"`
	// MaxHeaderBytes caps a request's headers; larger gets 431. Default 64KiB.
	MaxHeaderBytes int `mapstructure:"max_header_bytes"`
	// DialTimeout bounds DNS plus TCP connect upstream. Default 10s.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
	// HelloTimeout is how long a tunnel waits for the client's first bytes
	// before it stops waiting to inspect them (the tunnel stays up). Default 10s.
	HelloTimeout time.Duration `mapstructure:"hello_timeout"`
	// IdleTimeout closes a tunnel with no bytes either way for this long.
	// Default 5m.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// HalfCloseTimeout closes a tunnel this long after its first FIN if the
	// other side has not finished. Default 60s.
	HalfCloseTimeout time.Duration `mapstructure:"half_close_timeout"`
	// InspectBuffer caps bytes held per direction to reassemble handshake
	// messages; past it inspection stops and bytes still flow. Default 256KiB.
	InspectBuffer int `mapstructure:"inspect_buffer"`
	// ShutdownGrace is how long open connections get to finish on SIGINT or
	// SIGTERM before they are closed and their events written. Default 10s.
	ShutdownGrace time.Duration `mapstructure:"shutdown_grace"`
	// HandshakeTimeout bounds each TLS handshake the proxy makes itself
	// (both legs of a decrypted connection). Default 10s.
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout"`
	// MaxUpstreamsOpen caps the upstream connections one client connection
	// holds open at once (plain HTTP to many hosts, or MITM); idle ones are
	// closed first, then requests get 503. Default 32.
	MaxUpstreamsOpen int `mapstructure:"max_upstreams_open"`
	// MaxUpstreamsPerClient caps the upstream connections one client
	// connection opens over its life; past it, requests get 503 and the
	// connection is closed. Default 256.
	MaxUpstreamsPerClient int `mapstructure:"max_upstreams_per_client_life"`
	// MaxRecordedRequests is how many requests of one client connection
	// the event describes; the rest are served and counted (cut.http).
	// Default 1000.
	MaxRecordedRequests int `mapstructure:"max_recorded_requests"`
	// MaxURLBytes is how much of each request's URL the event keeps; the
	// full length is recorded beside it (http[].url_length). Default 2KiB.
	MaxURLBytes int `mapstructure:"max_url_bytes"`
	// MaxHeaderBytesRecorded is how many bytes of each request's and
	// response's headers the event keeps. Default 16KiB.
	MaxHeaderBytesRecorded int `mapstructure:"max_header_bytes_recorded"`
	// MaxEventBytes bounds one event's size: past it, requests are only
	// counted and the event says truncated. The events writer drops a
	// longer line (newline included) and counts it (too_large), so no
	// reader meets one. Default 1MiB.
	MaxEventBytes int `mapstructure:"max_event_bytes"`
}

// TLS configures certificate work.
type TLS struct {
	// Probe fetches the certificate chain of TLS 1.3 servers, which the
	// handshake encrypts, by a side handshake of the proxy's own. Default true.
	Probe bool `mapstructure:"probe"`
	// ProbeTimeout bounds one probe. Default 5s.
	ProbeTimeout time.Duration `mapstructure:"probe_timeout"`
	// ProbeTTL is how long a probed chain is reused per host:port and SNI.
	// Default 10m.
	ProbeTTL time.Duration `mapstructure:"probe_ttl"`
	// ExtraRoots are PEM files of root CAs trusted besides the system's, for
	// chain verification and the ATS trust rule. Default empty.
	ExtraRoots []string `mapstructure:"extra_roots"`
}

// ATS is the policy events are checked against.
type ATS struct {
	// MinTLSVersion is "TLSv1.0" to "TLSv1.3". Default TLSv1.2.
	MinTLSVersion string `mapstructure:"min_tls_version"`
	// RequireForwardSecrecy requires ECDHE suites. Default true.
	RequireForwardSecrecy bool `mapstructure:"require_forward_secrecy"`
	// Plist is an app's Info.plist (XML or binary) whose
	// NSAppTransportSecurity is also evaluated. Default empty.
	Plist string `mapstructure:"plist"`
}

// MITM configures decryption.
type MITM struct {
	// Enabled decrypts every CONNECT tunnel. Default false.
	Enabled bool `mapstructure:"enabled"`
	// Hosts decrypts only tunnels to hosts matching these patterns
	// (path.Match syntax on the host name, e.g. "*.example.com"), even when
	// Enabled is false. Default empty.
	Hosts []string `mapstructure:"hosts"`
	// DataDir holds the CA created by `inspectproxy ca init`.
	// Default $HOME/.inspectproxy.
	DataDir string `mapstructure:"data_dir"`
	// InsecureUpstream skips verifying upstream certificates in MITM mode.
	// Default false.
	InsecureUpstream bool `mapstructure:"insecure_upstream"`
	// AutoPassthrough sends a host through undecrypted for
	// AutoPassthroughTTL once a client rejected the proxy's certificate for
	// it (certificate pinning, or a CA the client does not trust); each such
	// event says why in mitm_skipped. Default false.
	AutoPassthrough bool `mapstructure:"auto_passthrough"`
	// AutoPassthroughTTL is how long AutoPassthrough remembers a host.
	// Default 10m.
	AutoPassthroughTTL time.Duration `mapstructure:"auto_passthrough_ttl"`
	// RecordSecrets keeps Cookie, Set-Cookie, Authorization and
	// Proxy-Authorization values in http[] headers; otherwise they read
	// "[redacted]". Default false.
	RecordSecrets bool `mapstructure:"record_secrets"`
	// Keylog appends the TLS secrets of both legs of every decrypted
	// connection to this file in NSS key log format (for Wireshark); the
	// SSLKEYLOGFILE environment variable sets it too. Default empty (off).
	Keylog string `mapstructure:"keylog"`
}

// Admin configures the metrics listener.
type Admin struct {
	// Listen serves /metrics and /healthz there; empty is off. Default empty.
	Listen string `mapstructure:"listen"`
}

// Socks configures the SOCKS5 listener.
type Socks struct {
	// Listen is the SOCKS5 (RFC 1928) address; empty is off. As for
	// listen, anything but a loopback address needs access.allow_clients
	// and/or access.username+password (RFC 1929 for SOCKS). Default empty.
	Listen string `mapstructure:"listen"`
}

// OTLP configures OpenTelemetry trace export. Keys left empty (or zero)
// fall back to the standard OTEL_EXPORTER_OTLP_TRACES_* and then
// OTEL_EXPORTER_OTLP_* environment variables, then to the SDK's defaults;
// a key that is set wins over them.
type OTLP struct {
	// Endpoint is the receiver's base URL: http://127.0.0.1:4318 for
	// http/protobuf (/v1/traces is appended, as for
	// OTEL_EXPORTER_OTLP_ENDPOINT) or http://127.0.0.1:4317 for grpc.
	// http:// is plaintext, https:// is TLS. Empty: export is on only if
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is
	// set. Default empty (off).
	Endpoint string `mapstructure:"endpoint"`
	// Protocol is http/protobuf, http/json or grpc. Empty:
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL, else
	// http/protobuf (the specification's default). Default empty.
	Protocol string `mapstructure:"protocol"`
	// Headers are sent with every export (an API key, a tenant). When set
	// they replace OTEL_EXPORTER_OTLP_(TRACES_)HEADERS. They are never
	// logged. Default empty.
	Headers map[string]string `mapstructure:"headers"`
	// CAFile is a PEM file of the roots an https:// receiver is verified
	// against instead of the system's. When set it replaces
	// OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE and the client certificate of
	// OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE/_KEY. Default empty.
	CAFile string `mapstructure:"ca_file"`
	// SamplingRatio is the fraction of client connections exported, from
	// 0 to 1, decided by trace id. Default 1 (all).
	SamplingRatio float64 `mapstructure:"sampling_ratio"`
	// QueueSize bounds the spans waiting for export. A connection whose
	// spans do not fit is not exported at all, and counted in
	// inspectproxy_otlp_traces_total{outcome="dropped"}. Default 2048.
	QueueSize int `mapstructure:"queue_size"`
	// Timeout bounds one export, retries included. Zero: each attempt
	// has OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT, else 10s, and the export
	// with its retries OTEL_BSP_EXPORT_TIMEOUT, else 30s. Default 0.
	Timeout time.Duration `mapstructure:"timeout"`
}

// maxOTLPQueue caps otlp.queue_size: a span is about a kilobyte, so the
// queue stays well under a gigabyte whatever the value.
const maxOTLPQueue = 1 << 20

// UI configures the live web console.
type UI struct {
	// Listen is the console's address; empty switches it off. Anything
	// but a loopback address needs Token. If the port is taken the proxy
	// still starts, without the console. Default 127.0.0.1:8081.
	Listen string `mapstructure:"listen"`
	// Token, when set, is required for every console request (the URL
	// printed at start carries it once; the browser then keeps a cookie).
	// Default empty.
	Token string `mapstructure:"token"`
	// History is how many closed connections the console keeps and starts
	// with, read from the end of the events file. Default 10000.
	History int `mapstructure:"history"`
}

// Onboard configures the setup page (http://inspectproxy.setup/ through
// the proxy, or GET / at its address) and the PAC file at /proxy.pac.
type Onboard struct {
	// Enabled serves the setup page. Default true.
	Enabled bool `mapstructure:"enabled"`
	// PACDirect lists host patterns (path.Match syntax, e.g. "*.apple.com")
	// the PAC file sends DIRECT instead of through the proxy. Default empty.
	PACDirect []string `mapstructure:"pac_direct"`
	// Addresses are the host:port phones are told to use, when the
	// machine's own LAN addresses are not what they reach (NAT, a VM).
	// Default empty: the listener's address, or every LAN address for
	// 0.0.0.0.
	Addresses []string `mapstructure:"addresses"`
}

// WireGuard configures the WireGuard mode. Keys live in the wireguard/
// subdirectory of mitm.data_dir; `inspectproxy wireguard peer add NAME`
// makes a device's config.
type WireGuard struct {
	// Listen is the UDP address of the WireGuard server (flag --wireguard),
	// e.g. ":51820"; empty is off. The port is bound on every address
	// whatever the host part; only configured peers' packets are
	// answered. Default empty.
	Listen string `mapstructure:"listen"`
	// QUIC is what a peer's UDP to port 443 gets (flag --wireguard-quic):
	// "refuse" answers ICMP port unreachable, so that apps fall back to
	// TCP where the TLS handshake is seen; "pass" forwards it with one udp
	// event per flow. Default refuse.
	QUIC string `mapstructure:"quic"`
	// Network is the IPv4 network (at most /30) of the peers' tunnel
	// addresses; its first address is the tunnel's DNS resolver. Changing
	// it means adding the peers again. Default 10.64.0.0/24.
	Network string `mapstructure:"network"`
	// Network6, when set, gives each peer an IPv6 address too from this
	// network (a ULA, e.g. fd64:6970::/64). Default empty (IPv4 only).
	Network6 string `mapstructure:"network6"`
	// Endpoint is the host or host:port devices connect to, written into
	// their configs. Default: this machine's first non-loopback IPv4
	// address and the listen port.
	Endpoint string `mapstructure:"endpoint"`
	// MTU of the tunnel, 1280 to 65535. Default 1420 (as wg-quick).
	MTU int `mapstructure:"mtu"`
	// MaxConnections caps the open TCP and UDP flows of all peers
	// together; over it a TCP flow is reset and a UDP flow refused, with
	// an event naming the limit. Default 4096.
	MaxConnections int `mapstructure:"max_connections"`
	// MaxConnectionsPerPeer caps one peer's open flows. Default 1024.
	MaxConnectionsPerPeer int `mapstructure:"max_connections_per_peer"`
	// UDPIdleTimeout ends a UDP flow quiet both ways this long and writes
	// its event. Default 60s.
	UDPIdleTimeout time.Duration `mapstructure:"udp_idle_timeout"`
}

// Default returns the defaults.
func Default() Config {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return Config{
		Listen: "127.0.0.1:8080",
		Events: Events{Path: "inspect-events.jsonl", QueueBytes: 16 << 20, CloseTimeout: 5 * time.Second},
		Log:    Log{Format: "console", Level: "info"},
		Limits: Limits{
			MaxConnections:   4096,
			HeaderTimeout:    10 * time.Second,
			MaxHeaderBytes:   64 << 10,
			DialTimeout:      10 * time.Second,
			HelloTimeout:     10 * time.Second,
			IdleTimeout:      5 * time.Minute,
			HalfCloseTimeout: 60 * time.Second,
			InspectBuffer:    256 << 10,
			ShutdownGrace:    10 * time.Second,

			HandshakeTimeout:       10 * time.Second,
			MaxUpstreamsOpen:       32,
			MaxUpstreamsPerClient:  256,
			MaxRecordedRequests:    1000,
			MaxURLBytes:            2 << 10,
			MaxHeaderBytesRecorded: 16 << 10,
			MaxEventBytes:          1 << 20,
		},
		TLS:     TLS{Probe: true, ProbeTimeout: 5 * time.Second, ProbeTTL: 10 * time.Minute},
		ATS:     ATS{MinTLSVersion: "TLSv1.2", RequireForwardSecrecy: true},
		MITM:    MITM{DataDir: home + "/.inspectproxy", AutoPassthroughTTL: 10 * time.Minute},
		UI:      UI{Listen: "127.0.0.1:8081", History: 10000},
		Onboard: Onboard{Enabled: true},
		OTLP:    OTLP{SamplingRatio: 1, QueueSize: 2048},
		WireGuard: WireGuard{
			QUIC: "refuse", Network: "10.64.0.0/24", MTU: 1420,
			MaxConnections: 4096, MaxConnectionsPerPeer: 1024, UDPIdleTimeout: 60 * time.Second,
		},
	}
}

// Validate checks values and the open-proxy rule.
func (c *Config) Validate() error {
	var errs []error
	for _, l := range []struct{ key, addr string }{{"listen", c.Listen}, {"socks.listen", c.Socks.Listen}} {
		if l.addr == "" && l.key != "listen" {
			continue
		}
		if err := c.checkListener(l.key, l.addr); err != nil {
			errs = append(errs, err)
		} else if err := checkPort(l.key, l.addr); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Admin.Listen != "" {
		if err := checkPort("admin.listen", c.Admin.Listen); err != nil {
			errs = append(errs, err)
		}
	}
	if err := scope.ValidateGlobs("config: capture.only_hosts", c.Capture.OnlyHosts); err != nil {
		errs = append(errs, err)
	}
	if err := scope.ValidateGlobs("config: capture.ignore_hosts", c.Capture.IgnoreHosts); err != nil {
		errs = append(errs, err)
	}
	if (c.Access.Username == "") != (c.Access.Password == "") {
		errs = append(errs, errors.New("config: access.username and access.password must be set together"))
	}
	for _, s := range c.Access.AllowClients {
		if _, err := ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("config: access.allow_clients: %w", err))
		}
	}
	for _, s := range c.Access.DenyDestinations {
		if _, err := ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("config: access.deny_destinations: %w", err))
		}
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		errs = append(errs, fmt.Errorf("config: log.format %q: want console or json", c.Log.Format))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("config: log.level %q: want debug, info, warn or error", c.Log.Level))
	}
	switch c.ATS.MinTLSVersion {
	case "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3":
	default:
		errs = append(errs, fmt.Errorf("config: ats.min_tls_version %q: want TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3", c.ATS.MinTLSVersion))
	}
	if c.MITM.AutoPassthrough && c.MITM.AutoPassthroughTTL <= 0 {
		errs = append(errs, fmt.Errorf("config: mitm.auto_passthrough_ttl must be positive, got %s", c.MITM.AutoPassthroughTTL))
	}
	for _, p := range c.MITM.Hosts {
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("config: mitm.hosts pattern %q: %w", p, err))
		}
	}
	l := c.Limits
	for name, v := range map[string]int64{
		"max_connections": int64(l.MaxConnections), "max_header_bytes": int64(l.MaxHeaderBytes),
		"inspect_buffer": int64(l.InspectBuffer), "header_timeout": int64(l.HeaderTimeout),
		"dial_timeout": int64(l.DialTimeout), "hello_timeout": int64(l.HelloTimeout),
		"idle_timeout": int64(l.IdleTimeout), "half_close_timeout": int64(l.HalfCloseTimeout),
		"shutdown_grace": int64(l.ShutdownGrace), "tls.probe_timeout": int64(c.TLS.ProbeTimeout),
		"handshake_timeout": int64(l.HandshakeTimeout), "max_upstreams_open": int64(l.MaxUpstreamsOpen),
		"max_upstreams_per_client_life": int64(l.MaxUpstreamsPerClient), "max_recorded_requests": int64(l.MaxRecordedRequests),
		"max_url_bytes": int64(l.MaxURLBytes), "max_header_bytes_recorded": int64(l.MaxHeaderBytesRecorded),
		"max_event_bytes": int64(l.MaxEventBytes),
	} {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("config: limits.%s must be positive, got %d", name, v))
		}
	}
	errs = append(errs, c.Events.validate(l.MaxEventBytes)...)
	errs = append(errs, c.OTLP.validate()...)
	errs = append(errs, c.validateUI()...)
	errs = append(errs, c.WireGuard.validate()...)
	return errors.Join(errs...)
}

func (o *OTLP) validate() []error {
	var errs []error
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("config: otlp.endpoint %q: %w", o.Endpoint, err))
		case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "":
			errs = append(errs, fmt.Errorf("config: otlp.endpoint %q: want an http:// or https:// URL such as http://127.0.0.1:4318", o.Endpoint))
		}
	}
	switch o.Protocol {
	case "", "http/protobuf", "http/json", "grpc":
	default:
		errs = append(errs, fmt.Errorf("config: otlp.protocol %q: want http/protobuf, http/json or grpc", o.Protocol))
	}
	for name, value := range o.Headers {
		if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			errs = append(errs, fmt.Errorf("config: otlp.headers %q: not a valid header name, or its value has control characters", name))
		}
	}
	if !(o.SamplingRatio >= 0 && o.SamplingRatio <= 1) { // NaN fails both
		errs = append(errs, fmt.Errorf("config: otlp.sampling_ratio %v: want 0 to 1", o.SamplingRatio))
	}
	if o.QueueSize <= 0 || o.QueueSize > maxOTLPQueue {
		errs = append(errs, fmt.Errorf("config: otlp.queue_size %d: want 1 to %d", o.QueueSize, maxOTLPQueue))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("config: otlp.timeout %v: must not be negative", o.Timeout))
	}
	return errs
}

func (e *Events) validate(maxEvent int) []error {
	var errs []error
	if e.Path == "" {
		errs = append(errs, errors.New("config: events.path is empty (use \"-\" for stdout)"))
	}
	for name, v := range map[string]int64{"max_size": int64(e.MaxSize), "max_backups": int64(e.MaxBackups)} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("config: events.%s must not be negative, got %d", name, v))
		}
	}
	if e.Path == "-" && (e.MaxSize > 0 || e.MaxBackups > 0 || e.Compress) {
		errs = append(errs, errors.New("config: events.path is \"-\" (stdout), which cannot be rotated: unset events.max_size, max_backups and compress"))
	}
	// The largest line must fit in the queue, and in a rotated file with
	// room to spare for what may precede it in one write (a gap record).
	if e.MaxSize > 0 && int64(e.MaxSize)<<20 < 2*int64(maxEvent) {
		errs = append(errs, fmt.Errorf("config: events.max_size %d MiB must hold two lines of limits.max_event_bytes %d", e.MaxSize, maxEvent))
	}
	if e.QueueBytes < maxEvent {
		errs = append(errs, fmt.Errorf("config: events.queue_bytes %d is smaller than limits.max_event_bytes %d", e.QueueBytes, maxEvent))
	}
	if e.CloseTimeout <= 0 {
		errs = append(errs, fmt.Errorf("config: events.close_timeout must be positive, got %s", e.CloseTimeout))
	}
	return errs
}

// checkPort checks the port of a host:port setting: 0 (any free port) to 65535.
func checkPort(key, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("config: %s %q: %w", key, addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("config: %s %q: port %q is not a number from 0 to 65535", key, addr, port)
	}
	return nil
}

func (w *WireGuard) validate() []error {
	var errs []error
	if w.Listen != "" {
		if err := checkPort("wireguard.listen", w.Listen); err != nil {
			errs = append(errs, err)
		}
	}
	if w.QUIC != "refuse" && w.QUIC != "pass" {
		errs = append(errs, fmt.Errorf("config: wireguard.quic %q: want refuse or pass", w.QUIC))
	}
	if p, err := netip.ParsePrefix(w.Network); err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		errs = append(errs, fmt.Errorf("config: wireguard.network %q: want an IPv4 network of at least 4 addresses, e.g. 10.64.0.0/24", w.Network))
	}
	if w.Network6 != "" {
		if p, err := netip.ParsePrefix(w.Network6); err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() > 120 {
			errs = append(errs, fmt.Errorf("config: wireguard.network6 %q: want an IPv6 network, e.g. fd64:6970::/64", w.Network6))
		}
	}
	if w.MTU < 1280 || w.MTU > 65535 {
		errs = append(errs, fmt.Errorf("config: wireguard.mtu %d: want 1280 to 65535", w.MTU))
	}
	for name, v := range map[string]int64{
		"max_connections": int64(w.MaxConnections), "max_connections_per_peer": int64(w.MaxConnectionsPerPeer),
		"udp_idle_timeout": int64(w.UDPIdleTimeout),
	} {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("config: wireguard.%s must be positive, got %d", name, v))
		}
	}
	return errs
}

// AuthEnabled reports whether proxy Basic auth is on.
func (c *Config) AuthEnabled() bool { return c.Access.Username != "" && c.Access.Password != "" }

// MITMFor reports whether tunnels to host are decrypted.
func (c *Config) MITMFor(host string) bool {
	if c.MITM.Enabled {
		return true
	}
	host = strings.ToLower(host)
	for _, p := range c.MITM.Hosts {
		if ok, _ := path.Match(strings.ToLower(p), host); ok {
			return true
		}
	}
	return false
}

// ParsePrefix parses a CIDR or a single IP address, normalised so that it
// matches unmapped addresses: an IPv4-mapped prefix (::ffff:192.0.2.0/120)
// becomes its IPv4 network (192.0.2.0/24), which would otherwise never
// match. Zones and prefixes that mix mapped and other IPv6 addresses are
// refused.
func ParsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone (%%%s); zones are not allowed", s, a.Zone())
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q mixes IPv4-mapped and other IPv6 addresses; write IPv4 and IPv6 networks as separate entries", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// validateUI checks the console and setup page keys. A console beyond
// loopback needs ui.token; a name is checked again on the address bound.
func (c *Config) validateUI() []error {
	var errs []error
	if c.UI.Listen != "" {
		h, _, err := net.SplitHostPort(c.UI.Listen)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: ui.listen %q: %w", c.UI.Listen, err))
		} else if a, err := netip.ParseAddr(h); err == nil && !a.Unmap().IsLoopback() && c.UI.Token == "" {
			errs = append(errs, fmt.Errorf("config: ui.listen %q is not loopback: set ui.token too (the console shows every connection), or listen on 127.0.0.1", c.UI.Listen))
		}
	}
	if c.UI.History <= 0 {
		errs = append(errs, fmt.Errorf("config: ui.history must be positive, got %d", c.UI.History))
	}
	for _, p := range c.Onboard.PACDirect {
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("config: onboard.pac_direct pattern %q: %w", p, err))
		}
	}
	for _, a := range c.Onboard.Addresses {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("config: onboard.addresses %q: %w", a, err))
		}
	}
	return errs
}

// ClientsRestricted reports whether the proxy limits who may use it
// (access.allow_clients or proxy auth): then it may listen beyond
// loopback.
func (c *Config) ClientsRestricted() bool {
	return len(c.Access.AllowClients) > 0 || c.AuthEnabled()
}

// checkListener checks a listener address and the open-proxy rule. A name
// is not trusted to be loopback (localhost may resolve elsewhere); after
// binding, the caller checks the address actually bound (access.CheckBound).
func (c *Config) checkListener(key, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("config: %s %q: %w", key, addr, err)
	}
	if c.ClientsRestricted() {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Unmap().IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s %q is not a loopback address (a name is not trusted: localhost may resolve elsewhere; use 127.0.0.1 or [::1]); "+
		"or say who may use it with --allow-clients 192.168.1.0/24 (access.allow_clients) and/or --proxy-auth USER:PASSWORD (access.username and access.password)", ErrOpenProxy, key, addr)
}

// Load builds the configuration: defaults, then file (if non-empty), then
// environment, then whatever flags v already has bound. Unknown keys in the
// file are an error.
func Load(v *viper.Viper, file string) (Config, error) {
	setDefaults(v, "", reflect.ValueOf(Default()))
	v.SetEnvPrefix("INSPECTPROXY")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if file != "" {
		if err := readFile(v, file); err != nil {
			return Config{}, err
		}
	}
	// The old variable would hide every events.* key (viper sees a value
	// where a section is), so it is refused rather than half-applied.
	if _, ok := os.LookupEnv("INSPECTPROXY_EVENTS"); ok {
		return Config{}, errors.New("config: INSPECTPROXY_EVENTS: events is a section now; set INSPECTPROXY_EVENTS_PATH instead")
	}
	if err := unknownKeys(v, file); err != nil {
		return Config{}, err
	}
	var c Config
	err := v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)))
	if err != nil {
		return Config{}, decodeError(v, file, err)
	}
	if rest, ok := strings.CutPrefix(c.MITM.DataDir, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			c.MITM.DataDir = home + "/" + rest
		}
	}
	return c, c.Validate()
}

// readFile merges the config file into v. The old form `events: FILE`
// becomes events.path: viper cannot hold a key as a value and a section.
func readFile(v *viper.Viper, file string) error {
	f := viper.New()
	f.SetConfigFile(file)
	if err := f.ReadInConfig(); err != nil {
		return fmt.Errorf("config: read %s: %w", file, err)
	}
	m := f.AllSettings()
	if p, ok := m["events"].(string); ok {
		m["events"] = map[string]any{"path": p}
	}
	if err := v.MergeConfigMap(m); err != nil {
		return fmt.Errorf("config: %s: %w", file, err)
	}
	return nil
}

// EnvName is the environment variable of a config key.
func EnvName(key string) string {
	return "INSPECTPROXY_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// unknownKeys names the keys of the file that the Config has not, with
// the keys it has at that level.
func unknownKeys(v *viper.Viper, file string) error {
	known := map[string]bool{}
	var maps []string // keys of map fields (otlp.headers): any key under them is theirs
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			key := prefix + t.Field(i).Tag.Get("mapstructure")
			known[key] = true
			switch f := t.Field(i).Type; {
			case f.Kind() == reflect.Struct && f != reflect.TypeFor[time.Duration]():
				walk(key+".", f)
			case f.Kind() == reflect.Map:
				maps = append(maps, key+".")
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
	var errs []error
	for _, k := range v.AllKeys() {
		if known[k] || slices.ContainsFunc(maps, func(m string) bool { return strings.HasPrefix(k, m) }) {
			continue
		}
		parent, siblings := "", []string{}
		if i := strings.LastIndexByte(k, '.'); i >= 0 {
			parent = k[:i]
		}
		for kk := range known {
			p := ""
			if i := strings.LastIndexByte(kk, '.'); i >= 0 {
				p = kk[:i]
			}
			if p == parent {
				siblings = append(siblings, kk)
			}
		}
		slices.Sort(siblings)
		errs = append(errs, fmt.Errorf("config: %s: unknown key %q; the keys there are %s", orDefaults(file), k, strings.Join(siblings, ", ")))
	}
	return errors.Join(errs...)
}

// decodeError names, for each key the decoder refused, where its value
// came from (environment variable, flag or file) and the value itself.
func decodeError(v *viper.Viper, file string, err error) error {
	var errs []error
	for _, line := range strings.Split(err.Error(), "\n") {
		rest, ok := strings.CutPrefix(line, "'")
		key, msg, found := strings.Cut(rest, "' ")
		if !ok || !found {
			continue
		}
		val := fmt.Sprint(v.Get(key))
		if env, set := os.LookupEnv(EnvName(key)); set {
			errs = append(errs, fmt.Errorf("config: %s=%q (%s): %s", EnvName(key), env, key, msg))
			continue
		}
		errs = append(errs, fmt.Errorf("config: %s: %s %q: %s", orDefaults(file), key, val, msg))
	}
	if len(errs) == 0 {
		return fmt.Errorf("config: %s: %w", orDefaults(file), err)
	}
	return errors.Join(errs...)
}

func orDefaults(file string) string {
	if file == "" {
		return "flags and environment"
	}
	return file
}

// setDefaults registers every field's default with viper, so that
// environment variables are seen for every key.
func setDefaults(v *viper.Viper, prefix string, val reflect.Value) {
	t := val.Type()
	for i := range t.NumField() {
		key := prefix + t.Field(i).Tag.Get("mapstructure")
		if f := val.Field(i); f.Kind() == reflect.Struct {
			setDefaults(v, key+".", f)
		} else {
			v.SetDefault(key, f.Interface())
		}
	}
}
