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
	"strings"
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

// RedisVars are the REDIS_* variables that say how to reach Redis, with
// the worker's defaults: embedded in the configuration of every command
// that talks to the workers' Redis, so that each reads them alike.
type RedisVars struct {
	RedisHost           string   `env:"REDIS_HOST" envDefault:"localhost"`
	RedisPort           int      `env:"REDIS_PORT" envDefault:"6379"`
	RedisAddrs          string   `env:"REDIS_ADDRS"`
	RedisUsername       string   `env:"REDIS_USERNAME"`
	RedisPassword       string   `env:"REDIS_PASSWORD"`
	RedisDB             int      `env:"REDIS_DB" envDefault:"0"`
	RedisKeyPrefix      string   `env:"REDIS_KEY_PREFIX" envDefault:"opencontext:"`
	RedisSocketTimeout  Duration `env:"REDIS_SOCKET_TIMEOUT" envDefault:"5s"`
	RedisConnectTimeout Duration `env:"REDIS_CONNECT_TIMEOUT" envDefault:"5s"`
	RedisTLS            bool     `env:"REDIS_TLS" envDefault:"false"`
	RedisTLSCAFile      string   `env:"REDIS_TLS_CA_FILE"`
	RedisTLSCertFile    string   `env:"REDIS_TLS_CERT_FILE"`
	RedisTLSKeyFile     string   `env:"REDIS_TLS_KEY_FILE"`
	RedisTLSServerName  string   `env:"REDIS_TLS_SERVER_NAME"`
}

// Addrs is REDIS_ADDRS as a list; empty when unset.
func (v RedisVars) Addrs() []string {
	var addrs []string
	for a := range strings.SplitSeq(v.RedisAddrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// Redis is the client settings v gives, with a pool of maxConns
// connections.
func (v RedisVars) Redis(maxConns int, retryOnTimeout bool) Redis {
	return Redis{Host: v.RedisHost, Port: v.RedisPort, Addrs: v.Addrs(), Username: v.RedisUsername,
		Password: v.RedisPassword, DB: v.RedisDB, MaxConnections: maxConns,
		SocketTimeout: v.RedisSocketTimeout.D(), ConnectTimeout: v.RedisConnectTimeout.D(), RetryOnTimeout: retryOnTimeout,
		TLS: v.RedisTLS, TLSCAFile: v.RedisTLSCAFile, TLSCertFile: v.RedisTLSCertFile, TLSKeyFile: v.RedisTLSKeyFile,
		TLSServerName: v.RedisTLSServerName}
}
