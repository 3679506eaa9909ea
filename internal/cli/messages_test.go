package cli

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorMessagesNameTheCulprit runs each refusal of issue 11 point 7 as
// a user would, and checks the message names the variable, key, value or
// flag at fault (and that a refused report leaves no output file).
func TestErrorMessagesNameTheCulprit(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	if err := os.WriteFile(typo, []byte("listn: 127.0.0.1:8080\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	caDir := filepath.Join(dir, "ca")
	if code := Main(context.Background(), []string{"ca", "init", "--data-dir", caDir}, io.Discard, io.Discard); code != 0 {
		t.Fatal("ca init failed")
	}
	pdf := filepath.Join(dir, "x.pdf")
	events := filepath.Join(dir, "e.jsonl")
	for _, tc := range []struct {
		name string
		env  [2]string
		args []string
		want []string
	}{
		{"bad duration in the environment", [2]string{"INSPECTPROXY_LIMITS_IDLE_TIMEOUT", "banana"},
			[]string{"--events", events}, []string{"INSPECTPROXY_LIMITS_IDLE_TIMEOUT", "banana"}},
		{"top-level typo in the file", [2]string{}, []string{"--config", typo, "--events", events}, []string{`unknown key "listn"`, "listen", typo}},
		{"open proxy", [2]string{}, []string{"--listen", "0.0.0.0:0", "--events", events}, []string{"--allow-clients", "--proxy-auth"}},
		{"port out of range", [2]string{}, []string{"--listen", "127.0.0.1:99999", "--events", events}, []string{"listen", "99999"}},
		{"ca export before init", [2]string{}, []string{"ca", "export", "--data-dir", filepath.Join(dir, "none")}, []string{"inspectproxy ca init", "first"}},
		{"second ca init", [2]string{}, []string{"ca", "init", "--data-dir", caDir}, []string{"--force"}},
		{"remote admin", [2]string{}, []string{"--listen", "127.0.0.1:0", "--events", events, "--admin", "0.0.0.0:0"}, []string{"--admin", "0.0.0.0:0", "SSH tunnel"}},
		{"unknown report format", [2]string{}, []string{"report", "--format", "pdf", "-o", pdf, "../../report/testdata/events.jsonl"}, []string{"--format", `"pdf"`, "text, json, csv, html, har"}},
		{"bad --client", [2]string{}, []string{"report", "--client", "phone", "../../report/testdata/events.jsonl"}, []string{"--client", `"phone"`}},
		{"bad --since", [2]string{}, []string{"ats", "report", "--since", "yesterday", "../../report/testdata/events.jsonl"}, []string{"--since", `"yesterday"`}},
		{"unknown noise list", [2]string{}, []string{"report", "--exclude-os-noise", "windows", "../../report/testdata/events.jsonl"}, []string{"--exclude-os-noise", `"windows"`, "android, chrome, ios"}},
		{"bad --ignore-hosts glob", [2]string{}, []string{"--events", events, "--ignore-hosts", "[a"}, []string{"capture.ignore_hosts", `"[a"`}},
		{"bad --proxy-auth", [2]string{}, []string{"--events", events, "--proxy-auth", "alice"}, []string{"--proxy-auth", "USER:PASSWORD"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env[0] != "" {
				t.Setenv(tc.env[0], tc.env[1])
			}
			var stderr bytes.Buffer
			if code := Main(context.Background(), tc.args, io.Discard, &stderr); code == 0 {
				t.Fatalf("exit 0, want a refusal")
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("message %q does not name %q", stderr.String(), w)
				}
			}
		})
	}
	if _, err := os.Stat(pdf); !os.IsNotExist(err) {
		t.Errorf("a refused report left %s behind (%v)", pdf, err)
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := Main(context.Background(), []string{"--version"}, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "inspectproxy version "+baseVersion) {
		t.Errorf("--version: exit %d, %q", code, out.String())
	}
}

// TestReportReadsStdinAndGzip: "-" is standard input, and a gzip file is
// read like a plain one.
func TestReportReadsStdin(t *testing.T) {
	in, err := os.ReadFile("../../report/testdata/events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := MainIO(context.Background(), []string{"report", "-", "../../report/testdata/events.jsonl"}, bytes.NewReader(in), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "Latency report: 22 client connections") {
		t.Errorf("stdin and a file: %.120q", out.String())
	}
}
