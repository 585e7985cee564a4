package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// TLSFiles are the PEM files of one TLS client configuration, each with
// the variable that named it, for errors.
type TLSFiles struct {
	CA, Cert, Key          string // paths; empty: not set
	CAVar, CertVar, KeyVar string
	ServerName             string // empty: the host dialled
}

// Config reads the files into a client configuration: the CA's
// certificates as the only roots (the system's roots when no CA file is
// given) and the client certificate, if any. Errors name the variable and
// the file.
func (f TLSFiles) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	var errs []error
	if f.CA != "" {
		pem, err := ReadFile(f.CAVar, f.CA)
		switch {
		case err != nil:
			errs = append(errs, err)
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("%s=%q: no PEM certificate in the file", f.CAVar, f.CA))
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case f.Cert != "" && f.Key == "":
		errs = append(errs, fmt.Errorf("%s=%q: needs %s, the certificate's private key", f.CertVar, f.Cert, f.KeyVar))
	case f.Key != "" && f.Cert == "":
		errs = append(errs, fmt.Errorf("%s=%q: needs %s, the client certificate", f.KeyVar, f.Key, f.CertVar))
	case f.Cert != "":
		certPEM, err1 := ReadFile(f.CertVar, f.Cert)
		keyPEM, err2 := ReadFile(f.KeyVar, f.Key)
		if err1 != nil || err2 != nil {
			errs = append(errs, err1, err2)
			break
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q, %s=%q: %v", f.CertVar, f.Cert, f.KeyVar, f.Key, err))
			break
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ReadFile reads a file that variable name points to, with an error that
// names both.
func ReadFile(name, path string) ([]byte, error) {
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

// tls is the NATS client's TLS configuration; nil when no NATS_TLS_* file
// is set (the connection still uses TLS, with the system's roots, when the
// URL is tls:// or the server requires it).
func (s Security) tls() (*tls.Config, error) {
	if s.TLSCAFile == "" && s.TLSCertFile == "" && s.TLSKeyFile == "" {
		return nil, nil
	}
	return TLSFiles{
		CA: s.TLSCAFile, Cert: s.TLSCertFile, Key: s.TLSKeyFile,
		CAVar: "NATS_TLS_CA_FILE", CertVar: "NATS_TLS_CERT_FILE", KeyVar: "NATS_TLS_KEY_FILE",
	}.Config()
}
