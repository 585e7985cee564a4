// Package config holds what the commands share to reach Redis (the client
// built from the REDIS_* variables), the duration syntax of their
// variables, the environment as a map, the logger, and the start of the
// long-running commands (Main: configuration, logger, signals). NATS's
// counterpart is internal/natsconn.
package config

import (
	"crypto/tls"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opencontext/chatbuf/internal/natsconn"
)

// Redis is a Redis client's address, credentials and TLS files, as the
// REDIS_* variables give them.
type Redis struct {
	Host           string   // REDIS_HOST
	Port           int      // REDIS_PORT
	Addrs          []string // REDIS_ADDRS: Redis Cluster seeds; when set, Host and Port are not used
	Username       string   // REDIS_USERNAME
	Password       string   // REDIS_PASSWORD
	DB             int      // REDIS_DB
	MaxConnections int      // REDIS_MAX_CONNECTIONS
	SocketTimeout  time.Duration
	ConnectTimeout time.Duration
	RetryOnTimeout bool
	TLS            bool // REDIS_TLS
	TLSCAFile      string
	TLSCertFile    string
	TLSKeyFile     string
	TLSServerName  string
}

// Addr is Host:Port.
func (c Redis) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// TLSConfig is the client's TLS configuration; nil without REDIS_TLS.
func (c Redis) TLSConfig() (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	return natsconn.TLSFiles{
		CA: c.TLSCAFile, Cert: c.TLSCertFile, Key: c.TLSKeyFile,
		CAVar: "REDIS_TLS_CA_FILE", CertVar: "REDIS_TLS_CERT_FILE", KeyVar: "REDIS_TLS_KEY_FILE",
		ServerName: c.TLSServerName,
	}.Config()
}

// Client returns the Redis client: a Redis Cluster client seeded with Addrs
// when that is set, else a client of Host:Port.
func (c Redis) Client() (redis.UniversalClient, error) {
	tlsCfg, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	retries := 3
	if !c.RetryOnTimeout {
		retries = -1
	}
	if len(c.Addrs) > 0 {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:        c.Addrs,
			Username:     c.Username,
			Password:     c.Password,
			PoolSize:     c.MaxConnections,
			DialTimeout:  c.ConnectTimeout,
			ReadTimeout:  c.SocketTimeout,
			WriteTimeout: c.SocketTimeout,
			MaxRetries:   retries,
			TLSConfig:    tlsCfg,
		}), nil
	}
	return redis.NewClient(&redis.Options{
		Addr:         c.Addr(),
		Username:     c.Username,
		Password:     c.Password,
		DB:           c.DB,
		PoolSize:     c.MaxConnections,
		DialTimeout:  c.ConnectTimeout,
		ReadTimeout:  c.SocketTimeout,
		WriteTimeout: c.SocketTimeout,
		MaxRetries:   retries,
		TLSConfig:    tlsCfg,
	}), nil
}
