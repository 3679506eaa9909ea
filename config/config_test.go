package config

import (
	"errors"
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
	if got.Listen != want.Listen || got.Events != want.Events || got.Limits != want.Limits || got.TLS.ProbeTTL != want.TLS.ProbeTTL || got.MITM.DataDir != want.MITM.DataDir ||
		got.OTLP.Endpoint != want.OTLP.Endpoint || got.OTLP.SamplingRatio != want.OTLP.SamplingRatio || got.OTLP.QueueSize != want.OTLP.QueueSize || got.OTLP.Timeout != want.OTLP.Timeout || len(got.OTLP.Headers) != 0 {
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
