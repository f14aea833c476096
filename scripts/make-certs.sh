#!/usr/bin/env bash
# Makes throw-away certificates for cpserve's TLS and mTLS (tests and the demo):
#
#   scripts/make-certs.sh OUT_DIR
#
# OUT_DIR/ca.pem, ca.key            the CA every certificate below chains to
# OUT_DIR/server.pem, server.key    server certificate (router and pools), SAN localhost,
#                                   127.0.0.1, ::1 (serverAuth and clientAuth: pools
#                                   present it to the router too)
# OUT_DIR/client.pem, client.key    client certificate (clientAuth)
# OUT_DIR/other-ca.pem, other-ca.key          a second, unrelated CA
# OUT_DIR/other-server.pem, other-server.key  server/client certificate of the other CA
#                                             (for "wrong certificate" tests)
#
# Keys are EC P-256, certificates valid for 2 days. Never use them in production.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
cd "$out"
umask 077

days=2
subj_prefix="/O=cpserve test"

new_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }

make_ca() {  # name
  new_key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days "$days" -subj "$subj_prefix/CN=$1" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem" 2>/dev/null
}

make_leaf() {  # name ca usage
  local name=$1 ca=$2 usage=$3
  new_key "$name.key"
  openssl req -new -key "$name.key" -subj "$subj_prefix/CN=$name" -out "$name.csr" 2>/dev/null
  cat >"$name.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$usage
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
  openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial \
    -days "$days" -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

make_ca ca
make_leaf server ca serverAuth,clientAuth
make_leaf client ca clientAuth
make_ca other-ca
make_leaf other-server other-ca serverAuth,clientAuth
rm -f ./*.srl
chmod 600 ./*.key
chmod 644 ./*.pem
echo "certificates written to $out"
