//go:build !unix

package wal

import (
	"errors"
	"io"
)

func (osFS) Lock(name string) (io.Closer, error) {
	return nil, errors.New("wal: directory locking is supported on unix systems only")
}
