"""axe-core (from npm, tests/browser_js) run in a Playwright page: its serious and critical
accessibility violations, in words.

The page's security policy forbids inline scripts, so the checks run in a browser context
made with `bypass_csp=True` (`context_options()`); the page itself is unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

AXE = Path(__file__).parent / "browser_js" / "node_modules" / "axe-core" / "axe.min.js"
MISSING = f"{AXE} is missing: run .ci/install-node-tests"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
SEVERE = ("serious", "critical")


def context_options() -> dict[str, Any]:
    """Options of a browser context axe can run in."""
    return {"bypass_csp": True}


def severe_violations(page: Any) -> list[str]:
    """Each serious or critical violation on the page as one line: rule, impact, the first
    few elements and what axe says to fix."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("""async () => {
        const result = await window.axe.run(document, { resultTypes: ["violations"] });
        return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ") + ": "
                + (n.failureSummary || "").replace(/\\s+/g, " ").slice(0, 200)) }));
    }""")
    return [f"{v['id']} ({v['impact']}): {v['help']} -- " + " | ".join(v["nodes"])
            for v in found if v["impact"] in SEVERE]
