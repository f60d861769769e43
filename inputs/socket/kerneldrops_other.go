//go:build !linux

package socket

import (
	"errors"
	"net"
)

type udpDropCounter struct{}

func newUDPDropCounter(*net.UDPConn) (*udpDropCounter, error) {
	return nil, errors.New("the kernel's UDP drop count is read on Linux only")
}

func (*udpDropCounter) drops() (uint64, error) { return 0, errors.New("not on Linux") }
