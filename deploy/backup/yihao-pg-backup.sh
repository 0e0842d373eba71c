#!/usr/bin/env bash
# PostgreSQL backup and restore for Yihao (pg_dump/pg_restore, custom format).
#
#   yihao-pg-backup.sh backup  <database-url> <file.dump>   dump, then check the archive reads
#   yihao-pg-backup.sh restore <file.dump> <database-url>   restore into an EMPTY database
#   yihao-pg-backup.sh verify  <file.dump>                  list the archive's contents
#
# <database-url> may be Yihao's own (postgresql+asyncpg://…) or a libpq URL. Restore into a
# fresh database, check it (`yihao audit verify` with YIHAO_DATABASE_URL pointing at it),
# then switch the nodes over; never restore over the live database.
set -euo pipefail

libpq_url() { printf '%s' "${1/postgresql+asyncpg:/postgresql:}"; }

usage() { sed -n '2,10p' "$0" >&2; exit 2; }

case "${1:-}" in
  backup)
    [ $# -eq 3 ] || usage
    url=$(libpq_url "$2"); file=$3
    tmp="$file.partial"
    # Written aside and renamed: a dump cut short never looks like a good backup.
    pg_dump --format=custom --compress=6 --no-owner --no-privileges --file="$tmp" "$url"
    pg_restore --list "$tmp" >/dev/null
    mv "$tmp" "$file"
    echo "backup written: $file ($(wc -c <"$file") bytes)"
    ;;
  restore)
    [ $# -eq 3 ] || usage
    file=$2; url=$(libpq_url "$3")
    pg_restore --exit-on-error --single-transaction --no-owner --no-privileges \
      --dbname="$url" "$file"
    echo "restored $file"
    ;;
  verify)
    [ $# -eq 2 ] || usage
    tables=$(pg_restore --list "$2" | grep -c ' TABLE DATA ' || true)
    echo "archive $2 is readable: $tables tables with data"
    ;;
  *) usage ;;
esac
