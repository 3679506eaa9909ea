package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

func TestExampleFileIsTheDefaults(t *testing.T) {
	got, err := Load(viper.New(), "../configs/inspectproxy.yaml")
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	want := Default()
	if got.Listen != want.Listen || got.Events != want.Events || got.Limits != want.Limits || got.TLS.ProbeTTL != want.TLS.ProbeTTL || got.MITM.DataDir != want.MITM.DataDir || got.Socks != want.Socks || got.Access.AllowLocalDestinations != want.Access.AllowLocalDestinations ||
		got.OTLP.Endpoint != want.OTLP.Endpoint || got.OTLP.SamplingRatio != want.OTLP.SamplingRatio || got.OTLP.QueueSize != want.OTLP.QueueSize || got.OTLP.Timeout != want.OTLP.Timeout || len(got.OTLP.Headers) != 0 ||
		got.WireGuard != want.WireGuard {
		t.Errorf("example file differs from defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:9000\nlimits:\n  idle_timeout: 1m\n  dial_timeout: 3s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("INSPECTPROXY_LIMITS_IDLE_TIMEOUT", "2m")
	c, err := Load(withFlag(t, "listen", "listen", "127.0.0.1:9001"), file)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9001" {
		t.Errorf("flag should win: listen = %s", c.Listen)
	}
	if c.Limits.IdleTimeout != 2*time.Minute {
		t.Errorf("env should beat file: idle_timeout = %s", c.Limits.IdleTimeout)
	}
	if c.Limits.DialTimeout != 3*time.Second {
		t.Errorf("file should beat default: dial_timeout = %s", c.Limits.DialTimeout)
	}
}

// withFlag is a viper with one string flag bound to key, set to value.
func withFlag(t *testing.T, flag, key, value string) *viper.Viper {
	t.Helper()
	v := viper.New()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String(flag, "", "")
	_ = v.BindPFlag(key, fs.Lookup(flag))
	if err := fs.Parse([]string{"--" + flag, value}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantErr string
		is      error
	}{
		{"defaults", func(*Config) {}, "", nil},
		{"open proxy", func(c *Config) { c.Listen = "0.0.0.0:8080" }, "open proxy", ErrOpenProxy},
		{"lan with allow list", func(c *Config) { c.Listen = "0.0.0.0:8080"; c.Access.AllowClients = []string{"192.168.1.0/24"} }, "", nil},
		{"lan with auth", func(c *Config) { c.Listen = ":8080"; c.Access.Username, c.Access.Password = "u", "p" }, "", nil},
		{"half auth", func(c *Config) { c.Access.Username = "u" }, "set together", nil},
		{"bad cidr", func(c *Config) { c.Access.AllowClients = []string{"10.0.0.0/99"} }, "neither a CIDR", nil},
		{"bad tls version", func(c *Config) { c.ATS.MinTLSVersion = "1.2" }, "min_tls_version", nil},
		{"zero timeout", func(c *Config) { c.Limits.IdleTimeout = 0 }, "idle_timeout must be positive", nil},
		{"bad log format", func(c *Config) { c.Log.Format = "xml" }, "log.format", nil},
		{"bad mitm pattern", func(c *Config) { c.MITM.Hosts = []string{"[a-"} }, "mitm.hosts", nil},
		{"ipv6 loopback", func(c *Config) { c.Listen = "[::1]:8080" }, "", nil},
		{"mapped loopback", func(c *Config) { c.Listen = "[::ffff:127.0.0.1]:8080" }, "", nil},
		{"name not trusted", func(c *Config) { c.Listen = "localhost:8080" }, `listen "localhost:8080" is not a loopback address`, ErrOpenProxy},
		{"name with allow list", func(c *Config) { c.Listen = "localhost:8080"; c.Access.AllowClients = []string{"10.0.0.0/8"} }, "", nil},
		{"socks loopback", func(c *Config) { c.Socks.Listen = "127.0.0.1:1080" }, "", nil},
		{"socks open", func(c *Config) { c.Socks.Listen = "0.0.0.0:1080" }, `socks.listen "0.0.0.0:1080" is not a loopback`, ErrOpenProxy},
		{"socks with auth", func(c *Config) { c.Socks.Listen = ":1080"; c.Access.Username, c.Access.Password = "u", "p" }, "", nil},
		{"socks bad", func(c *Config) { c.Socks.Listen = "1080" }, `socks.listen "1080"`, nil},
		{"bad deny entry", func(c *Config) { c.Access.DenyDestinations = []string{"::ffff:0.0.0.0/64"} }, "access.deny_destinations", nil},
		{"wireguard on", func(c *Config) { c.WireGuard.Listen = ":51820"; c.WireGuard.Network6 = "fd64:6970::/64" }, "", nil},
		{"wireguard listen", func(c *Config) { c.WireGuard.Listen = "51820" }, `wireguard.listen "51820"`, nil},
		{"wireguard port", func(c *Config) { c.WireGuard.Listen = ":wg" }, `wireguard.listen ":wg": port "wg"`, nil},
		{"wireguard quic", func(c *Config) { c.WireGuard.QUIC = "drop" }, `wireguard.quic "drop": want refuse or pass`, nil},
		{"wireguard network v6", func(c *Config) { c.WireGuard.Network = "fd00::/64" }, `wireguard.network "fd00::/64"`, nil},
		{"wireguard network tiny", func(c *Config) { c.WireGuard.Network = "10.0.0.0/31" }, `wireguard.network "10.0.0.0/31"`, nil},
		{"wireguard network6", func(c *Config) { c.WireGuard.Network6 = "10.0.0.0/8" }, `wireguard.network6 "10.0.0.0/8"`, nil},
		{"wireguard mtu", func(c *Config) { c.WireGuard.MTU = 576 }, "wireguard.mtu 576: want 1280 to 65535", nil},
		{"wireguard cap", func(c *Config) { c.WireGuard.MaxConnectionsPerPeer = 0 }, "wireguard.max_connections_per_peer must be positive, got 0", nil},
		{"no events path", func(c *Config) { c.Events.Path = "" }, "events.path is empty", nil},
		{"negative backups", func(c *Config) { c.Events.MaxBackups = -1 }, "events.max_backups must not be negative, got -1", nil},
		{"rotating stdout", func(c *Config) { c.Events.Path = "-"; c.Events.MaxSize = 10 }, "cannot be rotated", nil},
		{"file smaller than two events", func(c *Config) { c.Events.MaxSize = 1 }, "events.max_size 1 MiB must hold two lines of limits.max_event_bytes 1048576", nil},
		{"queue smaller than an event", func(c *Config) { c.Events.QueueBytes = 1000 }, "events.queue_bytes 1000 is smaller than limits.max_event_bytes", nil},
		{"no event size", func(c *Config) { c.Limits.MaxEventBytes = 0 }, "limits.max_event_bytes must be positive", nil},
		{"otlp on", func(c *Config) { c.OTLP.Endpoint = "https://collector.example:4318/base"; c.OTLP.Protocol = "grpc" }, "", nil},
		{"otlp endpoint without scheme", func(c *Config) { c.OTLP.Endpoint = "127.0.0.1:4318" }, `otlp.endpoint "127.0.0.1:4318"`, nil},
		{"otlp bad protocol", func(c *Config) { c.OTLP.Protocol = "thrift" }, `otlp.protocol "thrift"`, nil},
		{"otlp bad header", func(c *Config) { c.OTLP.Headers = map[string]string{"api key": "x"} }, `otlp.headers "api key"`, nil},
		{"otlp header value with newline", func(c *Config) { c.OTLP.Headers = map[string]string{"k": "a\nb"} }, `otlp.headers "k"`, nil},
		{"otlp ratio", func(c *Config) { c.OTLP.SamplingRatio = 1.5 }, "otlp.sampling_ratio 1.5", nil},
		{"otlp queue", func(c *Config) { c.OTLP.QueueSize = 0 }, "otlp.queue_size 0", nil},
		{"otlp timeout", func(c *Config) { c.OTLP.Timeout = -time.Second }, "otlp.timeout -1s", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
		})
	}
}

// TestEventsForms: the events section, and the old form `events: FILE`
// (file only: the old variable is refused, since viper would let it hide
// the whole section).
func TestEventsForms(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		env        map[string]string
		want       Events
		wantErr    string
	}{
		{name: "old form", yaml: "events: old.jsonl\n", want: Events{Path: "old.jsonl", QueueBytes: 16 << 20, CloseTimeout: 5 * time.Second}},
		{name: "section", yaml: "events:\n  path: e.jsonl\n  max_size: 100\n  max_backups: 3\n  compress: true\n",
			want: Events{Path: "e.jsonl", MaxSize: 100, MaxBackups: 3, Compress: true, QueueBytes: 16 << 20, CloseTimeout: 5 * time.Second}},
		{name: "section and env", yaml: "events:\n  path: e.jsonl\n", env: map[string]string{"INSPECTPROXY_EVENTS_MAX_SIZE": "10"},
			want: Events{Path: "e.jsonl", MaxSize: 10, QueueBytes: 16 << 20, CloseTimeout: 5 * time.Second}},
		{name: "old env", yaml: "listen: 127.0.0.1:1\n", env: map[string]string{"INSPECTPROXY_EVENTS": "x.jsonl"}, wantErr: "INSPECTPROXY_EVENTS_PATH"},
		{name: "unknown key in section", yaml: "events:\n  max_sise: 1\n", wantErr: "max_sise"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := Load(viper.New(), file)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Events != tc.want {
				t.Errorf("events = %+v, want %+v", c.Events, tc.want)
			}
		})
	}
}

// TestOTLPFromFile reads the otlp section as a user writes it: a header
// map, and keys the file leaves out keeping their defaults.
func TestOTLPFromFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "otlp:\n  endpoint: http://127.0.0.1:4318\n  headers:\n    x-scope-orgid: lab\n    authorization: Bearer abc\n  timeout: 3s\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(withFlag(t, "otlp", "otlp.endpoint", "http://10.1.2.3:4318"), file)
	if err != nil {
		t.Fatal(err)
	}
	want := OTLP{
		Endpoint:      "http://10.1.2.3:4318",
		Headers:       map[string]string{"x-scope-orgid": "lab", "authorization": "Bearer abc"},
		SamplingRatio: 1,
		QueueSize:     2048,
		Timeout:       3 * time.Second,
	}
	if !reflect.DeepEqual(c.OTLP, want) {
		t.Errorf("otlp = %+v, want %+v", c.OTLP, want)
	}
	// Any key under headers is a header; a misspelt otlp key is an error.
	if err := os.WriteFile(file, []byte("otlp:\n  endpont: http://127.0.0.1:4318\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(viper.New(), file); err == nil || !strings.Contains(err.Error(), `unknown key "otlp.endpont"`) {
		t.Errorf("error = %v, want it to name otlp.endpont", err)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:1\nlimits:\n  idle_timout: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(viper.New(), file)
	if err == nil || !strings.Contains(err.Error(), "idle_timout") {
		t.Fatalf("error = %v, want it to name the unknown key", err)
	}
}

func TestMITMFor(t *testing.T) {
	c := Default()
	c.MITM.Hosts = []string{"api.example.com", "*.example.net"}
	for host, want := range map[string]bool{"api.example.com": true, "API.example.com": true, "a.example.net": true, "example.net": false, "other.com": false} {
		if got := c.MITMFor(host); got != want {
			t.Errorf("MITMFor(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestParsePrefix: the expectations are RFC 4291 section 2.5.5.2 (an
// IPv4-mapped address is ::ffff:a.b.c.d, so /120 of it is /24 of IPv4).
func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: "192.0.2.7", want: "192.0.2.7/32"},
		{in: "::1", want: "::1/128"},
		{in: "fe80::/10", want: "fe80::/10"},
		{in: "::ffff:192.0.2.0/120", want: "192.0.2.0/24"},
		{in: "::ffff:127.0.0.1", want: "127.0.0.1/32"},
		{in: "::ffff:0.0.0.0/96", want: "0.0.0.0/0"},
		{in: "::ffff:127.0.0.1/128", want: "127.0.0.1/32"},
		{in: "::ffff:0.0.0.0/95", err: "mixes IPv4-mapped"},
		{in: "fe80::1%eth0", err: "zone"},
		{in: "fe80::1%eth0/64", err: "zone"},
		{in: "10.0.0.0/33", err: "neither"},
		{in: "", err: "neither"},
		{in: "localhost", err: "neither"},
	} {
		p, err := ParsePrefix(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.in)) {
				t.Errorf("ParsePrefix(%q) = %v, %v; want an error naming the value and %q", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

// FuzzParsePrefix checks that address-list entries never panic, that what
// is accepted is normalised (masked, never IPv4-mapped, no zone) and
// stable, and that Validate agrees with ParsePrefix on both lists.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{
		"0.0.0.0", "0.0.0.0/0", "::", "::/0", "::ffff:0.0.0.0", "::ffff:127.0.0.1", "::ffff:192.0.2.0/120",
		"127.0.0.2", "127.0.0.0/8", "::1", "::1/128", "169.254.169.254", "169.254.0.0/16", "fe80::/10",
		"fe80::1%eth0", "10.0.0.1/8", "1.2.3.4/33", "::ffff:1.2.3.4/95", "0127.0.0.1", "127.1", "[::1]", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		c := Default()
		c.Access.AllowClients = []string{s}
		c.Access.DenyDestinations = []string{s}
		if verr := c.Validate(); (verr != nil) != (err != nil) {
			t.Fatalf("Validate = %v but ParsePrefix = %v", verr, err)
		}
		if err != nil {
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParsePrefix(%q) = %v, not normalised", s, p)
		}
		if again, err := ParsePrefix(p.String()); err != nil || again != p {
			t.Fatalf("ParsePrefix(%q) = %v, but its string parses as %v, %v", s, p, again, err)
		}
	})
}
