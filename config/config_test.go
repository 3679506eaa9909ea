package config

import (
	"errors"
	"os"
	"path/filepath"
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
	if got.Listen != want.Listen || got.Events != want.Events || got.Limits != want.Limits || got.TLS.ProbeTTL != want.TLS.ProbeTTL || got.MITM.DataDir != want.MITM.DataDir {
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
	v := viper.New()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("listen", "", "")
	_ = v.BindPFlag("listen", fs.Lookup("listen"))
	if err := fs.Parse([]string{"--listen", "127.0.0.1:9001"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(v, file)
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
		{"no events path", func(c *Config) { c.Events.Path = "" }, "events.path is empty", nil},
		{"negative backups", func(c *Config) { c.Events.MaxBackups = -1 }, "events.max_backups must not be negative, got -1", nil},
		{"rotating stdout", func(c *Config) { c.Events.Path = "-"; c.Events.MaxSize = 10 }, "cannot be rotated", nil},
		{"file smaller than two events", func(c *Config) { c.Events.MaxSize = 1 }, "events.max_size 1 MiB must hold two lines of limits.max_event_bytes 1048576", nil},
		{"queue smaller than an event", func(c *Config) { c.Events.QueueBytes = 1000 }, "events.queue_bytes 1000 is smaller than limits.max_event_bytes", nil},
		{"no event size", func(c *Config) { c.Limits.MaxEventBytes = 0 }, "limits.max_event_bytes must be positive", nil},
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
