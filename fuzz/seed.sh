#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds taken from the repository (idempotent;
# inputs the fuzzer found before are kept). Run from anywhere.
#   scan_parser:   tests/fixtures/scans/**/*.json and examples/scans/*.json
#   config_parser: config.example.toml and small configs in the tests' shape
#   rule_eval:     each policies/*.rhai alone (bundled example scan) and each
#                  rule + NUL + each valid test scan
set -euo pipefail
fuzz="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$fuzz")"
corpus="$fuzz/corpus"
mkdir -p "$corpus/scan_parser" "$corpus/config_parser" "$corpus/rule_eval"

for f in "$root"/tests/fixtures/scans/*/*.json "$root"/examples/scans/*.json; do
  [ -f "$f" ] || continue
  cp "$f" "$corpus/scan_parser/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
done

cp "$root/config.example.toml" "$corpus/config_parser/seed-config.example.toml"
cat > "$corpus/config_parser/seed-minimal.toml" <<'TOML'
policies_dir = "policies"
[store]
url = "sqlite://history.db"
[[tenant]]
name = "test"
tenant_id = "11111111-2222-3333-4444-555555555555"
source = { dir = "scans" }
TOML
cat > "$corpus/config_parser/seed-daemon.toml" <<'TOML'
mode = "approval"
approval_ttl = "24h"
[store]
url = "sqlite://h.db"
[guardrails]
max_actions_per_run = 100000
max_actions_percent = 100.0
[approvals]
approvers = ["alice", "bob"]
four_eyes = ["disable_user"]
[daemon]
schedule = "0 0 0 1 1 *"
catch_up = false
execute_interval_secs = 1
[api]
enabled = true
listen = "127.0.0.1:8787"
token_file = "token"
[[notify.webhook]]
name = "hook"
url = "http://127.0.0.1:9/hook"
format = "slack"
events = ["approval_pending"]
[[tenant]]
name = "t1"
tenant_id = "11111111-2222-3333-4444-555555555555"
schedule = "*/5 * * * * *"
source = { url = "https://scanner.example/scan", token_file = "scan-token" }
[tenant.graph]
authority = "http://127.0.0.1:9"
graph_url = "http://127.0.0.1:9"
client_id = "00000000-0000-0000-0000-0000000000aa"
client_secret_env = "SECRET"
[tenant.graph.mfa]
group_id = "00000000-0000-0000-0000-0000000000bb"
TOML

for r in "$root"/policies/*.rhai; do
  name="$(basename "$r" .rhai)"
  cp "$r" "$corpus/rule_eval/seed-$name"
  for s in "$root"/tests/fixtures/scans/valid/*.json; do
    { cat "$r"; printf '\0'; cat "$s"; } > "$corpus/rule_eval/seed-$name+$(basename "$s" .json)"
  done
done
# Two rule files in one input (0x01 separates files): duplicate-name checks.
set -- "$root"/policies/*.rhai
{ cat "$1"; printf '\1'; cat "$2"; } > "$corpus/rule_eval/seed-two-files"
{ cat "$1"; printf '\1'; cat "$1"; } > "$corpus/rule_eval/seed-same-name-twice"

for t in scan_parser config_parser rule_eval; do
  echo "corpus/$t: $(find "$corpus/$t" -type f | wc -l) inputs"
done
