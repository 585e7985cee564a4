package main

import (
	"crypto/tls"

	"github.com/opencontext/chatbuf/internal/natsconn"
)

// redisTLS is the Redis client's TLS configuration; nil without REDIS_TLS.
func (c config) redisTLS() (*tls.Config, error) {
	if !c.RedisTLS {
		return nil, nil
	}
	return natsconn.TLSFiles{
		CA: c.RedisTLSCAFile, Cert: c.RedisTLSCertFile, Key: c.RedisTLSKeyFile,
		CAVar: "REDIS_TLS_CA_FILE", CertVar: "REDIS_TLS_CERT_FILE", KeyVar: "REDIS_TLS_KEY_FILE",
		ServerName: c.RedisTLSServerName,
	}.Config()
}
