// Package tlsinfo reads TLS handshakes off the wire without taking part in
// them. A Tracker is fed the raw bytes of both directions of a proxied TCP
// connection; it reassembles records and handshake messages whatever the
// chunking, parses the plaintext part of the handshake (ClientHello,
// ServerHello or HelloRetryRequest, and in TLS 1.2 and earlier the server's
// Certificate, ServerKeyExchange and CertificateStatus), fingerprints the
// client (JA3, JA4) and server (JA3S), and times the handshake from record
// boundaries alone. Nothing is decrypted: after the key change only record
// types and lengths are looked at.
//
// Around the Tracker: ParseClientHello and ParseServerHello for single
// messages; name tables for versions, cipher suites, groups, signature
// schemes and extensions; SummarizeChain and Verify for certificate chains;
// and a Prober that fetches the chain TLS 1.3 encrypts by doing its own
// handshake with the server.
//
// Parsers are bounds-checked and return errors wrapping ErrMalformed,
// ErrUnexpectedMessage, ErrTruncated or ErrBufferLimit with the offending
// offset or size; they never panic and never keep references to their input.
package tlsinfo
