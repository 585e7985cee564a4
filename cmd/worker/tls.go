package main

import (
	"crypto/tls"

	shared "github.com/opencontext/chatbuf/internal/config"
)

// redisConn is the Redis client settings of the configuration.
func (c config) redisConn() shared.Redis {
	return shared.Redis{Host: c.RedisHost, Port: c.RedisPort, Addrs: c.redisAddrs(), Username: c.RedisUsername,
		Password: c.RedisPassword, DB: c.RedisDB, MaxConnections: c.RedisMaxConnections,
		SocketTimeout: c.RedisSocketTimeout.D(), ConnectTimeout: c.RedisConnectTimeout.D(), RetryOnTimeout: c.RedisRetryOnTimeout,
		TLS: c.RedisTLS, TLSCAFile: c.RedisTLSCAFile, TLSCertFile: c.RedisTLSCertFile, TLSKeyFile: c.RedisTLSKeyFile,
		TLSServerName: c.RedisTLSServerName}
}

// redisTLS is the Redis client's TLS configuration; nil without REDIS_TLS.
func (c config) redisTLS() (*tls.Config, error) { return c.redisConn().TLSConfig() }
