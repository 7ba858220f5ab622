#!/bin/sh
# A self-signed certificate for trying research-service over HTTPS and HTTP/2 on this machine:
# valid for localhost, 127.0.0.1 and ::1, for 30 days. Browsers warn about it (nobody vouches
# for it); curl accepts it with `--cacert FOLDER/fullchain.pem`. For a public name use a real
# certificate instead (docs/cluster.md, "HTTP/2 and TLS").
#
#   deploy/nginx/make-cert.sh [FOLDER]
#
# Writes FOLDER/fullchain.pem and FOLDER/privkey.pem (mode 600), the names nginx's
# research-service-cluster.conf and Let's Encrypt use. FOLDER defaults to deploy/nginx/certs,
# the folder docker-compose.yml's `cluster` profile mounts; an existing pair there is replaced.
set -eu

folder=${1:-$(dirname "$0")/certs}
days=${CERT_DAYS:-30}

command -v openssl >/dev/null 2>&1 || {
    echo "make-cert.sh: openssl is not installed (apt-get install openssl)" >&2
    exit 1
}
mkdir -p "$folder"
if [ $# -eq 0 ]; then
    # The default folder is inside the repository: keep the key out of git.
    printf '*\n' >"$folder/.gitignore"
fi

umask 077
# P-256: small and fast, and every browser and curl take it. -addext needs OpenSSL >= 1.1.1.
# openssl's progress output is shown only when it fails.
if ! output=$(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -days "$days" -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$folder/privkey.pem" -out "$folder/fullchain.pem" 2>&1); then
    echo "$output" >&2
    exit 1
fi
chmod 600 "$folder/privkey.pem"
chmod 644 "$folder/fullchain.pem"
echo "make-cert.sh: wrote $folder/fullchain.pem and $folder/privkey.pem (localhost, 127.0.0.1, ::1; $days days)"
