// Package tlsconf builds the client TLS settings shared by the MQTT input and
// the outputs, from file names as the config file has them.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Client describes TLS towards a server.
type Client struct {
	CAFile             string // PEM CA bundle; "" = the system's roots
	CertFile           string // client certificate (PEM), with KeyFile
	KeyFile            string
	ServerName         string // "" = the host of the URL
	InsecureSkipVerify bool   // for tests only
}

// Set reports whether anything is configured.
func (c Client) Set() bool {
	return c.CAFile != "" || c.CertFile != "" || c.ServerName != "" || c.InsecureSkipVerify
}

// Config loads the files and returns the tls.Config (TLS 1.2 at least).
func (c Client) Config() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tls: set both cert_file and key_file, or neither")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
