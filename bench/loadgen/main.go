// Command loadgen drives the inspectproxy benchmark and soak test (see
// bench/README.md). It only talks to loopback addresses given on its
// command line, and every mode stops by itself.
//
//	loadgen rate      new HTTPS connections per second through a proxy (or direct)
//	loadgen download  one tunnel, one big GET, MiB/s, content checked by CRC
//	loadgen idle      hold N tunnels with completed TLS handshakes (and one GET), measure the proxy's RSS and fds
//	loadgen relay     a bare CONNECT relay (internal/splice or io.Copy) to benchmark the byte relay alone
//	loadgen copybench internal/splice against io.Copy in one process: MiB/s and the copy thread's CPU per GiB
//	loadgen soak      thousands of connections with aborts and resets; leak and event checks
//	loadgen report    the table of results, ratios and targets
//	loadgen mkfile    a deterministic pseudo-random file and its CRC
//	loadgen freeports N free loopback TCP ports
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "rate":
		err = cmdRate(args)
	case "download":
		err = cmdDownload(args)
	case "idle":
		err = cmdIdle(args)
	case "soak":
		err = cmdSoak(args)
	case "relay":
		err = cmdRelay(args)
	case "copybench":
		err = cmdCopybench(args)
	case "report":
		err = cmdReport(args)
	case "mkfile":
		err = cmdMkfile(args)
	case "freeports":
		err = cmdFreeports(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: loadgen rate|download|idle|soak|relay|copybench|report|mkfile|freeports [flags] (-h for flags)")
	os.Exit(2)
}

// common are the flags every client mode shares.
type common struct {
	label   string
	proxy   string
	target  string
	name    string
	cas     string
	out     string
	timeout time.Duration
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.label, "label", "", "configuration name written with the result")
	fs.StringVar(&c.proxy, "proxy", "", "proxy host:port (empty: connect to -target directly)")
	fs.StringVar(&c.target, "target", "", "TLS server host:port (loopback)")
	fs.StringVar(&c.name, "servername", "", "TLS server name to verify (default: -target's host)")
	fs.StringVar(&c.cas, "ca", "", "comma-separated PEM files the client trusts")
	fs.StringVar(&c.out, "out", "", "append the JSON result line to this file too")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Second, "per-step timeout")
}

// parse parses the command's flags, checks the common ones and builds the
// client TLS config they describe.
func (c *common) parse(fs *flag.FlagSet, args []string) (*tls.Config, error) {
	_ = fs.Parse(args)
	if err := c.check(); err != nil {
		return nil, err
	}
	return c.tlsConfig()
}

func (c *common) check() error {
	for _, a := range []string{c.proxy, c.target} {
		if a != "" && !isLoopback(a) {
			return fmt.Errorf("%s is not a loopback address (this tool only talks to 127.0.0.0/8)", a)
		}
	}
	if c.target == "" {
		return errors.New("-target is required")
	}
	if c.name == "" {
		c.name, _, _ = net.SplitHostPort(c.target)
	}
	return nil
}

// isLoopback accepts only literal 127.0.0.0/8 addresses.
func isLoopback(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.To4() != nil && ip.To4()[0] == 127
}

func (c *common) tlsConfig() (*tls.Config, error) {
	pool := x509.NewCertPool()
	for _, f := range strings.Split(c.cas, ",") {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", f)
		}
	}
	return &tls.Config{
		ServerName: c.name,
		RootCAs:    pool,
		// No session cache: every connection is a full handshake.
		ClientSessionCache: nil,
		// X25519 only keeps the client's own CPU share small and equal for
		// every configuration (no post-quantum key share to compute).
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
		NextProtos:       []string{"http/1.1"},
	}, nil
}

// bufConn returns bytes a bufio.Reader read past the CONNECT response
// before reading the connection again.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// errStatus is a proxy's non-200 answer to CONNECT.
type errStatus struct{ code int }

func (e errStatus) Error() string { return fmt.Sprintf("CONNECT answered %d", e.code) }

// dialTunnel connects to target, through proxy with CONNECT when proxy is
// set. It returns the connection to use and the raw TCP connection.
func dialTunnel(d *net.Dialer, proxy, target string, timeout time.Duration) (net.Conn, *net.TCPConn, error) {
	if proxy == "" {
		c, err := d.Dial("tcp", target)
		if err != nil {
			return nil, nil, err
		}
		return c, c.(*net.TCPConn), nil
	}
	c, err := d.Dial("tcp", proxy)
	if err != nil {
		return nil, nil, err
	}
	tc := c.(*net.TCPConn)
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(c, 512)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("CONNECT response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, nil, errStatus{resp.StatusCode}
	}
	_ = c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return &bufConn{Conn: c, r: br}, tc, nil
	}
	return c, tc, nil
}

// Result is one JSON line of results; fields depend on Test.
type Result struct {
	Label string `json:"label"`
	Test  string `json:"test"`
	Time  string `json:"time"`

	// rate
	Concurrency int     `json:"concurrency,omitempty"`
	Seconds     float64 `json:"seconds,omitempty"`
	Ops         int     `json:"ops,omitempty"`
	OpsPerSec   float64 `json:"ops_per_sec,omitempty"`
	P50MS       float64 `json:"p50_ms,omitempty"`
	P90MS       float64 `json:"p90_ms,omitempty"`
	P99MS       float64 `json:"p99_ms,omitempty"`
	Errors      int     `json:"errors,omitempty"`
	ErrorSample string  `json:"error_sample,omitempty"`
	// proxy CPU (user+system) during the measured part
	ProxyCPUSeconds   float64 `json:"proxy_cpu_s,omitempty"`
	ProxyCPUMSPerOp   float64 `json:"proxy_cpu_ms_per_conn,omitempty"`
	ProxyCPUSecPerGiB float64 `json:"proxy_cpu_s_per_gib,omitempty"`

	// download
	Bytes     int64     `json:"bytes,omitempty"`
	MiBPerSec float64   `json:"mib_per_sec,omitempty"`
	Runs      []float64 `json:"runs_mib_per_sec,omitempty"`

	// idle
	Tunnels      int     `json:"tunnels,omitempty"`
	Opened       int     `json:"opened,omitempty"`
	OpenSeconds  float64 `json:"open_seconds,omitempty"`
	BaseRSSKiB   int64   `json:"base_rss_kib,omitempty"`
	HoldRSSKiB   int64   `json:"hold_rss_kib,omitempty"`
	PeakRSSKiB   int64   `json:"peak_rss_kib,omitempty"`
	PerTunnelKiB float64 `json:"per_tunnel_kib,omitempty"`
	ProxyFDs     int     `json:"proxy_fds,omitempty"`
	ProxyPipeFDs int     `json:"proxy_pipe_fds,omitempty"`
	IdleGet      string  `json:"idle_get,omitempty"` // the path each tunnel fetched once before idling
	ProxyThreads int     `json:"proxy_threads,omitempty"`

	// filled by report when it folds repeated runs
	Rounds  int     `json:"rounds,omitempty"`
	RangeLo float64 `json:"range_lo,omitempty"`
	RangeHi float64 `json:"range_hi,omitempty"`
}

func emit(r Result, out string) error {
	r.Time = time.Now().UTC().Format(time.RFC3339)
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	if out == "" {
		return nil
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	return errors.Join(err, f.Close())
}

func cmdFreeports(args []string) error {
	fs := flag.NewFlagSet("freeports", flag.ExitOnError)
	n := fs.Int("n", 1, "how many")
	_ = fs.Parse(args)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []string
	for range *n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		ports = append(ports, fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
	}
	fmt.Println(strings.Join(ports, " "))
	return nil
}
