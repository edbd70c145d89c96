"""The web page in a real browser (Debian's Chromium driven by Playwright) against one real
`python -m mes` process with a mock printer.

One server and one browser serve the whole module (starting them is the slow part); each
test uses fresh browser contexts (cookie jars). Screenshots go to $MES_TEST_ARTIFACTS (or a
temporary directory) as dashboard-*.png.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import axe
from tests.cluster import ServerProcess
from tests.farm_helpers import GCODE
from tests.polling import wait_for
from tests.test_gcode_meta import thumbnail_block, tiny_png
from tests.webhook_receiver import webhook_receiver

CHROMIUM = "/usr/bin/chromium"
MISSING = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
# Skipped without the browser, except in CI (.ci/run installs it): there it fails.
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not IN_CI, reason=MISSING)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect

PASSWORD = "print-farm-password"
SPOOL = "pla-black"
# A sliced file with its picture (64 x 64), as PrusaSlicer writes one.
SLICED = "\n".join([*thumbnail_block(tiny_png(64, 64), "64x64"), ""]).encode() + GCODE
PRINTER = "mk4-1"
# A mock print takes MOCK_PRINTER_JOB_TIME ticks of MOCK_PRINTER_INTERVAL seconds (after 3
# ticks of heating): 12 s, long enough to see it run on the page, short enough for a test.
MOCK_TICK = 0.5
JOB_TICKS = 24
WAIT_MS = 60_000
MAX_UPLOAD_MB = 2


class _Snapshot(http.server.BaseHTTPRequestHandler):
    """A webcam's snapshot on loopback (64 x 64 PNG); counts the requests."""

    served = 0

    def do_GET(self) -> None:  # the handler API names it
        _Snapshot.served += 1
        body = tiny_png(64, 64)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def camera_url() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Snapshot)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/snapshot.png"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, camera_url: str
           ) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("dashboard")
    node = ServerProcess(0, base, {
        "MOCK_PRINTER_JOB_TIME": str(JOB_TICKS), "MOCK_PRINTER_INTERVAL": str(MOCK_TICK),
        "PRINTER_WORKER_INTERVAL": "0.2", "REQUIRE_APPROVAL": "true",
        "AUTO_CLEAR_BED": "false", "MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        # Where the event stream exists: a keep-alive (and its token check) every second.
        "SSE_KEEPALIVE": "1"})
    try:
        node.start()
        wait_for(node.admin_ready, 90, "the server to be ready and its admin made")
        _farm(node, camera_url)
        yield node
    finally:
        node.stop()
        node.client.close()


def _ok(response: Any) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


def _farm(node: ServerProcess, camera_url: str) -> None:
    api = node.client
    _ok(api.post("/filaments", json={"id": SPOOL, "type": "PLA", "color": "black",
                                     "total_weight_in_grams": 1000}))
    _ok(api.post("/printers", json={"id": PRINTER, "api": "Mock", "url": "http://mock-1:5000",
                                    "filament_id": SPOOL, "group": "lab",
                                    "camera_url": camera_url}))
    for name, role in (("student", "user"), ("staff", "operator")):
        _ok(api.post("/users", json={"name": name, "role": role, "password": PASSWORD}))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"CI must install Chromium before the tests. {MISSING}", pytrace=False)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("MES_TEST_ARTIFACTS")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _url(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.http_port}/"


def _page(browser: Any, width: int = 1280, height: int = 900) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(15_000)
    # The page asks in its own dialog: a browser-native one is refused (its action fails).
    page.on("dialog", lambda dialog: dialog.dismiss())
    return page


def _sign_in(page: Any, server: ServerProcess, name: str) -> None:
    page.goto(_url(server))
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#whoami")).to_contain_text(name)


def _until(page: Any, done: Any, seconds: float, what: str) -> None:
    """Poll `done` with a deadline, letting Playwright deliver the page's events meanwhile."""
    for _ in range(int(seconds * 10)):
        if done():
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {what}")


def _confirm(page: Any, question: str, yes: str) -> None:
    """The page's own dialog asks `question`; answer with its `yes` button."""
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#ask-text")).to_have_text(question)
    dialog.get_by_role("button", name=yes, exact=True).click()
    expect(dialog).to_be_hidden()


# The browser's notifications, recorded instead of shown (headless Chromium shows none): what
# the page asks to show is tested, not the desktop's display of it.
FAKE_NOTIFICATIONS = """
window.__notes = [];
window.Notification = class {
  constructor(title, options) { window.__notes.push({ title, body: options && options.body }); }
  static get permission() { return "granted"; }
  static requestPermission() { return Promise.resolve("granted"); }
};
"""


def _staff_at_rest(browser: Any, server: ServerProcess) -> Any:
    """An operator's live page on a farm at rest (no job, the printer idle, its bed clear)."""
    _farm_at_rest(server.client)
    page = _page(browser)
    _sign_in(page, server, "staff")
    _live(page)
    return page


def _live(page: Any) -> None:
    """The page is live: by the event stream, or by polling where the server has none."""
    expect(page.locator("#live")).to_have_attribute("data-mode", re.compile("events|polling"))


def test_a_wrong_password_shows_a_readable_message(
        browser: Any, server: ServerProcess, shots: Path) -> None:
    page = _page(browser)
    page.goto(_url(server))
    page.get_by_label("User name").fill("student")
    page.get_by_label("Password", exact=True).fill("not-the-password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#sign-in-error")).to_have_text("Wrong user name or password")
    expect(page.locator("#app")).to_be_hidden()
    page.screenshot(path=shots / "dashboard-wrong-password.png")
    page.context.close()


BUSY_RECORDER = """
window.__busy = [];
new MutationObserver((changes) => {
  for (const c of changes) {
    const busy = c.target.getAttribute("aria-busy") === "true";
    if (busy) window.__busy.push(c.target.textContent.trim());
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["aria-busy"] });
"""


def test_signing_in_and_actions_show_they_are_busy(browser: Any, server: ServerProcess) -> None:
    """The sign-in button, and an action's button, say they are busy (aria-busy, disabled)
    while their request runs, and are usable again after."""
    page = _page(browser)
    page.add_init_script(BUSY_RECORDER)
    _sign_in(page, server, "staff")
    sign_out = page.get_by_role("button", name="Sign out")
    expect(sign_out).to_be_visible()
    assert "Sign in" in page.evaluate("window.__busy"), page.evaluate("window.__busy")
    page.get_by_role("tab", name="Accounts").click()
    page.locator("#token-new").get_by_label("Token name").fill("busy test")
    page.locator("#token-new").get_by_role("button", name="Create token").click()
    revoke = page.get_by_role("button", name="Revoke token busy test")
    revoke.click()
    _confirm(page, "Revoke token busy test? Programs using it stop working.", "Revoke")
    expect(page.locator("#message")).to_contain_text("Token busy test revoked.")
    assert "Revoke" in page.evaluate("window.__busy"), page.evaluate("window.__busy")
    expect(page.locator("button[aria-busy=true]")).to_have_count(0)
    page.context.close()


def test_signing_in_with_an_api_token_keeps_the_token_after_sign_out(
        browser: Any, server: ServerProcess) -> None:
    student_id = next(u["id"] for u in server.every("/users") if u["name"] == "student")
    token = _ok(server.client.post("/tokens", json={"name": "laptop", "user_id": student_id}))
    page = _page(browser)
    page.goto(_url(server))
    page.get_by_text("Sign in with an API token instead").click()
    page.get_by_label("API token").fill(token["token"])
    page.get_by_role("button", name="Sign in with token").click()
    expect(page.locator("#whoami")).to_have_text("student · user")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#sign-in-error")).to_have_text("You are signed out.")
    again = httpx.get(f"{_url(server)}api/v1/session",
                      headers={"Authorization": f"Bearer {token['token']}"})
    assert again.status_code == 200 and again.json()["user"]["name"] == "student"
    page.context.close()


def test_a_student_prints_an_operator_approves_and_clears_the_bed_all_live(
        browser: Any, server: ServerProcess, shots: Path) -> None:
    student = _page(browser)
    student.add_init_script(FAKE_NOTIFICATIONS)
    _sign_in(student, server, "student")
    _live(student)
    # The printer grid, without any operator button for a user.
    card = student.locator(f'.card[data-id="{PRINTER}"]')
    expect(card).to_contain_text("PLA black")
    expect(card.locator(".meta .kind")).to_have_text(" · mock printer")  # what drives it
    # The camera's picture, through the node (never from the camera itself), refreshed.
    camera = card.locator("img.camera")
    expect(camera).to_have_attribute("src", re.compile(f"^/api/v1/printers/{PRINTER}/camera"))
    _until(student, lambda: camera.evaluate("img => img.complete && img.naturalWidth") == 64,
           15, "the camera's picture")
    first = camera.get_attribute("src")
    _until(student, lambda: camera.get_attribute("src") != first, 15,
           "the camera's picture to be read again")
    _until(student, lambda: _Snapshot.served >= 2, 15, "the node to ask the camera again")
    expect(card.locator("button")).to_have_count(0)

    # Submit a print with a G-code upload: it waits for an operator (REQUIRE_APPROVAL).
    student.get_by_role("tab", name="Jobs").click()
    student.get_by_role("button", name="Tell me when my prints end").click()
    expect(student.locator("#notify-state")).to_contain_text("A notification comes")
    student.locator('#job-form input[type="file"]').set_input_files(
        files=[{"name": "cube.gcode", "mimeType": "text/plain", "buffer": SLICED}])
    student.locator("#spool-select").select_option(SPOOL)
    student.get_by_label("Weight (g)").fill("12")
    student.get_by_role("button", name="Submit", exact=True).click()
    expect(student.locator("#message")).to_contain_text("waits for an operator's approval")
    row = student.locator("#queue-table tbody tr[data-id]")
    expect(row).to_have_count(1)
    job_id = row.get_attribute("data-id")
    expect(row.locator("td.status")).to_have_text("Queued")
    expect(row).to_contain_text("approval")
    expect(row.get_by_role("button", name="Approve")).to_have_count(0)
    expect(row.get_by_role("button", name="Cancel")).to_have_count(1)  # their own job
    mine = student.locator(f'#mine .mine-job[data-id="{job_id}"]')
    expect(mine.locator(".state")).to_have_text("Waiting")
    expect(mine.locator(".why")).to_have_text("waits for an operator to approve it")
    student.screenshot(path=shots / "dashboard-student-queued.png", full_page=True)

    # An operator approves it on their page.
    operator = _page(browser)
    _sign_in(operator, server, "staff")
    operator.get_by_role("tab", name="Jobs").click()
    queued = operator.locator(f'#queue-table tr[data-id="{job_id}"]')
    operator.screenshot(path=shots / "dashboard-operator-approval.png", full_page=True)
    queued.get_by_role("button", name="Approve").click()
    expect(operator.locator("#message")).to_contain_text(f"Job {job_id} approved")

    # The operator's grid shows the print running, with the operator's controls.
    operator.get_by_role("tab", name="Printers").click()
    running = operator.locator(f'.card[data-id="{PRINTER}"]')
    expect(running).to_have_attribute("data-state", "printing", timeout=WAIT_MS)
    expect(running).to_contain_text("cube.gcode")
    expect(running).to_contain_text("student")
    # The slicer's picture of the print, fetched through the node.
    picture = running.locator("img.thumb")
    expect(picture).to_be_visible()
    assert picture.evaluate("img => img.complete && img.naturalWidth") == 64
    expect(running.get_by_role("button", name="Pause")).to_be_visible()
    expect(running.get_by_role("button", name="Cancel")).to_be_visible()
    operator.screenshot(path=shots / "dashboard-operator-printing.png", full_page=True)

    # The student's own prints: printing on the lab's printer, with the time it should end.
    expect(mine.locator(".state")).to_have_text("Printing", timeout=WAIT_MS)
    expect(mine.locator(".where")).to_have_text(f"On printer {PRINTER} (lab)")
    expect(mine.locator(".finish")).to_contain_text("left · done about", timeout=WAIT_MS)
    student.screenshot(path=shots / "dashboard-student-my-prints.png", full_page=True)

    # The student's page sees the job reach Done without reloading.
    done = student.locator(f'#history-table tr[data-id="{job_id}"] td.status')
    expect(done).to_have_text("Done", timeout=WAIT_MS)
    expect(mine.locator(".state")).to_have_text("Done")
    expect(mine.locator(".why")).to_have_text("Printed.")
    _until(student, lambda: student.evaluate("window.__notes.length") > 0, 15,
           "the notification that the print ended")
    assert student.evaluate("window.__notes") == [
        {"title": "cube.gcode is printed", "body": "Printed."}]
    student.screenshot(path=shots / "dashboard-student-done.png", full_page=True)

    # AUTO_CLEAR_BED is off: the bed waits; the student sees it, but no button.
    student.get_by_role("tab", name="Printers").click()
    student_card = student.locator(f'.card[data-id="{PRINTER}"]')
    expect(student_card.locator(".bed-flag")).to_be_visible(timeout=WAIT_MS)
    expect(student_card).to_have_attribute("data-state", "bed_to_clear")  # not a free "idle"
    expect(student_card.locator(".state")).to_have_text("bed to clear")
    expect(student_card.locator("button")).to_have_count(0)
    clear = running.get_by_role("button", name="Clear bed")
    expect(clear).to_be_visible(timeout=WAIT_MS)
    operator.screenshot(path=shots / "dashboard-operator-bed.png", full_page=True)
    clear.click()
    expect(running.locator(".bed-flag")).to_have_count(0)
    expect(running).not_to_have_attribute("data-state", "bed_to_clear")
    expect(student_card.locator(".bed-flag")).to_have_count(0, timeout=WAIT_MS)
    assert _ok(server.client.get(f"/printers/{PRINTER}"))["bed_clear"] is True

    # Signing out ends the session: the cookie's token is revoked.
    student.get_by_role("button", name="Sign out").click()
    expect(student.get_by_label("User name")).to_be_visible()
    assert student.request.get(_url(server) + "api/v1/session").status == 401
    student.context.close()
    operator.context.close()


def test_spools_cluster_and_utilisation_tabs(
        browser: Any, server: ServerProcess, shots: Path) -> None:
    page = _page(browser)
    _sign_in(page, server, "staff")
    page.get_by_role("tab", name="Spools").click()
    spool = page.locator(f'#spool-table tr[data-id="{SPOOL}"]')
    expect(spool.locator("td.remaining")).to_have_text(re.compile(r"^\d+$"))
    page.get_by_role("tab", name="Cluster").click()
    expect(page.locator("#cluster-summary")).to_contain_text("is leader")
    expect(page.locator("#cluster-table tbody tr")).to_have_count(1)
    # The single node drives the farm's printer under a live lease.
    expect(page.locator("#cluster-table td.drives")).to_contain_text(PRINTER)
    expect(page.locator("#cluster-table td.lease")).to_have_text("live")
    expect(page.locator("#cluster-undriven")).to_have_text("Every printer is driven by a node.")
    page.screenshot(path=shots / "dashboard-cluster.png", full_page=True)
    page.get_by_role("tab", name="Utilisation").click()
    # Either the chart (GET /api/v1/utilization exists) or a readable note that it does not.
    note = page.locator("#util-note")
    expect(note).to_have_text(re.compile(r"printer|does not offer utilisation reports"))
    if "does not offer" not in note.inner_text():  # the route exists: the printed time shows
        expect(page.locator('#util-chart rect[data-state="printing"]')).to_have_count(1)
        expect(note).to_contain_text("1 done")
    page.screenshot(path=shots / "dashboard-utilization.png", full_page=True)
    page.context.close()


def test_the_page_fits_a_phone(browser: Any, server: ServerProcess, shots: Path) -> None:
    page = _page(browser, 390, 844)
    _sign_in(page, server, "staff")
    expect(page.locator(f'.card[data-id="{PRINTER}"]')).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than a phone"
    page.screenshot(path=shots / "dashboard-phone.png", full_page=True)
    page.context.close()


def test_events_drive_refreshes_and_a_503_is_retried(
        browser: Any, server: ServerProcess) -> None:
    """With an event stream (faked here by the browser), a change re-reads just that printer;
    when the stream answers 503 the page keeps retrying (a bare EventSource would stop)."""
    page = _page(browser)
    served: list[int] = []
    card_reads: list[str] = []

    def events(route: Any) -> None:
        served.append(1)
        # The page may reopen its first stream at once for the grid's printers: both get it.
        if len(served) <= 2:
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=(
                "retry: 100\n\n"
                f'id: 5-0\nevent: change\ndata: {{"entity": "printer", "id": "{PRINTER}", '
                '"change": "updated"}\n\n'))
        else:
            route.fulfill(status=503, headers={"Content-Type": "application/json"},
                          body='{"error": {"code": "no_leader", "message": "x", "field": null}}')

    page.route("**/api/v1/events*", events)
    page.on("request", lambda r: card_reads.append(r.url)
            if "/dashboard/printers?" in r.url and f"id={PRINTER}" in r.url else None)
    _sign_in(page, server, "staff")
    _until(page, lambda: len(card_reads) >= 1, 15, "the page to re-read the changed printer")
    expect(page.locator("#live")).to_have_attribute("data-mode", "retry")
    _until(page, lambda: len(served) >= 4, 30, "the page to retry the stream after 503s")
    page.context.close()


def test_the_event_stream_keeps_a_cookie_session_open(server: ServerProcess) -> None:
    """EventSource sends no header: the stream must accept the session cookie, also at its
    periodic token checks (not end with `reload` as for a revoked token)."""
    base = f"http://127.0.0.1:{server.http_port}/api/v1"
    with httpx.Client(base_url=base, timeout=10.0) as browser_like:
        signed = browser_like.post("/session", json={"name": "staff", "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        lines: list[str] = []
        with browser_like.stream("GET", "/events", params={"telemetry": "false"}) as stream:
            if stream.status_code == 404:
                pytest.skip("this build has no GET /api/v1/events")
            assert stream.status_code == 200
            for line in stream.iter_lines():
                lines.append(line)
                if sum(x.startswith(":") for x in lines) >= 3 or "event: reload" in lines:
                    break
        assert "event: reload" not in lines, lines


def test_the_api_docs_page_runs_under_its_security_policy(
        browser: Any, server: ServerProcess) -> None:
    page = _page(browser)
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    answer = page.goto(_url(server) + "api/v1/docs")
    assert answer is not None and "unsafe-inline" in answer.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("mes")
    expect(page.locator(".opblock-tag-section").first).to_be_visible()
    assert refused == [], refused


def _farm_at_rest(api: httpx.Client) -> None:
    """No job queued or running, the printer idle and its bed clear (whatever ran before)."""
    def at_rest() -> bool:
        active = [j for status in ("Queued", "Running")
                  for j in _ok(api.get("/print_jobs", params={"status": status}))]
        for job in active:
            api.post(f"/print_jobs/{job['id']}/status", params={"status": "Canceled"})
        printer = _ok(api.get(f"/printers/{PRINTER}"))
        if not printer["bed_clear"]:
            api.post(f"/printers/{PRINTER}/bed_cleared")
        status = _ok(api.get(f"/printers/{PRINTER}/status"))
        return not active and printer["bed_clear"] and status.get("state") == "idle"
    wait_for(at_rest, WAIT_MS / 1000, "the printer idle with a clear bed and no job")


def test_a_filtered_grid_follows_changes_and_banners_do_not_go_stale(
        browser: Any, server: ServerProcess, shots: Path) -> None:
    """Filtered by state, printers leave and join the page as their state changes (and the
    filter stays); a banner goes when it is no longer true; messages are in plain words."""
    api = server.client
    page = _staff_at_rest(browser, server)
    state = page.locator('#printer-filter select[name="state"]')
    card = page.locator(f'.card[data-id="{PRINTER}"]')
    state.select_option("idle")
    expect(card).to_have_count(1, timeout=WAIT_MS)
    # A print starts: the printer is no longer idle and leaves the filtered page.
    _ok(api.post("/print_jobs", data={"filament_id": SPOOL, "print_weight_in_grams": "5"},
                 files={"file": ("filtered.gcode", GCODE)}))
    expect(card).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#printer-grid")).to_contain_text("No printers match.")
    expect(state).to_have_value("idle")
    # It ends and its bed waits: it joins the "bed to clear" page, and leaves it once cleared.
    state.select_option("bed_to_clear")
    expect(card).to_have_count(1, timeout=WAIT_MS)
    card.get_by_role("button", name="Clear bed").click()
    expect(card).to_have_count(0, timeout=WAIT_MS)
    message = page.locator("#message")
    expect(message).to_contain_text(f"Bed of {PRINTER} marked clear")
    page.screenshot(path=shots / "dashboard-filtered.png", full_page=True)

    # A success banner belongs to its tab.
    page.get_by_role("tab", name="Jobs").click()
    expect(message).to_be_hidden()
    # "The server did not answer" goes as soon as the server answers again.
    page.route("**/api/v1/print_jobs?*", lambda route: route.abort())
    page.locator('#job-filter select[name="since"]').select_option("3600")
    expect(message).to_contain_text("did not answer")
    page.unroute("**/api/v1/print_jobs?*")
    page.locator('#job-filter select[name="since"]').select_option("86400")
    expect(message).to_be_hidden()

    # A refusal in the page's words: the form's label, not the API's field name.
    page.locator('#job-form input[type="file"]').set_input_files(
        files=[{"name": "unsliced.gcode", "mimeType": "text/plain", "buffer": GCODE}])
    page.locator("#spool-select").select_option(SPOOL)
    page.get_by_role("button", name="Submit", exact=True).click()
    expect(message).to_contain_text("Weight is required: the file does not say")
    assert "print_weight_in_grams" not in message.inner_text()
    # Why a job waits, in plain words: no API paths or field names.
    _ok(api.post("/filaments", json={"id": "petg-blue", "type": "PETG", "color": "blue",
                                     "total_weight_in_grams": 500}))
    waiting = _ok(api.post("/print_jobs", json={"filament_id": "petg-blue", "filepath": "x",
                                                "print_weight_in_grams": 5,
                                                "file_id": _ok(api.get("/files"))[0]["id"]}))
    row = page.locator(f'#queue-table tr[data-id="{waiting["id"]}"]')
    expect(row).to_contain_text("no printer has spool 'petg-blue' loaded: load it in a "
                                "printer, or choose a printer for the job", timeout=WAIT_MS)
    assert not re.search(r"`|POST |_id\b", row.inner_text()), row.inner_text()
    # Cancel asks in the page's own dialog: "Keep it" changes nothing.
    row.get_by_role("button", name="Cancel").click()
    _confirm(page, f"Cancel job {waiting['id']}?", "Keep it")
    assert _ok(api.get(f"/print_jobs/{waiting['id']}"))["status"] == "Queued"
    row.get_by_role("button", name="Cancel").click()
    _confirm(page, f"Cancel job {waiting['id']}?", "Cancel the job")
    expect(message).to_contain_text(f"Job {waiting['id']} canceled.")
    assert _ok(api.get(f"/print_jobs/{waiting['id']}"))["status"] == "Canceled"

    # A student's job waits for approval; the operator rejects it, with a reason typed in
    # the page's dialog.
    student = next(u["id"] for u in _ok(api.get("/users")) if u["name"] == "student")
    token = _ok(api.post("/tokens", json={"name": "reject-test", "user_id": student}))["token"]
    submitted = httpx.post(f"http://127.0.0.1:{server.http_port}/api/v1/print_jobs",
                           headers={"Authorization": f"Bearer {token}"},
                           data={"filament_id": SPOOL, "print_weight_in_grams": "5"},
                           files={"file": ("to-reject.gcode", GCODE)}, timeout=30)
    assert submitted.status_code == 201, submitted.text
    rejected = page.locator(f'#queue-table tr[data-id="{submitted.json()["id"]}"]')
    rejected.get_by_role("button", name="Reject").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Reason")).to_have_value("rejected by an operator")
    dialog.get_by_label("Reason").fill("too tall for our printers")
    dialog.get_by_role("button", name="Reject", exact=True).click()
    expect(message).to_contain_text("rejected.")
    ended = _ok(api.get(f"/print_jobs/{submitted.json()['id']}"))["ended"]
    assert (ended["kind"], ended["message"]) == (
        "rejected", "Rejected by staff: too tall for our printers"), ended
    page.context.close()


def test_uploads_show_progress_and_the_limit_and_a_job_prints_again(
        browser: Any, server: ServerProcess, shots: Path) -> None:
    """A file over the node's limit is refused by the page before anything is sent; an
    upload shows its progress; an ended job is printed again with one click."""
    api = server.client
    _farm_at_rest(api)
    page = _page(browser)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url)
            if r.method == "POST" and "/print_jobs" in r.url else None)
    _sign_in(page, server, "staff")
    page.get_by_role("tab", name="Jobs").click()
    page.locator("#spool-select").select_option(SPOOL)
    message = page.locator("#message")
    too_big = GCODE * (3 * 2**20 // len(GCODE) + 1)
    page.locator('#job-form input[type="file"]').set_input_files(
        files=[{"name": "huge.gcode", "mimeType": "text/plain", "buffer": too_big}])
    page.get_by_label("Weight (g)").fill("5")
    page.get_by_role("button", name="Submit", exact=True).click()
    expect(message).to_contain_text(
        f"huge.gcode is {len(too_big) / 2**20:.1f} MiB: this farm takes files up to "
        f"{MAX_UPLOAD_MB:.1f} MiB")
    assert posts == [], posts  # said before sending

    # Under the limit: sent with its progress shown, up to all of it.
    big = GCODE * (int(1.5 * 2**20) // len(GCODE))
    page.locator('#job-form input[type="file"]').set_input_files(
        files=[{"name": "big.gcode", "mimeType": "text/plain", "buffer": big}])
    page.get_by_label("Weight (g)").fill("5")
    page.get_by_role("button", name="Submit", exact=True).click()
    expect(message).to_contain_text("(big.gcode) submitted", timeout=WAIT_MS)
    assert page.locator("#upload-progress").get_attribute("data-seen") == "100"
    expect(page.locator("#upload-progress")).to_be_hidden()
    first = _ok(api.get("/print_jobs", params={"order": "newest", "limit": 1}))[0]
    assert first["filepath"] == "big.gcode"

    # Once it ended, one click prints it again: same file, spool and weight, a new job.
    ended = page.locator(f'#history-table tr[data-id="{first["id"]}"]')
    expect(ended.locator("td.status")).to_have_text("Done", timeout=WAIT_MS)
    expect(ended.locator("td.ended-at")).not_to_have_text("")
    expect(ended.locator("td.took")).to_have_text(re.compile(r"\d+ s$"))
    # The history searched by file name, and exported as shown.
    search = page.locator('#job-filter input[name="q"]')
    search.fill("big.gcode")
    search.press("Enter")
    expect(page.locator("#history-export")).to_have_attribute("href", re.compile("q=big.gcode"))
    expect(page.locator("#history-table tbody tr[data-id]")).to_have_count(1)
    export = page.locator("#history-export").get_attribute("href")
    assert export is not None and "q=big.gcode" in export, export
    exported = page.request.get(_url(server).rstrip("/") + export)
    assert exported.status == 200
    lines = exported.text().splitlines()
    assert lines[0].startswith("id,file,status,outcome") and len(lines) == 2, lines
    assert f"{first['id']},big.gcode,Done,done" in lines[1], lines
    ended.get_by_role("button", name="Print again").click()
    expect(message).to_contain_text("(big.gcode) submitted again")
    again = _ok(api.get("/print_jobs", params={"order": "newest", "limit": 1}))[0]
    assert again["id"] != first["id"]
    assert [again[k] for k in ("file_id", "filament_id", "print_weight_in_grams")] == [
        first[k] for k in ("file_id", "filament_id", "print_weight_in_grams")]
    expect(page.locator(f'#queue-table tr[data-id="{again["id"]}"], '
                        f'#running-table tr[data-id="{again["id"]}"]')).to_have_count(1)
    page.screenshot(path=shots / "dashboard-print-again.png", full_page=True)
    page.context.close()
    _farm_at_rest(api)


def test_the_overview_counts_tiles_and_triage(
        browser: Any, server: ServerProcess, shots: Path) -> None:
    """The overview's counts and tiles follow the farm live; a count filters the grid; the
    needs-attention filter shows how long each printer has waited; search finds a printer
    by its running job's file."""
    api = server.client
    page = _staff_at_rest(browser, server)
    counts = page.locator("#overview-counts")
    tile = page.locator(f'#tiles .tile[data-id="{PRINTER}"]')
    expect(page.locator("#overview-total")).to_have_text("1 printer")
    expect(counts.locator('[data-state="idle"]')).to_have_text("idle 1")
    expect(counts.locator('[data-state="attention"]')).to_have_text("needs attention 0")
    expect(tile).to_have_attribute("data-state", "idle")
    expect(page.locator('#group-table tr[data-group="lab"]')).to_contain_text("1")

    _ok(api.post("/print_jobs", data={"filament_id": SPOOL, "print_weight_in_grams": "5"},
                 files={"file": ("overview-part.gcode", GCODE)}))
    expect(tile).to_have_attribute("data-state", "printing", timeout=WAIT_MS)
    expect(counts.locator('[data-state="printing"]')).to_have_text("printing 1")
    search = page.locator('#printer-filter input[name="q"]')
    search.fill("overview-part")
    search.press("Enter")
    card = page.locator(f'.card[data-id="{PRINTER}"]')
    expect(card).to_have_count(1)
    search.fill("no-such-thing")
    search.press("Enter")
    expect(page.locator("#printer-grid")).to_contain_text("No printers match.")
    search.fill("")
    search.press("Enter")

    # The print ends, the bed waits: the printer needs attention; its count filters the grid.
    expect(tile).to_have_attribute("data-state", "bed_to_clear", timeout=WAIT_MS)
    attention = counts.locator('[data-state="attention"]')
    expect(attention).to_have_text("needs attention 1")
    attention.click()
    expect(page.locator('#printer-filter select[name="state"]')).to_have_value("attention")
    expect(card.locator(".waiting")).to_contain_text("Waiting for")
    page.screenshot(path=shots / "dashboard-overview-attention.png", full_page=True)
    card.get_by_role("button", name="Clear bed").click()
    expect(card).to_have_count(0, timeout=WAIT_MS)
    expect(attention).to_have_text("needs attention 0", timeout=WAIT_MS)
    expect(tile).to_have_attribute("data-state", "idle")
    page.context.close()


def test_bulk_actions_on_every_printer_a_filter_matches(
        browser: Any, server: ServerProcess, shots: Path) -> None:
    """An operator selects every printer of a group (all pages) and pauses, resumes and
    cancels their prints and clears their beds, each with one confirmation naming the
    count; printers the action does not concern are left alone."""
    api = server.client
    _farm_at_rest(api)
    extra = ["bulk-1", "bulk-2", "bulk-3"]
    for n, pid in enumerate(extra):
        _ok(api.post("/printers", json={"id": pid, "api": "Mock", "url": f"http://mock-b{n}:5000",
                                        "filament_id": SPOOL, "group": "bulk"}))
    try:
        # Two of the three print; the third stays idle.
        jobs = [_ok(api.post("/print_jobs", data={
            "filament_id": SPOOL, "printer_id": pid, "print_weight_in_grams": "5"},
            files={"file": (f"{pid}.gcode", GCODE)}))["id"] for pid in extra[:2]]

        def phases(*wanted: str) -> bool:
            return all(_ok(api.get(f"/print_jobs/{j}")).get("phase") in wanted for j in jobs)

        wait_for(lambda: phases("printing"), WAIT_MS / 1000, "both bulk jobs printing")
        page = _page(browser)
        _sign_in(page, server, "staff")
        page.locator('#printer-filter input[name="group"]').fill("bulk")
        page.locator('#printer-filter select[name="limit"]').select_option("24")
        page.locator('#printer-filter input[name="group"]').press("Enter")
        expect(page.locator("#printer-grid .card")).to_have_count(3)
        page.get_by_role("button", name="Select all matching").click()
        expect(page.locator("#bulk-count")).to_have_text("3 printers selected")
        expect(page.get_by_label("Select bulk-3")).to_be_checked()

        page.get_by_role("button", name="Pause selected").click()
        _confirm(page, "Pause 2 prints?", "Pause")
        expect(page.locator("#message")).to_contain_text("Asked 2 printers to pause.")
        wait_for(lambda: phases("paused"), WAIT_MS / 1000, "both bulk jobs paused")
        page.get_by_role("button", name="Resume selected").click()
        _confirm(page, "Resume 2 prints?", "Resume")
        expect(page.locator("#message")).to_contain_text("Asked 2 printers to resume.")
        wait_for(lambda: phases("printing"), WAIT_MS / 1000, "both bulk jobs printing again")
        page.get_by_role("button", name="Cancel selected prints").click()
        _confirm(page, "Cancel 2 prints? This cannot be undone.", "Cancel prints")
        expect(page.locator("#message")).to_contain_text("2 prints canceled.")
        assert [_ok(api.get(f"/print_jobs/{j}"))["status"] for j in jobs] == ["Canceled"] * 2

        # Their beds wait (they were printing); the idle third's is clear already.
        page.get_by_role("button", name="Clear selected beds").click()
        _confirm(page, "Mark the beds of 2 printers clear?", "Clear beds")
        expect(page.locator("#message")).to_contain_text("Beds of 2 printers marked clear.")
        assert all(_ok(api.get(f"/printers/{pid}"))["bed_clear"] for pid in extra)
        page.screenshot(path=shots / "dashboard-bulk.png", full_page=True)
        page.get_by_role("button", name="Pause selected").click()  # nothing prints now
        expect(page.locator("#message")).to_contain_text(
            "None of the 3 selected printers is one of the printing printers.")
        page.get_by_role("button", name="Move selected to a group").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.locator("#ask-text")).to_have_text("Move 3 printers to which group?")
        dialog.get_by_label("Group").fill("north")
        dialog.get_by_role("button", name="Move", exact=True).click()
        expect(page.locator("#message")).to_contain_text("3 printers moved to group north.")
        assert {_ok(api.get(f"/printers/{pid}"))["group"] for pid in extra} == {"north"}
        page.context.close()
    finally:
        for pid in extra:
            api.delete(f"/printers/{pid}")


VIEWS = ["printers", "jobs", "spools", "cluster", "utilization", "accounts"]


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)],
                         ids=["desktop", "phone"])
@pytest.mark.parametrize("who", ["student", "staff"])
def test_every_view_has_no_serious_accessibility_violation(
        browser: Any, server: ServerProcess, shots: Path, who: str, width: int,
        height: int, theme: str) -> None:
    """axe-core on the sign-in page and on every tab the role sees, at desktop and phone
    width, in light and dark mode (the page's own toggle; the system's choice is the other
    way, so the toggle is what counts): no serious or critical violation."""
    if not axe.AXE.exists():
        if axe.IN_CI:
            pytest.fail(f"CI installs axe-core first. {axe.MISSING}", pytrace=False)
        pytest.skip(axe.MISSING)
    context = browser.new_context(viewport={"width": width, "height": height},
                                  color_scheme="light" if theme == "dark" else "dark",
                                  **axe.context_options())
    page = context.new_page()
    page.set_default_timeout(15_000)
    found: dict[str, list[str]] = {}
    page.goto(_url(server))
    expect(page.get_by_label("User name")).to_be_visible()
    toggle = page.locator("#theme")
    if page.evaluate("document.documentElement.dataset.theme") != theme:
        toggle.click()
    expect(page.locator("html")).to_have_attribute("data-theme", theme)
    expect(toggle).to_have_attribute("aria-pressed", str(theme == "dark").lower())
    found["sign-in"] = axe.severe_violations(page)
    _sign_in(page, server, who)
    _live(page)
    for view in VIEWS:
        tab = page.locator(f'.tabs [data-tab="{view}"]')
        if not tab.is_visible():
            continue
        tab.click()
        expect(page.locator(f"#tab-{view}")).to_be_visible()
        page.wait_for_load_state("networkidle")
        found[view] = axe.severe_violations(page)
        page.screenshot(path=shots / f"dashboard-{who}-{view}-{width}-{theme}.png",
                        full_page=True)
    context.close()
    problems = {view: lines for view, lines in found.items() if lines}
    assert not problems, "\n".join(f"{view}: {line}" for view, lines in problems.items()
                                   for line in lines)


def test_operators_manage_printers_and_spools_on_the_page(
        browser: Any, server: ServerProcess, shots: Path) -> None:
    """An operator adds, changes (spool unloaded, a write-only key) and deletes a printer and
    adds, refills and deletes a spool through the page's forms; a refused value is said in
    the form, which stays open; a student sees none of these controls."""
    api = server.client
    page = _page(browser)
    _sign_in(page, server, "staff")
    page.get_by_role("button", name="Add a printer").click()
    form = page.locator("#printer-dialog")
    expect(form).to_be_visible()
    form.get_by_label("Printer id").fill("lab-new")
    form.get_by_label("Make").fill("Prusa")
    form.get_by_label("Model").fill("MK3S")
    form.get_by_label("Kind").select_option("Mock")
    form.get_by_label("Address", exact=True).fill("http://mock-new:5000")
    form.get_by_label("Group").fill("annex")
    form.get_by_label("Spool loaded").select_option(SPOOL)
    page.screenshot(path=shots / "dashboard-printer-form.png", full_page=True)
    form.get_by_role("button", name="Save").click()
    expect(page.locator("#message")).to_contain_text("Printer lab-new added.")
    expect(form).to_be_hidden()
    created = _ok(api.get("/printers/lab-new"))
    assert [created[k] for k in ("company", "model", "api", "url", "group", "filament_id",
                                 "worker", "has_api_key")] == [
        "Prusa", "MK3S", "Mock", "http://mock-new:5000", "annex", SPOOL, True, False]

    card = page.locator('.card[data-id="lab-new"]')
    card.get_by_role("button", name="Edit printer lab-new").click()
    expect(form.get_by_label("Group")).to_have_value("annex")
    form.get_by_label("Group").fill("lab")
    form.get_by_label("Spool loaded").select_option("")
    form.get_by_label("API key").fill("a-secret-key-123")
    form.get_by_role("button", name="Save").click()
    expect(page.locator("#message")).to_contain_text("Printer lab-new saved.")
    changed = _ok(api.get("/printers/lab-new"))
    assert (changed["group"], changed["filament_id"], changed["has_api_key"]) == (
        "lab", None, True)
    assert "a-secret-key-123" not in page.content()  # write-only: never shown back

    # A refused value: said in the form, which stays open; nothing changes.
    card.get_by_role("button", name="Edit printer lab-new").click()
    form.get_by_label("Camera address").fill("ftp://camera")
    form.get_by_role("button", name="Save").click()
    expect(form.locator("#printer-error")).to_be_visible()
    expect(form.locator("#printer-error")).not_to_contain_text("camera_url")
    expect(form).to_be_visible()
    form.get_by_role("button", name="Go back").click()
    assert _ok(api.get("/printers/lab-new"))["camera_url"] is None

    card.get_by_role("button", name="Edit printer lab-new").click()
    form.get_by_role("button", name="Delete printer").click()
    _confirm(page, "Delete printer lab-new? Its jobs stay in the history.", "Delete printer")
    expect(page.locator("#message")).to_contain_text("Printer lab-new deleted.")
    assert api.get("/printers/lab-new").status_code == 404

    # Spools: added, which printer holds which, refilled, deleted.
    page.get_by_role("tab", name="Spools").click()
    page.locator("#spool-box summary").click()
    spool_form = page.locator("#spool-form")
    spool_form.get_by_label("Spool id").fill("petg-green")
    spool_form.get_by_label("Material").select_option("PETG")
    spool_form.get_by_label("Colour").fill("green")
    spool_form.get_by_label("Total (g)").fill("750")
    spool_form.get_by_role("button", name="Add spool").click()
    expect(page.locator("#message")).to_contain_text("Spool petg-green added.")
    row = page.locator('#spool-table tr[data-id="petg-green"]')
    expect(row.locator("td.remaining")).to_have_text("750")
    expect(page.locator(f'#spool-table tr[data-id="{SPOOL}"] td.holders')).to_have_text(PRINTER)
    row.get_by_role("button", name="Set remaining").click()
    page.get_by_role("dialog").get_by_label("Remaining (g)").fill("500")
    page.get_by_role("dialog").get_by_role("button", name="Save").click()
    expect(row.locator("td.remaining")).to_have_text("500")
    assert _ok(api.get("/filaments/petg-green"))["remaining_weight_in_grams"] == 500
    page.screenshot(path=shots / "dashboard-spools-managed.png", full_page=True)
    row.get_by_role("button", name="Delete spool petg-green").click()
    _confirm(page, "Delete spool petg-green?", "Delete spool")
    expect(row).to_have_count(0)
    assert api.get("/filaments/petg-green").status_code == 404
    page.context.close()

    student = _page(browser)
    _sign_in(student, server, "student")
    expect(student.locator(f'.card[data-id="{PRINTER}"]')).to_be_visible()
    expect(student.get_by_role("button", name="Add a printer")).to_have_count(0)
    expect(student.get_by_role("button", name=re.compile("^Edit printer"))).to_have_count(0)
    student.get_by_role("tab", name="Spools").click()
    expect(student.locator("#spool-table tbody tr[data-id]").first).to_be_visible()
    expect(student.locator("#spool-form")).to_be_hidden()
    expect(student.get_by_role("button", name="Set remaining")).to_have_count(0)
    student.context.close()


def test_accounts_tokens_users_and_webhooks_per_role(
        browser: Any, server: ServerProcess, shots: Path) -> None:
    """Everyone makes and revokes their own API tokens (shown once); an admin adds users,
    changes a role, disables one and sets a password; operators see the webhooks with their
    last delivery; a user sees neither users nor webhooks."""
    api = server.client
    _ok(api.post("/users", json={"name": "boss", "role": "admin", "password": PASSWORD}))
    hook = _ok(api.post("/webhooks", json={"url": "http://127.0.0.1:9/hook", "types": ["*"],
                                           "description": "lab chat"}))
    try:
        admin = _page(browser)
        _sign_in(admin, server, "boss")
        admin.get_by_role("tab", name="Accounts").click()
        tokens = admin.locator("#token-table")
        admin.locator("#token-new").get_by_label("Token name").fill("my script")
        admin.locator("#token-new").get_by_role("button", name="Create token").click()
        expect(admin.locator("#message")).to_contain_text('Token "my script": mes_')
        secret = re.search(r"(mes_\S+)", admin.locator("#message").inner_text())
        assert secret is not None
        assert httpx.get(f"http://127.0.0.1:{server.http_port}/api/v1/users/me", headers={
            "Authorization": f"Bearer {secret.group(1)}"}).json()["name"] == "boss"
        row = tokens.locator("tr", has_text="my script")
        row.get_by_role("button", name="Revoke token my script").click()
        _confirm(admin, "Revoke token my script? Programs using it stop working.", "Revoke")
        expect(row.locator(".token-state")).to_have_text("revoked")
        assert httpx.get(f"http://127.0.0.1:{server.http_port}/api/v1/users/me", headers={
            "Authorization": f"Bearer {secret.group(1)}"}).status_code == 401

        admin.locator("#user-box summary").click()
        new = admin.locator("#user-new")
        new.get_by_label("Name").fill("lab-tech")
        new.get_by_label("Role").select_option("user")
        new.get_by_label("First password").fill("first-password-1")
        new.get_by_role("button", name="Add user").click()
        expect(admin.locator("#message")).to_contain_text("User lab-tech added (user).")
        users = admin.locator("#user-table")
        tech = users.locator("tr", has_text="lab-tech")
        tech.get_by_label("Role of lab-tech").select_option("operator")
        expect(admin.locator("#message")).to_contain_text("lab-tech is now operator.")
        tech.get_by_role("button", name="Set the password of lab-tech").click()
        dialog = admin.get_by_role("dialog")
        assert dialog.get_by_label("New password").get_attribute("type") == "password"
        dialog.get_by_label("New password").fill("second-password-2")
        dialog.get_by_role("button", name="Set password").click()
        expect(admin.locator("#message")).to_contain_text("The password of lab-tech is set.")
        signed = httpx.post(f"http://127.0.0.1:{server.http_port}/api/v1/session",
                            json={"name": "lab-tech", "password": "second-password-2"})
        assert signed.status_code == 200 and signed.json()["user"]["role"] == "operator"
        tech.get_by_role("button", name="Disable").click()
        expect(tech.locator(".user-state")).to_have_text("disabled")
        assert httpx.post(f"http://127.0.0.1:{server.http_port}/api/v1/session", json={
            "name": "lab-tech", "password": "second-password-2"}).status_code == 401
        webhooks = admin.locator(f'#webhook-table tr[data-id="{hook["id"]}"]')
        expect(webhooks).to_contain_text("lab chat")
        expect(webhooks).to_contain_text("http://127.0.0.1:9/hook")
        admin.screenshot(path=shots / "dashboard-accounts-admin.png", full_page=True)
        admin.context.close()

        operator = _page(browser)
        _sign_in(operator, server, "staff")
        operator.get_by_role("tab", name="Accounts").click()
        expect(operator.locator(f'#webhook-table tr[data-id="{hook["id"]}"]')).to_be_visible()
        expect(operator.locator("#user-table")).to_be_hidden()
        operator.get_by_role("button", name="Send a test to http://127.0.0.1:9/hook").click()
        expect(operator.locator("#message")).to_contain_text(
            "The test did not reach http://127.0.0.1:9/hook")
        with webhook_receiver() as receiver:
            reached = _ok(api.post("/webhooks", json={"url": f"{receiver.url}/lab",
                                                      "types": ["job.done"]}))
            try:
                operator.reload()
                operator.get_by_role("tab", name="Accounts").click()
                operator.get_by_role("button", name=f"Send a test to {receiver.url}/lab").click()
                expect(operator.locator("#message")).to_contain_text(
                    f"The test reached {receiver.url}/lab (HTTP 200).")
                assert [b["type"] for b in receiver.bodies()] == ["webhook.test"]
            finally:
                api.delete(f"/webhooks/{reached['id']}")
        operator.context.close()

        student = _page(browser)
        _sign_in(student, server, "student")
        student.get_by_role("tab", name="Accounts").click()
        expect(student.locator("#token-new")).to_be_visible()
        expect(student.locator("#user-table")).to_be_hidden()
        expect(student.locator("#webhook-table")).to_be_hidden()
        student.context.close()
    finally:
        api.delete(f"/webhooks/{hook['id']}")


def test_live_updates_keep_focus_and_a_slow_click(
        browser: Any, server: ServerProcess) -> None:
    """A printing card is redrawn as its progress moves: a keyboard user's focus stays on
    its Pause button, and a click held across redraws still pauses the print."""
    api = server.client
    _farm_at_rest(api)
    job = _ok(api.post("/print_jobs", data={"filament_id": SPOOL, "print_weight_in_grams": "5"},
                       files={"file": ("focus.gcode", GCODE)}))
    page = _page(browser)
    _sign_in(page, server, "staff")
    _live(page)
    card = page.locator(f'.card[data-id="{PRINTER}"]')
    expect(card).to_have_attribute("data-state", "printing", timeout=WAIT_MS)
    pause = card.get_by_role("button", name="Pause")
    pause.focus()
    progress = card.locator(".progress-text")
    seen: set[str] = set()

    def redrawn_twice() -> bool:
        seen.add(progress.inner_text())
        return len(seen) >= 3

    _until(page, redrawn_twice, 30, "the card to be redrawn twice")
    focused = page.evaluate("""() => { const el = document.activeElement;
        return [el.textContent, el.closest('.card') && el.closest('.card').dataset.id]; }""")
    assert focused == ["Pause", PRINTER], focused

    box = pause.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    before = progress.inner_text()
    page.wait_for_timeout(1500)  # a slow click: the press lasts across telemetry updates
    assert _ok(api.get(f"/printers/{PRINTER}/status"))["progress"] is not None
    page.mouse.up()
    expect(page.locator("#message")).to_contain_text(f"Asked the printer to pause job {job['id']}")
    wait_for(lambda: _ok(api.get(f"/print_jobs/{job['id']}"))["phase"] == "paused",
             WAIT_MS / 1000, "the job paused by the slow click")
    expect(progress).not_to_have_text(before, timeout=WAIT_MS)  # the card caught up after
    page.context.close()
    _farm_at_rest(api)


def test_the_page_asks_only_for_the_telemetry_it_shows(
        browser: Any, server: ServerProcess) -> None:
    """The printers tab streams the telemetry of the printers on its page and the others'
    state changes; a tab that shows no printer asks for none; a new stream resumes after
    the last event seen."""
    page = _page(browser)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/api/v1/events" in r.url else None)
    _sign_in(page, server, "staff")
    _live(page)
    _until(page, lambda: any(f"printer={PRINTER}" in u for u in streams), 15,
           "a stream of the grid's printers")
    shown = next(u for u in streams if f"printer={PRINTER}" in u)
    assert "states=true" in shown, shown
    page.get_by_role("tab", name="Spools").click()
    _until(page, lambda: "telemetry=false" in streams[-1], 15, "a stream without telemetry")
    api = server.client
    _ok(api.post("/filaments", json={"id": "stream-test", "type": "PLA", "color": "white",
                                     "total_weight_in_grams": 100}))
    expect(page.locator('#spool-table tr[data-id="stream-test"]')).to_have_count(1)
    assert "after=" in streams[-1], streams[-1]  # resumed, not started afresh
    api.delete("/filaments/stream-test")
    page.context.close()


def test_the_queue_is_paged_with_each_jobs_position(
        browser: Any, server: ServerProcess) -> None:
    """Every waiting job, 50 a page, each with its place in the queue (oldest first); an
    operator moves a job down one place and gives another a priority that puts it first."""
    api = server.client
    _farm_at_rest(api)
    stored = _ok(api.post("/files", files={"file": ("queued.gcode", GCODE)}))["id"]
    # A spool no printer holds: the jobs wait.
    _ok(api.post("/filaments", json={"id": "queue-test", "type": "PLA", "color": "blue",
                                     "total_weight_in_grams": 10_000}))
    ids = [_ok(api.post("/print_jobs", json={
        "filament_id": "queue-test", "file_id": stored, "print_weight_in_grams": 1,
        "filepath": f"queued-{n:02d}.gcode"}))["id"] for n in range(53)]
    try:
        page = _page(browser)
        _sign_in(page, server, "staff")
        page.get_by_role("tab", name="Jobs").click()
        rows = page.locator("#queue-table tbody tr[data-id]")
        expect(rows).to_have_count(50)
        assert rows.first.get_attribute("data-id") == ids[0]
        expect(rows.first.locator("td.position")).to_have_text("1")
        pager = page.locator('.pager[data-for="queued"]')
        expect(pager.locator(".page-label")).to_have_text("1\u201350 of more")
        pager.get_by_role("button", name="Next →").click()
        expect(rows).to_have_count(3)
        expect(rows.last.locator("td.position")).to_have_text("53")
        assert rows.last.get_attribute("data-id") == ids[-1]
        expect(page.locator("#running-table")).to_contain_text("Nothing is printing.")
        pager.get_by_role("button", name="← Previous").click()
        expect(rows).to_have_count(50)
        page.get_by_role("button", name=f"Move job {ids[0]} down").click()
        expect(rows.nth(1)).to_have_attribute("data-id", ids[0])
        expect(rows.first).to_have_attribute("data-id", ids[1])
        expect(rows.first.locator("td.position")).to_have_text("1")
        assert page.get_by_role("button", name=f"Move job {ids[1]} up").is_disabled()
        page.locator(f'#queue-table tr[data-id="{ids[7]}"]').get_by_role(
            "button", name="Priority").click()
        dialog = page.locator("#ask")
        dialog.get_by_label("Priority").fill("3")
        dialog.get_by_role("button", name="Set priority").click()
        expect(rows.first).to_have_attribute("data-id", ids[7])
        expect(rows.first.locator("td.priority")).to_have_text("3")
        expect(rows.nth(2)).to_have_attribute("data-id", ids[0])
        assert [j["id"] for j in _ok(api.get("/print_jobs/queue", params={"limit": 3}))] \
            == [ids[7], ids[1], ids[0]]
        page.context.close()
    finally:
        for job_id in ids:
            api.post(f"/print_jobs/{job_id}/status", params={"status": "Canceled"})
        api.delete("/filaments/queue-test")


def test_tabs_follow_the_aria_tab_pattern(browser: Any, server: ServerProcess) -> None:
    """One tab stop; arrows, Home and End move between the tabs the role sees, each tab
    controlling its panel."""
    page = _page(browser)
    _sign_in(page, server, "student")
    printers = page.get_by_role("tab", name="Printers")
    expect(printers).to_have_attribute("aria-controls", "tab-printers")
    expect(page.get_by_role("tabpanel", name="Printers")).to_be_visible()
    printers.focus()
    page.keyboard.press("ArrowRight")
    jobs = page.get_by_role("tab", name="Jobs")
    expect(jobs).to_be_focused()
    expect(jobs).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tabpanel", name="Jobs")).to_be_visible()
    assert printers.get_attribute("tabindex") == "-1"
    page.keyboard.press("End")
    expect(page.get_by_role("tab", name="Accounts")).to_be_focused()
    page.keyboard.press("ArrowRight")  # wraps to the first
    expect(printers).to_be_focused()
    page.keyboard.press("ArrowLeft")  # and back; the student has no Cluster tab to land on
    expect(page.get_by_role("tab", name="Accounts")).to_be_focused()
    page.keyboard.press("Home")
    expect(printers).to_have_attribute("aria-selected", "true")
    page.context.close()


def test_on_a_phone_a_jobs_cancel_button_is_in_view(
        browser: Any, server: ServerProcess) -> None:
    """The job tables scroll sideways on a phone; their actions stay at the right edge."""
    api = server.client
    _ok(api.post("/filaments", json={"id": "phone-test", "type": "PLA", "color": "red",
                                     "total_weight_in_grams": 100}))
    job = _ok(api.post("/print_jobs", json={"filament_id": "phone-test", "filepath": "x.gcode",
                                            "print_weight_in_grams": 1, "id": "phone-job"}))
    _ok(api.post("/print_jobs/phone-job/queue", json={"priority": 100}))  # first in the queue
    try:
        page = _page(browser, 390, 844)
        _sign_in(page, server, "staff")
        page.get_by_role("tab", name="Jobs").click()
        cancel = page.locator('#queue-table tr[data-id="phone-job"]').get_by_role(
            "button", name="Cancel")
        expect(cancel).to_be_visible()
        boxes: list[Any] = []

        def in_view() -> bool:
            # The queue may be redrawn between finding the button and measuring it.
            try:
                box = cancel.bounding_box(timeout=1_000)
            except sync_api.Error:
                return False
            boxes.append(box)
            return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390

        _until(page, in_view, 10, "Cancel within the phone's width")
        assert boxes, "measured"
        page.context.close()
    finally:
        api.post(f"/print_jobs/{job['id']}/status", params={"status": "Canceled"})
        api.delete("/filaments/phone-test")


def test_operators_rename_and_dissolve_a_group(browser: Any, server: ServerProcess) -> None:
    """A group's printers move together: renamed in the page's dialog, then ungrouped."""
    api = server.client
    for printer_id in ("west-1", "west-2"):
        _ok(api.post("/printers", json={"id": printer_id, "group": "west"}))
    try:
        page = _page(browser)
        _sign_in(page, server, "staff")
        expect(page.locator('#group-table tr[data-group="west"]')).to_contain_text("2")
        page.get_by_text("By group").click()  # the table is folded at first
        page.get_by_role("button", name="Rename group west").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Group name").fill("east wing")
        dialog.get_by_role("button", name="Rename", exact=True).click()
        expect(page.locator("#message")).to_contain_text("Group west is now east wing.")
        expect(page.locator('#group-table tr[data-group="east wing"]')).to_contain_text("2")
        expect(page.locator('#group-table tr[data-group="west"]')).to_have_count(0)
        assert {p["group"] for p in _ok(api.get("/printers")) if p["id"].startswith("west")} \
            == {"east wing"}
        page.get_by_role("button", name="Ungroup east wing").click()
        _confirm(page, "Take the 2 printers of group east wing out of it? The printers stay.",
                 "Ungroup")
        expect(page.locator('#group-table tr[data-group="east wing"]')).to_have_count(0)
        assert {p["group"] for p in _ok(api.get("/printers")) if p["id"].startswith("west")} \
            == {None}
        page.context.close()

        student = _page(browser)
        _sign_in(student, server, "student")
        student.get_by_text("By group").click()
        expect(student.locator('#group-table tr[data-group="lab"]')).to_be_visible()
        expect(student.get_by_role("button", name="Rename group lab")).to_have_count(0)
        student.context.close()
    finally:
        for printer_id in ("west-1", "west-2"):
            api.delete(f"/printers/{printer_id}")


def test_a_student_prints_one_of_their_files_again(browser: Any, server: ServerProcess) -> None:
    """"My files" lists the student's uploads under their own names with the upload time;
    Print submits a job of that file with the chosen spool."""
    api = server.client
    content = b"; my files test\n" + SLICED
    student_id = next(u["id"] for u in server.every("/users") if u["name"] == "student")
    page = _page(browser)
    try:
        _sign_in(page, server, "student")
        page.get_by_role("tab", name="Jobs").click()
        page.locator('#job-form input[type="file"]').set_input_files(
            files=[{"name": "my-bracket.gcode", "mimeType": "text/plain", "buffer": content}])
        page.locator("#spool-select").select_option(SPOOL)
        page.get_by_label("Weight (g)").fill("3")
        page.get_by_role("button", name="Submit", exact=True).click()
        expect(page.locator("#message")).to_contain_text("(my-bracket.gcode) submitted")
        page.get_by_text("My files").click()
        row = page.locator("#file-table tbody tr[data-id]", has_text="my-bracket.gcode")
        expect(row).to_have_count(1)
        expect(row.locator("td").first).to_have_text("my-bracket.gcode")
        expect(row.locator("td").nth(1)).not_to_have_text("\u2013")
        page.locator("#spool-select").select_option(SPOOL)
        page.get_by_role("button", name="Print my-bracket.gcode").click()
        dialog = page.get_by_role("dialog")  # the file does not say its weight
        dialog.get_by_label("Weight (g)").fill("3")
        dialog.get_by_role("button", name="Print", exact=True).click()

        def both() -> list[dict[str, Any]]:
            return [j for j in _ok(api.get("/print_jobs", params={"owner_id": student_id}))
                    if j["filepath"] == "my-bracket.gcode"]

        _until(page, lambda: len(both()) == 2, 15, "the second job of the file")
        mine = both()
        assert len({j["file_id"] for j in mine}) == 1, mine
        expect(page.locator("#message")).to_contain_text(f"Job {mine[-1]['id']} (my-bracket")
        page.context.close()
    finally:
        for job in _ok(api.get("/print_jobs", params={"owner_id": student_id})):
            if job["status"] in ("Queued", "Running"):
                api.post(f"/print_jobs/{job['id']}/status", params={"status": "Canceled"})
        _farm_at_rest(api)
