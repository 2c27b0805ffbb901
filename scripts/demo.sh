#!/usr/bin/env bash
# `make demo`: build, generate a synthetic nationwide file (100,000 people by default),
# load it with pmh-load, start pmh-server on 127.0.0.1 with a generated demo
# configuration, and print ready-to-paste curl commands. The server runs in the
# foreground; Ctrl-C stops it (gracefully).
#
#   PERSONS=1000000 make demo      # a larger store
#   PMH_LISTEN=127.0.0.1:9090 make demo
set -euo pipefail
cd "$(dirname "$0")/.."

persons=${PERSONS:-100000}
dir=${DEMO_DIR:-var/demo}
listen=${PMH_LISTEN:-127.0.0.1:8080}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pmh/target}
bin=$CARGO_TARGET_DIR/release

scripts/cargo.sh build --locked --release -p pmh-server -p pmh-loader -p pmh-bench --bins

if curl -s -o /dev/null "http://$listen/healthz" 2>/dev/null; then
  echo "demo: something already answers on $listen; stop it or set PMH_LISTEN" >&2
  exit 2
fi

rm -rf "$dir"
mkdir -p "$dir"
umask 077
"$bin/pmh-server" --print-demo-config --db "$dir/store" | sed "s/^listen = .*/listen = \"$listen\"/" >"$dir/pmh.toml"
echo "demo: generating $persons synthetic people"
"$bin/pmh-bench" gen --persons "$persons" --out "$dir/input" >/dev/null
echo "demo: loading them"
"$bin/pmh-load" full --quiet --config "$dir/pmh.toml" "$dir/input/full.csv"

"$bin/pmh-server" --config "$dir/pmh.toml" &
server=$!
# Ctrl-C reaches the server too; it finishes in-flight requests and exits.
trap 'kill -TERM $server 2>/dev/null || true' INT TERM EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://$listen/healthz" && break
  sleep 0.1
done
curl -sf -o /dev/null "http://$listen/healthz" || { echo "demo: pmh-server did not start" >&2; exit 2; }

# The sample differential file, cut to 千代田区's rows (a row of another municipality
# would make the whole upload 403).
grep -v '^131024,' data/sample-diff.csv >"$dir/chiyoda-diff.csv"

# The tokens of the generated configuration, in file order: gateway, admin, municipality.
mapfile -t tokens < <(sed -n 's/^token = "\(.*\)"$/\1/p' "$dir/pmh.toml")
gw=${tokens[0]} admin=${tokens[1]} muni=${tokens[2]}
# Person 0 of the synthetic file: its My Number and the institution of its certificates.
my_number=$(awk -F, 'NR == 2 { print $3; exit }' "$dir/input/full.csv")
institution=1311234569
pmh_id=$(curl -s -X POST "http://$listen/v1/pmh-ids" -H "Authorization: Bearer $gw" \
  -H 'Content-Type: application/json' -d "{\"myNumber\": \"$my_number\"}" | sed 's/.*"pmhId":"\([0-9a-f]*\)".*/\1/')

cat <<EOF

pmh-server is serving $persons synthetic people on http://$listen (configuration: $dir/pmh.toml).
Paste these in another terminal:

  # 1. Resolve a My Number to its PMH-ID (any valid number answers)
  curl -s -X POST http://$listen/v1/pmh-ids -H 'Authorization: Bearer $gw' \\
    -H 'Content-Type: application/json' -d '{"myNumber": "$my_number"}'

  # 2. Without consent the lookup is refused (403 consent_required)
  curl -s 'http://$listen/v1/subsidy/eligibility/$pmh_id?institution=$institution' -H 'Authorization: Bearer $gw'

  # 3. The patient consents at the reception desk
  curl -s -X POST http://$listen/v1/consents -H 'Authorization: Bearer $gw' \\
    -H 'Content-Type: application/json' -d '{"pmhId": "$pmh_id", "institutionCode": "$institution"}'

  # 4. Look up again: the certificates valid today
  curl -s 'http://$listen/v1/subsidy/eligibility/$pmh_id?institution=$institution' -H 'Authorization: Bearer $gw'

  # 5. The person's access history (admin)
  curl -s http://$listen/v1/access-log/$pmh_id -H 'Authorization: Bearer $admin'

  # 6. A municipality (千代田区 131016) uploads its differential file
  curl -s -X POST 'http://$listen/v1/subsidy/uploads?mode=diff' -H 'Authorization: Bearer $muni' \\
    -H 'Content-Type: text/csv' --data-binary @$dir/chiyoda-diff.csv

  # Metrics, the OpenAPI document
  curl -s http://$listen/metrics | head -30
  curl -s http://$listen/openapi.json | head -30

Ctrl-C stops the server.
EOF
set +e
wait $server   # returns early when a signal arrives; then wait for the shutdown itself
wait $server 2>/dev/null
trap - EXIT
exit 0
