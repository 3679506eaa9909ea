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
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"golang.org/x/net/http/httpguts"
)

// ErrOpenProxy is returned by Validate for a non-loopback listener with no
// client allow-list and no proxy auth.
var ErrOpenProxy = errors.New("config: refusing to run as an open proxy")

// Config is the whole configuration.
type Config struct {
	// Listen is the proxy's address. Default 127.0.0.1:8080.
	Listen string `mapstructure:"listen"`
	// Events is the JSON-lines file events are appended to; "-" is stdout.
	// Default inspect-events.jsonl.
	Events string `mapstructure:"events"`
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
	// OTLP exports each client connection as an OpenTelemetry trace.
	OTLP OTLP `mapstructure:"otlp"`
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
	// empty allows everyone who can reach the listener. Default empty.
	AllowClients []string `mapstructure:"allow_clients"`
	// Username and Password enable proxy Basic auth when both are set.
	// Default empty (no auth).
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	// DenyDestinations lists networks (CIDR or IP) the proxy will not
	// connect to, checked after DNS. Default empty.
	DenyDestinations []string `mapstructure:"deny_destinations"`
}

// Limits bound what one client can hold.
type Limits struct {
	// MaxConnections caps concurrent client connections; more wait in the
	// kernel's accept queue. Default 4096.
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
}

// Admin configures the metrics listener.
type Admin struct {
	// Listen serves /metrics and /healthz there; empty is off. Default empty.
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

// Default returns the defaults.
func Default() Config {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return Config{
		Listen: "127.0.0.1:8080",
		Events: "inspect-events.jsonl",
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
		},
		TLS:  TLS{Probe: true, ProbeTimeout: 5 * time.Second, ProbeTTL: 10 * time.Minute},
		ATS:  ATS{MinTLSVersion: "TLSv1.2", RequireForwardSecrecy: true},
		MITM: MITM{DataDir: home + "/.inspectproxy"},
		OTLP: OTLP{SamplingRatio: 1, QueueSize: 2048},
	}
}

// Validate checks values and the open-proxy rule.
func (c *Config) Validate() error {
	var errs []error
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("config: listen %q: %w", c.Listen, err))
	} else if !isLoopback(host) && len(c.Access.AllowClients) == 0 && !c.AuthEnabled() {
		errs = append(errs, fmt.Errorf("%w: listen %q is not loopback; set access.allow_clients (e.g. 192.168.1.0/24) and/or access.username and access.password", ErrOpenProxy, c.Listen))
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
	for _, p := range c.MITM.Hosts {
		if _, err := path.Match(p, ""); err != nil {
			errs = append(errs, fmt.Errorf("config: mitm.hosts pattern %q: %w", p, err))
		}
	}
	errs = append(errs, c.OTLP.validate()...)
	l := c.Limits
	for name, v := range map[string]int64{
		"max_connections": int64(l.MaxConnections), "max_header_bytes": int64(l.MaxHeaderBytes),
		"inspect_buffer": int64(l.InspectBuffer), "header_timeout": int64(l.HeaderTimeout),
		"dial_timeout": int64(l.DialTimeout), "hello_timeout": int64(l.HelloTimeout),
		"idle_timeout": int64(l.IdleTimeout), "half_close_timeout": int64(l.HalfCloseTimeout),
		"shutdown_grace": int64(l.ShutdownGrace), "tls.probe_timeout": int64(c.TLS.ProbeTimeout),
	} {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("config: limits.%s must be positive, got %d", name, v))
		}
	}
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

// ParsePrefix parses a CIDR or a single IP address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
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
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("config: read %s: %w", file, err)
		}
	}
	var c Config
	err := v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)))
	if err != nil {
		return Config{}, fmt.Errorf("config: %s: %w", orDefaults(file), err)
	}
	if rest, ok := strings.CutPrefix(c.MITM.DataDir, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			c.MITM.DataDir = home + "/" + rest
		}
	}
	return c, c.Validate()
}

func orDefaults(file string) string {
	if file == "" {
		return "defaults"
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
