//go:build !linux

package wireguard

import "net"

func udpGSO(*net.UDPConn) bool            { return false }
func appendGSO(b []byte, _ uint16) []byte { return b }
func gsoRefused(error) bool               { return false }
