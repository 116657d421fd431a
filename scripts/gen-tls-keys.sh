#!/bin/bash
# gen-tls-keys.sh DIR: test keys, made fresh (never checked in).
#   DIR/pki/       ca-cert.pem, server-cert.pem, server-key.pem,
#                  client-cert.pem, client-key.pem: a CA and what it signed
#                  (the server for localhost, 127.0.0.1 and ::1). Both
#                  nbdkit --tls-certificates and nbd_set_tls_certificates
#                  take this directory.
#   DIR/rogue/     the same layout from another CA: trusted by nobody else.
#   DIR/wrongname/ ca-cert.pem (pki's CA), server-cert.pem, server-key.pem:
#                  a server certificate signed by pki's CA for another host
#                  (wrong.example; no IP address), for the host name check.
#   DIR/keys.psk   psktool's "alice:HEXKEY"; DIR/wrong.psk has another key
#                  for alice.
# Needs certtool and psktool (gnutls-bin).
set -euo pipefail
dir=${1:?usage: gen-tls-keys.sh DIR}
mkdir -p "$dir"
cd "$dir"
ct() { certtool "$@" >/dev/null 2>&1; }

gen_pki() { # OUTDIR CA-NAME
  local d=$1
  mkdir -p "$d"
  cat >"$d/ca.info" <<EOT
cn = $2
ca
cert_signing_key
expiration_days = 30
EOT
  cat >"$d/server.info" <<EOT
organization = NBD tests
cn = localhost
dns_name = localhost
ip_address = 127.0.0.1
ip_address = ::1
tls_www_server
encryption_key
signing_key
expiration_days = 30
EOT
  cat >"$d/client.info" <<EOT
organization = NBD tests
cn = client
tls_www_client
encryption_key
signing_key
expiration_days = 30
EOT
  ct --generate-privkey --outfile "$d/ca-key.pem"
  ct --generate-self-signed --load-privkey "$d/ca-key.pem" \
     --template "$d/ca.info" --outfile "$d/ca-cert.pem"
  local who
  for who in server client; do
    ct --generate-privkey --outfile "$d/$who-key.pem"
    ct --generate-certificate --load-ca-certificate "$d/ca-cert.pem" \
       --load-ca-privkey "$d/ca-key.pem" --load-privkey "$d/$who-key.pem" \
       --template "$d/$who.info" --outfile "$d/$who-cert.pem"
  done
  chmod 0600 "$d"/*-key.pem
  rm -f "$d"/*.info
}
gen_pki pki "NBD test CA"
gen_pki rogue "Rogue CA"
# A server certificate from pki's CA that names another host.
mkdir -p wrongname
cat >wrongname/server.info <<EOT
organization = NBD tests
cn = wrong.example
dns_name = wrong.example
tls_www_server
encryption_key
signing_key
expiration_days = 30
EOT
cp pki/ca-cert.pem wrongname/ca-cert.pem
ct --generate-privkey --outfile wrongname/server-key.pem
ct --generate-certificate --load-ca-certificate pki/ca-cert.pem \
   --load-ca-privkey pki/ca-key.pem --load-privkey wrongname/server-key.pem \
   --template wrongname/server.info --outfile wrongname/server-cert.pem
chmod 0600 wrongname/server-key.pem
rm -f wrongname/server.info
rm -f keys.psk wrong.psk
psktool -u alice -p keys.psk >/dev/null
psktool -u alice -p wrong.psk >/dev/null
