// Package chat is chatbuf's message model: conversations and their ids,
// incoming chat messages and their validation, the record a buffered message
// is stored as, the batch JSON handed downstream, and the Redis key layout.
//
// Everything here is pure: no I/O, no clocks, no configuration from the
// environment.
package chat
