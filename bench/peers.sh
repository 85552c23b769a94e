# The peers the benchmarks run side by side with walvault (archive.sh, wasi.sh, s3.sh):
# sourced, with $OUT and log() already set.
#
# Barman 3.20.1 comes from the Python venv .ci/setup makes (Barman needs Python >= 3.12);
# pgBackRest 2.45 from Debian, installed here when missing. WAL-G is not compared: it ships
# from GitHub releases only, which this project's builds may not download from.

PEER_VENV=${WALVAULT_PY_VENV:-$HOME/.cache/walvault/py-venv}

barman_find() {  # sets BARMAN to Barman 3.20.1's CLI, or "" (its columns then say n/a)
  BARMAN=""
  if [[ "$("$PEER_VENV/bin/barman" --version 2>&1)" == *3.20.1* ]]; then
    BARMAN=$PEER_VENV/bin/barman
  else
    log "Barman 3.20.1 unavailable (run .ci/setup, which installs it): its columns say n/a"
  fi
}

barman_config() {  # DIR CODEC: DIR/barman.conf for server "pg" with its home under DIR/home
  mkdir -p "$1/home"
  {
    echo "[barman]"; echo "barman_user = $(id -un)"; echo "barman_home = $1/home"
    echo "log_file = $1/barman.log"; echo "log_level = WARNING"
    echo "[pg]"; echo "description = bench"
    # Never reached: archive-wal and get-wal do not connect.
    echo "conninfo = host=127.0.0.1 port=9 user=nobody dbname=none connect_timeout=1"
    echo "backup_method = postgres"; echo "archiver = on"; echo "streaming_archiver = off"
    [[ $2 == none ]] || { echo "compression = $2"; echo "compression_level = medium"; }
  } > "$1/barman.conf"
}

pgbackrest_install() {
  command -v pgbackrest >/dev/null \
    || apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends pgbackrest >/dev/null
}

pgbackrest_has() {  # CODEC: whether pgBackRest offers it (it has no xz and no snappy)
  case $1 in none | gzip | bzip2 | zstd | lz4) return 0 ;; *) return 1 ;; esac
}

# pgbackrest_config CODEC PGDATA < REPO_LINES: $OUT/pgbackrest.conf for stanza "bench", the
# repository described by the repo1-* lines on stdin, at walvault's "medium" level (gzip 6,
# bzip2 5, zstd 4, lz4 6). The stanza's cluster is PGDATA: pgBackRest checks every WAL's
# system identifier against it.
pgbackrest_config() {
  local type level
  case $1 in
    none) type=none ;; gzip) type=gz level=6 ;; bzip2) type=bz2 level=5 ;;
    zstd) type=zst level=4 ;; lz4) type=lz4 level=6 ;;
    *) log "pgBackRest has no $1"; return 1 ;;
  esac
  mkdir -p "$OUT/pgbackrest/lock" "$OUT/pgbackrest/spool" "$OUT/pgbackrest/log"
  {
    echo "[global]"
    cat
    echo "compress-type=$type"
    [[ -z ${level:-} ]] || echo "compress-level=$level"
    # PGBR_ASYNC=y: archive-async with PGBR_PROCESS_MAX (async.sh).
    echo "archive-async=${PGBR_ASYNC:-n}"
    [[ ${PGBR_ASYNC:-n} == n ]] || echo "process-max=${PGBR_PROCESS_MAX:-4}"
    echo "log-level-console=warn"; echo "log-level-file=off"
    echo "lock-path=$OUT/pgbackrest/lock"; echo "spool-path=$OUT/pgbackrest/spool"
    echo "log-path=$OUT/pgbackrest/log"
    echo "[bench]"; echo "pg1-path=$2"
  } > "$OUT/pgbackrest.conf"
}

pgbackrest_run() { pgbackrest --config="$OUT/pgbackrest.conf" --stanza=bench "$@"; }

# tls_front UPSTREAM_PORT: the TLS front pgBackRest needs (it speaks only HTTPS to S3), started
# on a free port in front of 127.0.0.1:UPSTREAM_PORT with stunnel. Sets TLS_PORT and TLS_PID;
# $OUT/tls-ca.pem is the CA to trust. A throw-away CA and a server certificate for 127.0.0.1
# signed by it (rustls, under walvault, refuses a CA certificate as the server's own).
tls_front() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=walvault-bench-ca \
    -keyout "$OUT/tls-ca-key.pem" -out "$OUT/tls-ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
    -keyout "$OUT/tls-key.pem" -out "$OUT/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$OUT/tls-ext.cnf"
  openssl x509 -req -in "$OUT/tls.csr" -CA "$OUT/tls-ca.pem" -CAkey "$OUT/tls-ca-key.pem" -CAcreateserial \
    -days 1 -extfile "$OUT/tls-ext.cnf" -out "$OUT/tls-cert.pem" 2>/dev/null
  TLS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$OUT/stunnel.conf" <<CONF
foreground = yes
pid =
debug = 3
[s3]
accept = 127.0.0.1:$TLS_PORT
connect = 127.0.0.1:$1
cert = $OUT/tls-cert.pem
key = $OUT/tls-key.pem
CONF
  stunnel "$OUT/stunnel.conf" >"$OUT/stunnel.log" 2>&1 &
  TLS_PID=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$TLS_PORT") 2>/dev/null && return; sleep 0.1; done
}
