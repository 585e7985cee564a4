package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// tlsFiles are the PEM files of one TLS client configuration, each with
// the variable that named it, for errors.
type tlsFiles struct {
	ca, cert, key          string // paths; empty: not set
	caVar, certVar, keyVar string
	serverName             string // empty: the host dialled
}

// config reads the files into a client configuration: the CA's
// certificates as the only roots (the system's roots when no CA file is
// given) and the client certificate, if any. Errors name the variable and
// the file.
func (f tlsFiles) config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
	var errs []error
	if f.ca != "" {
		pem, err := readFile(f.caVar, f.ca)
		switch {
		case err != nil:
			errs = append(errs, err)
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("%s=%q: no PEM certificate in the file", f.caVar, f.ca))
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case f.cert != "" && f.key == "":
		errs = append(errs, fmt.Errorf("%s=%q: needs %s, the certificate's private key", f.certVar, f.cert, f.keyVar))
	case f.key != "" && f.cert == "":
		errs = append(errs, fmt.Errorf("%s=%q: needs %s, the client certificate", f.keyVar, f.key, f.certVar))
	case f.cert != "":
		certPEM, err1 := readFile(f.certVar, f.cert)
		keyPEM, err2 := readFile(f.keyVar, f.key)
		if err1 != nil || err2 != nil {
			errs = append(errs, err1, err2)
			break
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q, %s=%q: %v", f.certVar, f.cert, f.keyVar, f.key, err))
			break
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readFile reads a file that variable name points to, with an error that
// names both.
func readFile(name, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s=%q: no such file", name, path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s=%q: permission denied", name, path)
	default:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s=%q: %v", name, path, err)
	}
}

// redisTLS is the Redis client's TLS configuration; nil without REDIS_TLS.
func (c config) redisTLS() (*tls.Config, error) {
	if !c.RedisTLS {
		return nil, nil
	}
	return tlsFiles{
		ca: c.RedisTLSCAFile, cert: c.RedisTLSCertFile, key: c.RedisTLSKeyFile,
		caVar: "REDIS_TLS_CA_FILE", certVar: "REDIS_TLS_CERT_FILE", keyVar: "REDIS_TLS_KEY_FILE",
		serverName: c.RedisTLSServerName,
	}.config()
}

// natsTLS is the NATS client's TLS configuration; nil when no NATS_TLS_*
// file is set (the connection still uses TLS, with the system's roots, when
// the URL is tls:// or the server requires it).
func (c config) natsTLS() (*tls.Config, error) {
	if c.NATSTLSCAFile == "" && c.NATSTLSCertFile == "" && c.NATSTLSKeyFile == "" {
		return nil, nil
	}
	return tlsFiles{
		ca: c.NATSTLSCAFile, cert: c.NATSTLSCertFile, key: c.NATSTLSKeyFile,
		caVar: "NATS_TLS_CA_FILE", certVar: "NATS_TLS_CERT_FILE", keyVar: "NATS_TLS_KEY_FILE",
	}.config()
}
