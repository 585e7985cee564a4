// Package e2e holds chatbuf's end-to-end and fault tests: the built worker
// and producer binaries as separate processes, against a private
// redis-server and a real nats-server. It has no code of its own.
package e2e
