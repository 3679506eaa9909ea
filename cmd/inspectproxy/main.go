// Command inspectproxy is a forwarding HTTP proxy that shows, connection
// by connection, how HTTPS rides on TCP. See the README.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/inspectproxy/inspectproxy/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
