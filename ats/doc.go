// Package ats checks connections against Apple's App Transport Security
// (ATS), the way an iOS or macOS app's URLSession would, from the facts a
// proxy sees: the request scheme, the negotiated TLS version and cipher
// suite, and the server's certificate chain.
//
// # Rules
//
// Each violation names one rule. The ids are a stable contract.
//
//	| rule                    | broken when                                                       | lifted by                            |
//	|-------------------------|-------------------------------------------------------------------|--------------------------------------|
//	| ats.cleartext_http      | a plain-HTTP load: an http:// request, or a non-TLS tunnel to :80 | NSExceptionAllowsInsecureHTTPLoads   |
//	| ats.min_tls_version     | the negotiated version is below the minimum (default TLS 1.2)     | NSExceptionMinimumTLSVersion         |
//	| ats.forward_secrecy     | the suite is TLS_RSA_WITH_AES_* (no ECDHE)                        | NSExceptionRequiresForwardSecrecy=NO |
//	| ats.cipher              | the suite is in no ATS list: 3DES, RC4, NULL, export, DHE, CBC    | NSAllowsArbitraryLoads only          |
//	|                         | without AES, CCM, unknown                                         |                                      |
//	| ats.cert_key_size       | the leaf key is RSA < 2048 or ECC < 256 bits                      | NSExceptionRequiresForwardSecrecy=NO |
//	| ats.cert_signature_hash | a certificate other than the root is signed with SHA-1 or MD5     | NSAllowsArbitraryLoads only          |
//	| ats.cert_trust          | the chain does not verify (expired, not_yet_valid, self_signed,   | nothing                              |
//	|                         | unknown_authority, hostname_mismatch, ...), or breaks the iOS 13  |                                      |
//	|                         | trust requirements, or NSRequiresCertificateTransparency's SCTs   |                                      |
//
// ATS allows, with forward secrecy: the TLS 1.3 suites TLS_AES_128_GCM_SHA256,
// TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256, and
// TLS_ECDHE_{ECDSA,RSA}_WITH_ AES_256_GCM_SHA384, AES_128_GCM_SHA256,
// CHACHA20_POLY1305_SHA256, AES_256_CBC_SHA and AES_128_CBC_SHA. Apple's
// documentation still lists the ECDHE AES_256_CBC_SHA384 and
// AES_128_CBC_SHA256 suites that its code dropped in 2022: they pass, but
// the probe does not offer them. Without forward secrecy it adds
// TLS_RSA_WITH_ AES_256_GCM_SHA384, AES_128_GCM_SHA256, AES_256_CBC_SHA and
// AES_128_CBC_SHA (and the documented CBC_SHA256 variants).
//
// A rule whose facts were not seen is listed under unknown, never passed:
// a TLS 1.3 chain is encrypted, so key size, signature hash and trust stay
// unknown unless the proxy probed the chain; an aborted handshake leaves
// the version and suite unknown; a tunnel without TLS to a port other than
// 80 might or might not carry HTTP. Compliant is then "unknown".
//
// cert_trust also applies what Apple's trust evaluation requires of every
// TLS server chain since iOS 13 and macOS 10.15, with or without ATS
// (support.apple.com/103769): RSA keys of at least 2048 bits and SHA-2
// signatures on the leaf and intermediates; and, for certificates issued
// from 2019-07-01, the serverAuth extended key usage and at most 825 days
// of validity. No Info.plist key lifts these, so a 1024-bit RSA leaf
// fails even where NSExceptionRequiresForwardSecrecy=NO lifts the ATS key
// size rule. Not checked: the 398-day limit for chains to system roots and
// Certificate Transparency for system roots, since an event does not say
// which root store verified the chain.
//
// # App policy
//
// LoadPlist reads an Info.plist's NSAppTransportSecurity (XML or binary)
// and AppPolicy.Evaluate applies Apple's precedence for one connection's
// host:
//
//  1. An NSExceptionDomains entry for the host replaces every global key
//     for it, even when the entry is empty. Names match exactly, or through
//     a parent entry with NSIncludesSubdomains=YES at any depth (Apple's
//     code walks every parent domain; its documentation says one level).
//     Names must be lowercase, without port or wildcard; a trailing dot
//     matches only hosts written with one. IP addresses match IP and CIDR
//     entries (iOS 17+), longest prefix first.
//  2. NSAllowsLocalNetworking=YES turns ATS off for unqualified names,
//     .local names and IP addresses.
//  3. NSAllowsArbitraryLoads=YES turns ATS off, unless
//     NSAllowsArbitraryLoadsForMedia, NSAllowsArbitraryLoadsInWebContent or
//     NSAllowsLocalNetworking is present at all, with any value (iOS 10+).
//  4. Otherwise default ATS.
//
// NSAllowsArbitraryLoadsInWebContent and NSAllowsArbitraryLoadsForMedia
// cover only WKWebView and AVFoundation loads, which a proxy cannot tell
// from URLSession loads: they are never applied, and the verdict's reason
// says so when they are set. NSExceptionRequiresForwardSecrecy=NO also
// lifts the leaf key-size rule. The legacy NSTemporaryException* and
// NSThirdPartyException* keys are read as their modern names with a
// warning. NSPinnedDomains is not checked.
//
// # Report and probe
//
// BuildReport aggregates events per host: counts per rule, the smallest
// NSExceptionDomains entry under which every connection seen passes, and
// the app's exceptions that no connection needed. Probe is nscurl
// --ats-diagnostics for any OS: it tries the same ATS dictionaries in the
// same order against a server with real handshakes and judges each with
// the rules above. Go's crypto/tls still speaks TLS 1.0 and 1.1 and the
// TLS_RSA suites when a Config asks for them explicitly; the GODEBUG
// settings tls10server, tlsrsakex and tls3des only change its defaults
// (checked on Go 1.26). SSL 3.0 is not implemented, so a server that
// speaks only SSL 3.0 fails every configuration, as it does on iOS.
package ats
