#!/usr/bin/env bash
# Checks the monitoring configuration: Prometheus' config
# (deploy/prometheus/prometheus.yml), every rules file
# (deploy/prometheus/rules/*.yml), the rules' unit tests
# (deploy/prometheus/tests/*.yml: each alert fires on its fault and stays
# silent on a healthy pipeline), and Alertmanager's config when amtool is
# installed. Run from anywhere; docs/OPERATIONS.md says more.
#
# Without promtool it says so on one line and succeeds, unless
# REQUIRE_PROMTOOL=1 (as CI should set), which makes it a failure.
# promtool and amtool come with Debian's packages:
#   apt-get install prometheus prometheus-alertmanager
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf '%s\n' "check-rules: $*" >&2; }

if ! command -v promtool >/dev/null 2>&1; then
  if [ "${REQUIRE_PROMTOOL:-0}" = 1 ]; then
    say "promtool not found and REQUIRE_PROMTOOL=1: install Debian's package prometheus (apt-get install prometheus)"
    exit 1
  fi
  say "promtool not found: rules not checked (install Debian's package prometheus; REQUIRE_PROMTOOL=1 makes this a failure)"
  exit 0
fi

shopt -s nullglob
rules=(deploy/prometheus/rules/*.yml)
tests=(deploy/prometheus/tests/*.yml)
if [ ${#rules[@]} -eq 0 ] || [ ${#tests[@]} -eq 0 ]; then
  say "no rules or no tests under deploy/prometheus"
  exit 1
fi

say "$(promtool --version 2>&1 | head -n 1)"

# The outbox-relay job reads targets/outbox-relay*.json, which exist only
# where standalone relays run: promtool warns that none exists, and that
# is expected here.
promtool check config deploy/prometheus/prometheus.yml
promtool check rules "${rules[@]}"
promtool test rules "${tests[@]}"

if command -v amtool >/dev/null 2>&1; then
  amtool check-config deploy/alertmanager/alertmanager.yml
else
  say "amtool not found: deploy/alertmanager/alertmanager.yml not checked (Debian's package prometheus-alertmanager)"
fi

say "ok"
