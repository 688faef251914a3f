#!/usr/bin/env python3
"""Checks that every panel of the Grafana dashboard shows something: runs
each query of deploy/grafana/dashboards/pipeline.json (also those of
collapsed rows) as an instant query against a live Prometheus and counts
the series it returns.

Run it after `make observe` and `make load` (or `docker compose --profile
observe up` and a load), while the stack is still under load or within a
few minutes of it: a panel whose query returns no series is a blank panel
in Grafana, which looks the same as "nothing happened". Trouble panels are
written to return 0 when there is no trouble, so they must not be empty
either.

    scripts/check-dashboard.py            # PROMETHEUS_URL, default http://127.0.0.1:9090
    scripts/check-dashboard.py --list     # titles and queries, no server needed

Exits 0 when every query returned at least one series, 1 listing the
panels that returned none or an error, 2 when Prometheus cannot be reached.
Grafana's variables are replaced before sending: $__rate_interval by 1m,
$__interval by 30s, $__range by 5m, any other $variable by .*."""

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

DASHBOARD = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                          "deploy", "grafana", "dashboards", "pipeline.json"))
PROMETHEUS_URL = os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:9090").rstrip("/")
TIMEOUT_SECONDS = 10

# Grafana's built-in variables, by what an instant query at "now" needs.
BUILT_IN = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__interval_ms": "30000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


class Unreachable(Exception):
    """Prometheus did not answer at all (as opposed to refusing a query)."""


def panels_of(dashboard):
    """Every panel that is not a row, in dashboard order, rows' own panels included."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries_of(dashboard):
    """(panel title, [(refId, expr)]) for every panel that has a query."""
    for panel in panels_of(dashboard):
        targets = [(target.get("refId", "?"), target.get("expr", "").strip())
                   for target in panel.get("targets", []) if not target.get("hide")]
        targets = [(ref_id, expr) for ref_id, expr in targets if expr]
        if targets:
            yield panel.get("title", "(untitled)"), targets


def substitute(expr):
    """The expression with Grafana's variables replaced by values Prometheus accepts."""
    def value(match):
        name = match.group(1) or match.group(2) or match.group(3)
        return BUILT_IN.get(name, ".*")
    return VARIABLE.sub(value, expr)


def instant_query(expr):
    """The number of series `expr` returns now; raises on a refused query."""
    body = urllib.parse.urlencode({"query": expr}).encode()
    request = urllib.request.Request(f"{PROMETHEUS_URL}/api/v1/query", data=body)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        # Prometheus answers 400/422 with a JSON body naming the problem.
        try:
            answer = json.load(error)
        except (ValueError, OSError):
            raise RuntimeError(f"HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise Unreachable(str(getattr(error, "reason", error))) from error
    if answer.get("status") != "success":
        raise RuntimeError(f"{answer.get('errorType', 'error')}: {answer.get('error', answer)}")
    data = answer["data"]
    if data["resultType"] in ("vector", "matrix"):
        return len(data["result"])
    return 1  # a scalar or a string is one value


def list_queries(panels):
    for title, targets in panels:
        print(title)
        for ref_id, expr in targets:
            print(f"    [{ref_id}] {expr}")
    print(f"{len(panels)} panels, {sum(len(targets) for _, targets in panels)} queries")


def unreachable(error):
    print(f"Prometheus at {PROMETHEUS_URL} cannot be reached ({error}): start it "
          f"(`make observe`) or point PROMETHEUS_URL at it", file=sys.stderr)
    sys.exit(2)


def check_panel(targets):
    """(series in all, verdict, [(refId, verdict, expr, error)] of the targets that failed)."""
    total, failed = 0, []
    for ref_id, expr in targets:
        try:
            series = instant_query(substitute(expr))
        except RuntimeError as error:
            failed.append((ref_id, "ERROR", expr, str(error)))
            continue
        total += series
        if series == 0:
            failed.append((ref_id, "EMPTY", expr, ""))
    verdicts = {verdict for _, verdict, _, _ in failed}
    verdict = "ERROR" if "ERROR" in verdicts else "EMPTY" if verdicts else "OK"
    return total, verdict, failed


def check(panels):
    try:
        instant_query("vector(1)")
    except Unreachable as error:
        unreachable(error)
    width = max(len(title) for title, _ in panels)
    failures = []
    try:
        for title, targets in panels:
            total, verdict, failed = check_panel(targets)
            print(f"{title:<{width}}  {total:>4} series  {verdict}")
            failures += [(title, *target) for target in failed]
    except Unreachable as error:
        unreachable(error)
    if failures:
        bad_panels = len({title for title, *_ in failures})
        print(f"\n{bad_panels} of {len(panels)} panels would show nothing:", file=sys.stderr)
        for title, ref_id, verdict, expr, error in failures:
            print(f"  {verdict} {title} [{ref_id}]: {expr}", file=sys.stderr)
            if error:
                print(f"      {error}", file=sys.stderr)
        sys.exit(1)
    print(f"all {len(panels)} panels returned series from {PROMETHEUS_URL}")


def main():
    arguments = sys.argv[1:]
    if arguments not in ([], ["--list"]):
        sys.exit(f"usage: {sys.argv[0]} [--list]")
    with open(DASHBOARD) as source:
        panels = list(queries_of(json.load(source)))
    if not panels:
        sys.exit(f"{DASHBOARD} has no queries")
    if arguments == ["--list"]:
        list_queries(panels)
    else:
        check(panels)


if __name__ == "__main__":
    main()
