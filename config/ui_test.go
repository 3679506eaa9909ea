package config

import (
	"strings"
	"testing"
)

func TestValidateUIAndOnboard(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"console off", func(c *Config) { c.UI.Listen = "" }, ""},
		{"beyond loopback with a token", func(c *Config) { c.UI.Listen, c.UI.Token = "0.0.0.0:8081", "t" }, ""},
		{"beyond loopback without a token", func(c *Config) { c.UI.Listen = "0.0.0.0:8081" }, `ui.listen "0.0.0.0:8081" is not loopback: set ui.token`},
		{"bad address", func(c *Config) { c.UI.Listen = "8081" }, `ui.listen "8081"`},
		{"history", func(c *Config) { c.UI.History = 0 }, "ui.history must be positive, got 0"},
		{"pac glob", func(c *Config) { c.Onboard.PACDirect = []string{"["} }, `onboard.pac_direct pattern "["`},
		{"address", func(c *Config) { c.Onboard.Addresses = []string{"192.0.2.1"} }, `onboard.addresses "192.0.2.1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
}
