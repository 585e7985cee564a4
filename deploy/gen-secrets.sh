#!/bin/sh
# Writes the throwaway secrets of the compose profile `secure` into
# deploy/secrets/ (ignored by git): a CA, server certificates for Redis and
# NATS, a client certificate for the workers, random passwords, and the Redis
# ACL file. Run it once, from anywhere:
#
#   deploy/gen-secrets.sh
#   docker compose --profile secure up -d worker-secure
#
# The files are readable by every local user (the containers run as other
# users than you): a demonstration, not a way to keep production secrets.
set -eu

# The Redis ACL rules of the workers' user `chatbuf` (REDIS_USERNAME): keys
# under the default REDIS_KEY_PREFIX only; data, script and connection
# commands; nothing administrative (-@dangerous: no KEYS, FLUSHALL, CONFIG,
# ...). The e2e test TestSecurityTLSEndToEnd runs workers under these rules.
CHATBUF_REDIS_ACL='~opencontext:* resetchannels -@all +@read +@write +@keyspace +@scripting +@transaction +@connection -@dangerous'

dir=$(cd "$(dirname "$0")" && pwd)/secrets
if [ -e "$dir" ]; then
	echo "$dir exists; remove it to make new secrets" >&2
	exit 1
fi
mkdir -p "$dir/tls"
cd "$dir/tls"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
	-subj "/CN=chatbuf demo CA" -keyout ca.key -out ca.crt 2>/dev/null
cert() { # name, extended key usage, subjectAltName
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
	printf 'extendedKeyUsage=%s\n%s\n' "$2" "$3" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
		-extfile "$1.ext" -out "$1.crt" 2>/dev/null
	rm "$1.csr" "$1.ext"
}
cert redis serverAuth "subjectAltName=DNS:redis-secure,DNS:localhost,IP:127.0.0.1"
cert nats serverAuth "subjectAltName=DNS:nats-secure,DNS:localhost,IP:127.0.0.1"
cert worker clientAuth ""
rm -f ca.srl
chmod 644 ./*
chmod 600 ca.key # only for making more certificates: no container reads it
cd "$dir"

pw() { openssl rand -hex 24; }
redis_pw=$(pw)
worker_pw=$(pw)
alice_pw=$(pw)
bob_pw=$(pw)

# Redis: no default user; `chatbuf` with the password's SHA-256.
printf 'user default off\nuser chatbuf on #%s %s\n' \
	"$(printf %s "$redis_pw" | sha256sum | cut -d' ' -f1)" "$CHATBUF_REDIS_ACL" >users.acl
printf 'REDISCLI_AUTH=%s\n' "$redis_pw" >redis.env # for the healthcheck's redis-cli

# NATS: the passwords deploy/nats-server.conf reads from its environment.
printf 'CHATBUF_NATS_WORKER_PASSWORD=%s\nCHATBUF_NATS_ALICE_PHONE_PASSWORD=%s\nCHATBUF_NATS_BOB_LAPTOP_PASSWORD=%s\n' \
	"$worker_pw" "$alice_pw" "$bob_pw" >nats.env

# The workers' and the device alice-phone's secrets.
printf 'REDIS_PASSWORD=%s\nNATS_PASSWORD=%s\n' "$redis_pw" "$worker_pw" >worker.env
printf 'NATS_PASSWORD=%s\n' "$alice_pw" >alice-phone.env
chmod 644 ./*.env users.acl
echo "wrote $dir"
