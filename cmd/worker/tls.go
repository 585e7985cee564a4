package main

import (
	"crypto/tls"

	shared "github.com/opencontext/chatbuf/internal/config"
)

// redisConn is the Redis client settings of the configuration.
func (c config) redisConn() shared.Redis {
	return c.Redis(c.RedisMaxConnections, c.RedisRetryOnTimeout)
}

// redisTLS is the Redis client's TLS configuration; nil without REDIS_TLS.
func (c config) redisTLS() (*tls.Config, error) { return c.redisConn().TLSConfig() }
