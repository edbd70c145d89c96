"""node-opcua, an independent OPC UA client, for interop tests: `run_node_opcua(plan, timeout)`.

Install it with `.ci/install-node-tests` (node-opcua-client 2.182.x into tests/opcua_js/
node_modules). Without it the tests skip, except in CI (CI set) where they fail.

A plan (JSON; runs tests/opcua_js/client.mjs, which prints one JSON result):

    {"endpoint": "opc.tcp://127.0.0.1:4840/x",
     "securityMode": "None" | "Sign" | "SignAndEncrypt",            # default None
     "securityPolicy": "None" | "Basic256Sha256" | "Aes128_Sha256_RsaOaep" | ...,
     "user": "alice", "password": "...",                            # omit: anonymous
     "timeout": 60, "continueOnError": false,
     "steps": [step, ...]}

A node reference is "ns=2;s=X", "nsu=<namespace uri>;s=X", "$alias" (saved by a browse step)
or {"path": [...], "from": ref}. A path element is "Name" (namespace 0), "<uri>|Name" or
{"ns": uri or index, "name": "Name"}; paths follow hierarchical references from "from"
(default Objects, i=85) through TranslateBrowsePathsToNodeIds. Steps ({"op": ..., "name": opt}):

    browse     {"path": [...], "from": ref, "save": "alias"}
               -> {"status", "nodeId", "targets"}
    read       {"nodes": [ref, ...], "attribute": "Value"}
               -> {"values": [{"status", "value", "dataType", "sourceTimestamp",
                               "serverTimestamp"}]}
    write      {"node": ref, "dataType": "Double", "value": 1.5, "expect": "Good" | [...]}
               -> {"status", "ok"}     (ok: status in expect; null without expect)
    call       {"object": ref, "method": ref | {"path": [...]} (from the object),
                "inputs": [{"dataType": "String", "value": "x", "array": false}], "expect": ...}
               -> {"status", "ok", "outputs", "inputStatuses"}
    subscribe  {"nodes": [ref, ...], "publishingInterval": 100, "queueSize": 100,
                "until": [{"index": 0, "gte" | "lte" | "eq" | "ne": v} | {"changes": n}
                          | {"status": "Good"} | {"every": {"eq" | "gte": v}}, ...],
                "timeout": 10, "history": 200, "after": [step, ...],
                "deadband": {"type": "Absolute" | "Percent", "value": v},
                "trigger": i, "sampled": [j, ...]}   (items j in Sampling mode, linked to
                                                      item i by SetTriggering)
               -> {"met", "conditions", "latest", "counts", "history", "elapsed", "after",
                   "triggering": {"status", "addResults"} | null}
               (one CreateMonitoredItems for all nodes; each condition is met once it held;
               "changes" counts notifications after the initial one; "every": all nodes' latest
               values at once; "history" keeps that many values per node; "after" steps run
               once the items exist; without "until" it waits the whole timeout)
    events     {"node": ref (default Server i=2253), "eventType": ref,
                "fields": ["EventType", "SourceNode", "Message", "<uri>|JobId", ...],
                "count": 1, "timeout": 10, "after": [step, ...]}
               -> {"met", "events": [{field: value}], "seen", "after"}
    crawl      {"from": ref (default Root i=84), "maxNodes": 200000}
               -> {"nodes", "variables", "dataTypes", "values": {status: count},
                   "definitions": {"structure"|"enumeration"|"other": {status: count}},
                   "bad": [{"nodeId", "path", "attribute", "status"}], "browseErrors",
                   "truncated"}
    namespaces {} -> {"namespaces": [...]}
    findServers {} -> {"servers": [{"applicationUri", "applicationType", "discoveryUrls"}]}

When a subscribe or events step has its items in place, the client prints a line
`@@SUBSCRIBED@@ {"op", "name", "items"}` at once (for a harness that streams stdout: benchmarks).
Every step result has "op" (and "name"), or "error" and "status" (a Bad... code) when it threw.
The result: {"ok", "connected", "session", "steps": [...], "stage", "error", "status"}; "stage"
says where it stopped ("connect", "session" - e.g. status BadUserAccessDenied -, "steps").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
JS_DIR = REPO / "tests" / "opcua_js"
CLIENT = JS_DIR / "client.mjs"
RESULT_MARKER = "@@RESULT@@ "


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def node_opcua_missing() -> str | None:
    """Why node-opcua cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node (Node.js 20) is not installed"
    for package in ("node-opcua-client", "node-opcua-certificate-manager"):
        if not (JS_DIR / "node_modules" / package / "package.json").is_file():
            return (f"{package} is not installed in {JS_DIR / 'node_modules'}: "
                    "run .ci/install-node-tests")
    return None


def require_node_opcua() -> None:
    """Skip the calling test without node-opcua; in CI fail instead."""
    missing = node_opcua_missing()
    if missing is None:
        return
    if _ci():
        pytest.fail(f"CI must install node-opcua before the tests: {missing}", pytrace=False)
    pytest.skip(missing)


def run_node_opcua(plan: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Run `plan` with tests/opcua_js/client.mjs and return its JSON result.

    Skips (fails in CI) without node-opcua. `timeout` bounds the whole run; the plan's own
    "timeout" defaults to a little less so the client reports before it is killed.
    """
    require_node_opcua()
    plan = {"timeout": max(1.0, timeout - 5.0), **plan}
    try:
        completed = subprocess.run(
            ["node", str(CLIENT)], input=json.dumps(plan), capture_output=True, text=True,
            cwd=JS_DIR, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"node-opcua client did not finish in {timeout} s; "
                             f"stdout:\n{exc.stdout!r}\nstderr:\n{exc.stderr!r}") from exc
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER):])
            return result
    raise AssertionError(f"node-opcua client printed no result (exit {completed.returncode});"
                         f"\nstdout:\n{completed.stdout[-4000:]}\nstderr:\n{completed.stderr[-4000:]}")


SUBSCRIBED_MARKER = "@@SUBSCRIBED@@ "


class StreamingClient:
    """A node-opcua client running a plan in the background: the test acts (restarts a
    server, writes values) once its items exist, then reads the result. Stopped by the test
    (`close`), whatever happens."""

    def __init__(self, plan: dict[str, Any], timeout: float) -> None:
        require_node_opcua()
        self.timeout = timeout
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            ["node", str(CLIENT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=JS_DIR)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"timeout": max(1.0, timeout - 5.0), **plan}))
        self.process.stdin.close()
        self.process.stdin = None  # (communicate() would flush it)

    def wait_subscribed(self) -> None:
        """Until the client says its monitored items exist (or it ended without them)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith(SUBSCRIBED_MARKER):
                return
        raise AssertionError(f"node-opcua never subscribed: {''.join(self.lines)[-3000:]}")

    def result(self) -> dict[str, Any]:
        """The plan's result, once the client ends (within its timeout)."""
        try:
            out, err = self.process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            self.close()
            raise AssertionError(f"node-opcua did not finish in {self.timeout} s") from exc
        for line in [*self.lines, *out.splitlines()]:
            if line.startswith(RESULT_MARKER):
                found: dict[str, Any] = json.loads(line[len(RESULT_MARKER):])
                return found
        raise AssertionError(f"node-opcua printed no result (exit {self.process.returncode})"
                             f"\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
