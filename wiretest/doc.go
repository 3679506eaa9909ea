// Package wiretest holds the proxy's events against packet captures: its
// tests run the proxy through its public API (proxy.New, Serve) between
// real peers on real sockets (scripted TCP peers, openssl, Chromium),
// capture both legs of every connection with internal/wirecap, and assert
// each TCP and TLS field of the event against what the capture shows (the
// field definitions are in README.md, "Event schema" and "How exact is the
// record"). The expectation always comes from the capture, never from the
// proxy's own logic.
package wiretest
