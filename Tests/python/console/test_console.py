"""`lanyardctl console` end to end (issue 21, acceptance 1 and 2): a real lanyardd, the
real lanyardctl console started as a created uid, and Debian's headless Chromium driven
by selenium through /usr/bin/chromedriver (no download). Agents ask with `lanyardctl
authorize` and wait with `lanyardctl await` as the agent uid; plain HTTP requests from
Python check the console's gate (token, Host, Origin, bounds)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from lanyard_harness import Daemon, User, bin_dir, command_as, policy_for, run_as, user

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30.0
# Where test_screenshot also saves its picture (docs/console.png is made this way).
SCREENSHOT = os.environ.get("LANYARD_CONSOLE_SCREENSHOT", "")

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CAPABILITIES = {"github:push": "medium", "github:admin": "high", "github:read": "low"}


LINK = re.compile(r"http://127\.0\.0\.1:(\d+)/\?token=([0-9a-f]{64})")


@dataclass
class Console:
    """A running `lanyardctl console` and the newest link it printed (each link opens one
    tab once; the console prints the next one when a link is used)."""
    process: subprocess.Popen[str]
    url: str
    port: int
    token: str
    links: queue.Queue[str]

    def next_link(self) -> str:
        """The link printed after the last one was used (waits for the console to print it)."""
        line = self.links.get(timeout=WAIT)
        m = LINK.search(line)
        assert m and "the next one" in line, line
        self.url, self.token = m.group(0), m.group(2)
        return self.url

    def session(self) -> str:
        """A tab's session, as a browser gets one: the link opened, its page's meta element read."""
        r = request(self, "GET", f"/?token={self.token}", {"Host": f"127.0.0.1:{self.port}"})
        assert r.status == 200, r.status
        self.next_link()
        page = r.body.decode()  # type: ignore[attr-defined]
        m = re.search(r'<meta name="lanyard-session" content="([0-9a-f]{64})">', page)
        assert m, page
        return m.group(1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_console(d: Daemon, as_user: User | None, extra: tuple[str, ...] = ()) -> Console:
    """Starts the console as `as_user` (None: root) and reads the link from its first line."""
    ids = {} if as_user is None else dict(user=as_user.uid, group=as_user.gid, extra_groups=[])
    p = subprocess.Popen([os.path.join(bin_dir(), "lanyardctl"), "console", *extra], env={**os.environ, **d.env},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **ids)
    assert p.stdout is not None
    line = p.stdout.readline()  # blocks until the console listens (or exits)
    m = LINK.search(line)
    if not m:
        p.kill()
        raise AssertionError(f"no link from lanyardctl console: {line!r} {p.stderr.read() if p.stderr else ''}")
    links: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert p.stdout is not None
        for later in p.stdout:
            if LINK.search(later):
                links.put(later)
    threading.Thread(target=read, daemon=True).start()
    return Console(p, m.group(0), int(m.group(1)), m.group(2), links)


def ask(d: Daemon, agent: User, capability: str, resource: str = "repo/main", args: tuple[str, ...] = ()) -> dict:
    """`lanyardctl authorize` as the agent: a PENDING answer with its approval id and code."""
    argv = [os.path.join(bin_dir(), "lanyardctl"), "authorize", capability, "--json", "--resource", resource]
    for a in args:
        argv += ["--arg", a]
    r = command_as(agent, argv, env=d.env)
    assert r.returncode == 3, r.stderr
    answer = json.loads(r.stdout)
    assert answer["decision"] == "PENDING"
    return answer


def await_as(d: Daemon, agent: User, approval: str) -> subprocess.Popen[str]:
    """`lanyardctl await ID` as the agent, left running: the agent's AwaitApproval long poll."""
    return subprocess.Popen([os.path.join(bin_dir(), "lanyardctl"), "await", approval, "--timeout", "120"],
                            env={**os.environ, **d.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            user=agent.uid, group=agent.gid, extra_groups=[])


def state_of(d: Daemon, approval: str) -> str:
    for a in json.loads(d.ctl_ok(["approvals", "list", "--all", "--json"])):
        if a["approval_id"] == approval:
            return a["state"]
    raise AssertionError(f"no approval {approval}")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/test.sh installs them)")
    os.environ["SE_AVOID_STATS"] = "true"  # selenium: no usage statistics over the network
    profile = tempfile.mkdtemp(prefix="lanyard-chromium.")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.add_argument("--headless=new")
    # The tests run as root (they create uids), and Chromium refuses to start as root with
    # its sandbox; the browser only ever loads the console on 127.0.0.1 here.
    options.add_argument("--no-sandbox")
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1280,1600")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def daemon(daemon_factory, agent_user: User, approver_user: User) -> Daemon:
    # The approver is an admin too, so its console has the overview.
    return daemon_factory(policy_for({"builder": (agent_user, list(CAPABILITIES))}, capabilities=CAPABILITIES,
                                     services={"github": "{ kind: opaque }"}, approvers=[approver_user],
                                     extra=f"admins: {{ uids: [{approver_user.uid}] }}\n"))


@pytest.fixture
def console(daemon: Daemon, approver_user: User) -> Iterator[Console]:
    c = start_console(daemon, approver_user)
    yield c
    c.stop()


def until(driver: webdriver.Chrome) -> WebDriverWait:
    """A wait with the deadline; the page re-renders parts as events arrive, so an element
    found a moment ago may be replaced."""
    return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))


def card(driver: webdriver.Chrome, approval: str):
    """The pending card of `approval`, once the page shows it."""
    return until(driver).until(
        lambda drv: (drv.find_elements(By.CSS_SELECTOR, f'#pending article[data-id="{approval}"]') or [None])[0])


def message_of(driver: webdriver.Chrome, approval: str, pattern: str) -> str:
    """The card's message once it matches `pattern`."""
    def found(drv):
        text = card(drv, approval).find_element(By.CSS_SELECTOR, ".message").text
        return text if re.search(pattern, text) else None
    return until(driver).until(found)


def click_approve(driver: webdriver.Chrome, approval: str) -> None:
    """Clicks the card's Approve once it takes clicks (it waits a moment after the cards change)."""
    button = until(driver).until(lambda drv: (b := card(drv, approval).find_element(By.CSS_SELECTOR, "button.approve")).is_enabled() and b)
    button.click()


def gone_from_pending(driver: webdriver.Chrome, approval: str) -> None:
    until(driver).until(
        lambda drv: not drv.find_elements(By.CSS_SELECTOR, f'#pending article[data-id="{approval}"]'))


def test_medium_request_is_listed_with_its_context_and_approved_from_the_page(daemon, console, browser, agent_user):
    asked = ask(daemon, agent_user, "github:push", "repo/main", ("branch=release", "force=false"))
    waiting = await_as(daemon, agent_user, asked["approval_id"])
    browser.get(console.url)
    c = card(browser, asked["approval_id"])
    text = c.text
    for expected in ["MEDIUM", "github:push", "builder", f"uid {agent_user.uid}", "repo/main", "branch", "release", "force",
                     asked["binding_code"], "lanyardctl"]:
        assert expected in text, f"{expected!r} not on the card:\n{text}"
    assert re.search(r"pid \d+", text)
    listed = next(a for a in json.loads(daemon.ctl_ok(["approvals", "list", "--json"])) if a["approval_id"] == asked["approval_id"])
    assert c.find_element(By.CSS_SELECTOR, "dd.unit").text == (listed["unit"] or "(none)")  # the process's unit, as recorded
    assert re.search(r"\d+ (s|min) left", text)
    Select(c.find_element(By.CSS_SELECTOR, "select.mode")).select_by_value("once")
    click_approve(browser, asked["approval_id"])
    out, err = waiting.communicate(timeout=WAIT)
    assert waiting.returncode == 0, err
    assert out.startswith("APPROVED")
    gone_from_pending(browser, asked["approval_id"])  # live: no reload
    until(browser).until(lambda drv: "APPROVED" in drv.find_element(By.ID, "history").text)
    approvals = [r for r in daemon.audit() if r["event"] == "approval.approve"]
    assert approvals and approvals[-1]["approver"].startswith(f"uid {console_uid(console)}")


def console_uid(c: Console) -> int:
    with open(f"/proc/{c.process.pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def test_a_new_request_appears_without_reload_and_deny_reaches_the_agent(daemon, console, browser, agent_user):
    browser.get(console.url)
    until(browser).until(lambda drv: drv.find_element(By.ID, "live").text == "live")
    asked = ask(daemon, agent_user, "github:push", "repo/other")
    waiting = await_as(daemon, agent_user, asked["approval_id"])
    c = card(browser, asked["approval_id"])  # arrived over the event stream
    c.find_element(By.CSS_SELECTOR, "input.reason-input").send_keys("not today")
    c.find_element(By.CSS_SELECTOR, "button.deny").click()
    out, _ = waiting.communicate(timeout=WAIT)
    assert waiting.returncode == 2 and out.startswith("DENIED") and "not today" in out


def test_high_request_needs_the_binding_code_typed(daemon, console, browser, agent_user):
    asked = ask(daemon, agent_user, "github:admin", "org/settings")
    waiting = await_as(daemon, agent_user, asked["approval_id"])
    browser.get(console.url)
    c = card(browser, asked["approval_id"])
    assert "HIGH" in c.text and not c.find_elements(By.CSS_SELECTOR, "select.mode")
    # Finding 2: the code is not next to the box it goes in; the agent's own output has it.
    assert asked["binding_code"] not in c.text and "in its own output" in c.text
    click_approve(browser, asked["approval_id"])
    message_of(browser, asked["approval_id"], "Type the binding code")
    wrong = "0000-0000" if asked["binding_code"] != "0000-0000" else "1111-1111"
    c.find_element(By.CSS_SELECTOR, "input.code-input").send_keys(wrong)
    c.find_element(By.CSS_SELECTOR, "button.approve").click()
    refused = message_of(browser, asked["approval_id"], "lanyardd refused")
    assert "is not this request's" in refused
    assert state_of(daemon, asked["approval_id"]) == "PENDING"
    assert waiting.poll() is None
    field = c.find_element(By.CSS_SELECTOR, "input.code-input")
    field.clear()
    field.send_keys(asked["binding_code"].lower())  # case and dashes aside, it is the code
    c.find_element(By.CSS_SELECTOR, "button.approve").click()
    out, err = waiting.communicate(timeout=WAIT)
    assert waiting.returncode == 0 and out.startswith("APPROVED"), err
    until(browser).until(lambda drv: asked["binding_code"] in drv.find_element(By.ID, "history").text)  # decided: shown
    refusals = [r for r in daemon.audit() if r["event"] == "approval.approve" and r.get("outcome") == "refused"]
    assert refusals and "is not this request's" in refusals[-1]["reason"]


def test_cli_code_is_checked_for_high_too(daemon, agent_user, approver_user):
    asked = ask(daemon, agent_user, "github:admin", "org/cli")
    r = daemon.ctl(["approvals", "approve", asked["approval_id"], "--code", "ZZZZ-ZZZZ"], as_user=approver_user)
    assert r.returncode == 1 and "is not this request's" in r.stderr
    daemon.ctl_ok(["approvals", "approve", asked["approval_id"], "--code", asked["binding_code"]], as_user=approver_user)
    assert state_of(daemon, asked["approval_id"]) == "APPROVED"
    medium = ask(daemon, agent_user, "github:push", "repo/cli")
    r = daemon.ctl(["approvals", "approve", medium["approval_id"], "--code", medium["binding_code"]], as_user=approver_user)
    assert r.returncode == 1 and "only for HIGH" in r.stderr


def test_console_of_an_agent_uid_cannot_approve(daemon, browser, agent_user):
    asked = ask(daemon, agent_user, "github:push", "repo/self")
    c = start_console(daemon, agent_user)
    try:
        browser.get(c.url)
        until(browser).until(lambda drv: "is not one" in drv.find_element(By.ID, "problem").text)
        shown = browser.find_element(By.ID, "problem").text
        assert "lanyardd refused" in shown and f"uid {agent_user.uid}" in shown
        assert "neither admin nor approver" in browser.find_element(By.ID, "who").text
        # The page's own call, as its script makes it: the console, which cannot list the
        # request, refuses an approval without a code; with one, the daemon refuses the uid.
        decide = """
            const done = arguments[arguments.length - 1];
            const token = document.querySelector('meta[name="lanyard-session"]').content;
            fetch('/api/decide', {method: 'POST', headers: {'X-Lanyard-Token': token, 'Content-Type': 'application/json'},
                                  body: JSON.stringify(arguments[0])})
              .then(async (r) => done([r.status, await r.json()]));
        """
        answer = browser.execute_async_script(decide, {"id": asked["approval_id"], "approve": True})
        assert answer[0] == 400 and "binding code" in answer[1]["error"]
        answer = browser.execute_async_script(decide, {"id": asked["approval_id"], "approve": True, "code": asked["binding_code"]})
        assert answer[0] == 403 and "approval_decide needs an approver" in answer[1]["error"]
        assert state_of(daemon, asked["approval_id"]) == "PENDING"
    finally:
        c.stop()


def test_cards_keep_their_place_and_approve_waits_after_a_change(daemon, console, browser, agent_user):
    """Finding 4: a request filed at the right moment must not move the card under the
    pointer (a HIGH one used to be sorted above), and Approve takes no click just after."""
    first = ask(daemon, agent_user, "github:push", "repo/first")
    browser.get(console.url)
    card(browser, first["approval_id"])
    until(browser).until(lambda drv: card(drv, first["approval_id"]).find_element(By.CSS_SELECTOR, "button.approve").is_enabled())
    # Record, at the moment a card is added, where the first card is and whether its button takes clicks.
    browser.execute_script("""
        window.__seen = [];
        new MutationObserver(() => {
          const box = document.getElementById('pending');
          const c = box.querySelector('[data-id="' + arguments[0] + '"]');
          window.__seen.push([Array.from(box.children).indexOf(c), c.querySelector('button.approve').disabled]);
        }).observe(document.getElementById('pending'), {childList: true});
    """, first["approval_id"])
    high = ask(daemon, agent_user, "github:admin", "org/late")
    card(browser, high["approval_id"])
    ids = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "#pending article")]
    assert ids == [first["approval_id"], high["approval_id"]]  # the new one below
    seen = browser.execute_script("return window.__seen")
    assert seen and all(place == 0 and disabled for place, disabled in seen), seen
    until(browser).until(lambda drv: card(drv, first["approval_id"]).find_element(By.CSS_SELECTOR, "button.approve").is_enabled())


def test_approving_for_a_duration_asks_to_confirm(daemon, console, browser, agent_user):
    asked = ask(daemon, agent_user, "github:push", "repo/lasting")
    browser.get(console.url)
    c = card(browser, asked["approval_id"])
    Select(c.find_element(By.CSS_SELECTOR, "select.mode")).select_by_value("1h")
    click_approve(browser, asked["approval_id"])
    alert = until(browser).until(lambda drv: drv.switch_to.alert)
    assert "for 1 hour" in alert.text and "builder" in alert.text
    alert.dismiss()
    message_of(browser, asked["approval_id"], "Not approved")
    assert state_of(daemon, asked["approval_id"]) == "PENDING"
    click_approve(browser, asked["approval_id"])
    until(browser).until(lambda drv: drv.switch_to.alert).accept()
    gone_from_pending(browser, asked["approval_id"])
    assert state_of(daemon, asked["approval_id"]) == "APPROVED"


def test_one_agents_flood_does_not_hide_another_agents_request(daemon_factory, browser, agent_user, stranger_user, approver_user):
    """Finding 5: at most a few cards per agent, and "+N not shown" for each agent's rest."""
    d = daemon_factory(policy_for({"builder": (agent_user, list(CAPABILITIES)), "quiet": (stranger_user, list(CAPABILITIES))},
                                  capabilities=CAPABILITIES, services={"github": "{ kind: opaque }"}, approvers=[approver_user]))
    quiet = ask(d, stranger_user, "github:push", "repo/quiet")
    flood = [ask(d, agent_user, "github:push", f"repo/flood-{i}") for i in range(8)]
    c = start_console(d, approver_user)
    try:
        browser.get(c.url)
        card(browser, quiet["approval_id"])
        until(browser).until(lambda drv: "+3 not shown from builder" in drv.find_element(By.ID, "pending-hidden").text)
        shown = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "#pending article")]
        assert len(shown) == 6 and quiet["approval_id"] in shown
        assert sum(a["approval_id"] in shown for a in flood) == 5
    finally:
        c.stop()


def test_the_page_stops_asking_once_its_console_is_gone(daemon, console, browser):
    """Finding 7: after the console stops, whatever listens on its port is not it: the page
    says the console stopped and sends nothing more (no squatter gets its requests)."""
    browser.get(console.url)
    until(browser).until(lambda drv: drv.find_element(By.ID, "live").text == "live")
    console.stop()
    until(browser).until(lambda drv: drv.find_element(By.ID, "live").text == "stopped")
    assert "has stopped" in browser.find_element(By.ID, "problem").text
    assert all(not b.is_enabled() for b in browser.find_elements(By.CSS_SELECTOR, "button"))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", console.port))
        squatter.listen()
        squatter.settimeout(6)  # an absence: the page used to ask again every 2 s
        with pytest.raises(TimeoutError):
            squatter.accept()


def test_hostile_agent_text_is_shown_inert(daemon, console, browser, agent_user):
    script = "<script>window.__pwned = 1</script>"
    image = '<img src=x onerror="window.__pwned = 2">'
    escape = "\x1b[31mRED\x1b]0;title\x07"
    asked = ask(daemon, agent_user, "github:push", script, (f"html={image}", f"esc={escape}", "long=" + "B" * 1000))
    browser.get(console.url)
    c = card(browser, asked["approval_id"])
    assert c.find_element(By.CSS_SELECTOR, "dd.resource").text == script  # the tag as text
    args = c.find_element(By.CSS_SELECTOR, "dd.args").text
    assert image in args
    assert "\\x1b[31mRED\\x1b]0;title\\x07" in args and "\x1b" not in args  # ESC and BEL made visible
    assert browser.execute_script("return window.__pwned === undefined")
    assert not c.find_elements(By.CSS_SELECTOR, "script, img")
    assert len(browser.find_elements(By.CSS_SELECTOR, "script")) == 1  # only the console's own


def test_a_60_kb_string_is_shown_cut_and_inert(browser, root, tmp_path):
    """lanyardd caps each agent field at 1024 bytes, so a stand-in admin socket hands the
    console an approval whose resource is 60 KB (with markup and an ESC in it)."""
    huge = "<b>" + "\x1b[2J" + "A" * 60_000 + "</b>"
    with FakeAdmin(str(tmp_path / "admin.sock"), resource=huge) as fake:
        d = Daemon.__new__(Daemon)  # only its env: the console talks to the stand-in
        d.agent_socket, d.admin_socket = str(tmp_path / "agent.sock"), fake.path
        c = start_console(d, None)
        try:
            browser.get(c.url)
            shown = card(browser, "ap-huge").find_element(By.CSS_SELECTOR, "dd.resource").text
            assert shown.startswith("<b>\\x1b[2JAAAA") and re.search(r"…\[\+\d+ bytes\]$", shown)
            assert len(shown.encode()) <= 4096 + 32  # Inert.text's limit, then the marker
            assert not browser.find_elements(By.CSS_SELECTOR, "#pending b")
        finally:
            c.stop()


class FakeAdmin:
    """A stand-in for lanyardd's admin socket: whoami (an approver, or an admin too) and one
    pending approval; the overview's reads answered empty, each call counted."""

    def __init__(self, path: str, resource: str, admin: bool = False) -> None:
        from lanyard.v1 import admin_pb2, common_pb2
        self.path = path
        self.admin = admin
        self.calls: dict[str, int] = {}
        self.stop = threading.Event()
        self.approval = admin_pb2.Approval(
            approval_id="ap-huge", state=common_pb2.APPROVAL_STATE_PENDING, agent="builder", uid=1234, pid=42,
            exe="/usr/bin/agent", capabilities=["github:push"], resource=resource, risk=common_pb2.RISK_LEVEL_MEDIUM,
            reason="MEDIUM risk", binding_code="ABCD-EF01", created_at=int(time.time()), expires_at=int(time.time()) + 600)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen()

    def __enter__(self) -> FakeAdmin:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        from lanyard.v1 import admin_pb2
        with conn:
            while not self.stop.is_set():
                head = conn.recv(4, socket.MSG_WAITALL)
                if len(head) < 4:
                    return
                req = admin_pb2.AdminRequest.FromString(conn.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL))
                reply = admin_pb2.AdminResponse(id=req.id)
                call = req.WhichOneof("call")
                self.calls[call] = self.calls.get(call, 0) + 1
                if call == "whoami":
                    reply.whoami.uid, reply.whoami.approver, reply.whoami.admin = 1000, True, self.admin
                elif call == "approvals_list":
                    if req.approvals_list.wait_ms:  # a long poll: nothing changes here
                        self.stop.wait(req.approvals_list.wait_ms / 1000)
                    reply.approvals_list.version = 1
                    reply.approvals_list.approvals.append(self.approval)
                elif self.admin and call in ("status", "agents_list", "leases_list", "audit_query"):
                    getattr(reply, {"status": "status_result"}.get(call, call)).SetInParent()
                else:
                    reply.status.code, reply.status.message = 7, "not in the stand-in"
                body = reply.SerializeToString()
                try:
                    conn.sendall(len(body).to_bytes(4, "big") + body)
                except OSError:  # the console stopped
                    return


def test_the_overview_is_read_once_for_every_tab(root, tmp_path):
    """Finding 6: each overview costs up to 42 admin calls; tabs asking together, or within
    10 s, share one read (a stand-in admin socket counts the calls)."""
    with FakeAdmin(str(tmp_path / "admin.sock"), resource="repo/main", admin=True) as fake:
        d = Daemon.__new__(Daemon)
        d.agent_socket, d.admin_socket = str(tmp_path / "agent.sock"), fake.path
        c = start_console(d, None)
        try:
            sessions = [c.session() for _ in range(3)]
            answers = [request(c, "GET", "/api/overview", {"Host": f"127.0.0.1:{c.port}", "X-Lanyard-Token": s}) for s in sessions * 2]
            assert [r.status for r in answers] == [200] * 6
            assert fake.calls.get("status") == 1 and fake.calls.get("audit_query") == 1
        finally:
            c.stop()


def test_the_page_says_when_lanyardd_is_unreachable(daemon, console, browser, agent_user):
    browser.get(console.url)
    until(browser).until(lambda drv: drv.find_element(By.ID, "live").text == "live")
    daemon.stop()
    until(browser).until(lambda drv: "lanyardd is unreachable" in drv.find_element(By.ID, "problem").text)
    assert "unreachable" in browser.find_element(By.TAG_NAME, "body").get_attribute("class")
    daemon.start()
    until(browser).until(lambda drv: not drv.find_element(By.ID, "problem").is_displayed())


def request(c: Console, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=WAIT)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    r.body = r.read()  # type: ignore[attr-defined]
    conn.close()
    return r


def test_the_gate_refuses_requests_without_the_token_or_from_elsewhere(daemon, console):
    c = console
    host = {"Host": f"127.0.0.1:{c.port}"}
    # The link's token before the other checks: a refused request does not use it up.
    assert request(c, "GET", f"/?token={c.token}", {"Host": f"evil.example:{c.port}"}).status == 403
    session = c.session()
    token = {"X-Lanyard-Token": session}
    origin = {"Origin": f"http://127.0.0.1:{c.port}"}
    post = {**host, **token, **origin, "Content-Type": "application/json"}
    decide = json.dumps({"id": "nope", "approve": False}).encode()
    # The right requests pass.
    assert request(c, "GET", "/api/state", {"Host": f"localhost:{c.port}", **token}).status == 200
    assert request(c, "GET", f"/console.js?session={session}", host).status == 200
    assert request(c, "GET", f"/console.css?session={session}", host).status == 200
    assert request(c, "POST", "/api/decide", post, decide).status == 404  # lanyardd: no such approval
    for bad in [b'{"id": "x", "approve": true, "for": "99999999d"}', b'{"id": "x"}', b'[1]', b'{"id": "x", "approve": true, "id": "y"}']:
        assert request(c, "POST", "/api/decide", post, bad).status == 400, bad
    # No token, a wrong one, or one in the query where the API wants the header.
    for path in ["/", "/console.js", "/api/state", "/api/events", "/api/overview"]:
        assert request(c, "GET", path, host).status == 403, path
    assert request(c, "GET", "/?token=" + "0" * 64, host).status == 403
    assert request(c, "GET", f"/api/state?token={c.token}", host).status == 403
    assert request(c, "GET", f"/api/state?session={session}", host).status == 403
    assert request(c, "GET", "/api/state", {**host, "X-Lanyard-Token": session[:-1] + "x"}).status == 403
    # Finding 3: the link's token is not a session, and a session does not open the page.
    assert request(c, "GET", "/api/state", {**host, "X-Lanyard-Token": c.token}).status == 403
    assert request(c, "GET", f"/?token={session}", host).status == 403
    assert request(c, "GET", f"/console.js?session={c.token}", host).status == 403
    assert request(c, "POST", "/api/decide", {k: v for k, v in post.items() if k != "X-Lanyard-Token"}, decide).status == 403
    # DNS rebinding: another name for 127.0.0.1, or another port.
    for bad in ["evil.example:%d" % c.port, "127.0.0.1", f"127.0.0.1:{c.port + 1}", f"127.0.0.1.nip.io:{c.port}"]:
        assert request(c, "GET", "/api/state", {"Host": bad, **token}).status == 403, bad
    assert request(c, "GET", "/api/state", token).status == 403  # no Host at all
    # Cross-site: a foreign Origin, or none, on a POST; a foreign Origin on a GET.
    for bad in ["http://evil.example", f"http://127.0.0.1:{c.port + 1}", "null", f"https://127.0.0.1:{c.port}"]:
        assert request(c, "POST", "/api/decide", {**post, "Origin": bad}, decide).status == 403, bad
        assert request(c, "GET", "/api/state", {**host, **token, "Origin": bad}).status == 403, bad
    assert request(c, "POST", "/api/decide", {k: v for k, v in post.items() if k != "Origin"}, decide).status == 403
    assert request(c, "POST", "/api/decide", {**post, "Sec-Fetch-Site": "same-site"}, decide).status == 403
    # Methods, media type and bounds.
    assert request(c, "GET", "/api/decide", {**host, **token}).status == 405
    assert request(c, "POST", "/api/decide", {**post, "Content-Type": "text/plain"}, decide).status == 415
    assert request(c, "POST", "/api/decide", post, b"{" + b" " * 20_000 + b"}").status == 413
    many = {**host, **token, **{f"X-Filler-{i}": "1" for i in range(80)}}
    assert request(c, "GET", "/api/state", many).status == 431
    r = request(c, "GET", "/api/state", host)
    for name, value in [("Content-Security-Policy", "default-src 'none'; script-src 'self'"), ("X-Content-Type-Options", "nosniff"),
                        ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer")]:
        assert value in (r.getheader(name) or ""), name


def get_state(port: int, session: str, source: tuple[str, int] | None = None, close_first: bool = False) -> bytes:
    """GET /api/state with `session` on a raw socket (from `source` when given): what came
    back before the console closed the connection (b"" when it read nothing)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(WAIT)
        if source:
            s.bind(source)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Lanyard-Token: {session}\r\nConnection: close\r\n\r\n".encode())
        try:
            return s.recv(100)
        except ConnectionResetError:
            return b""


def test_the_console_serves_its_uid_only_bounds_connections_and_listens_on_loopback_only(daemon, console, agent_user, approver_user):
    session = console.session()
    # The console runs as the approver (not root): its own uid is served, and root.
    assert run_as(approver_user, get_state, console.port, session).startswith(b"HTTP/1.1 200")
    assert get_state(console.port, session).startswith(b"HTTP/1.1 200")
    # Another local uid (an agent's) is closed before a byte is read, even with a session.
    assert run_as(agent_user, get_state, console.port, session) == b""
    held = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", console.port), timeout=WAIT)
            held.append(s)
        # Connections that have sent no request yet have a small pool; beyond it, the console
        # closes a new one at once.
        closed = 0
        for s in held[8:]:
            s.settimeout(WAIT)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except ConnectionResetError:
                closed += 1
        assert closed == len(held) - 8
    finally:
        for s in held:
            s.close()
    r = subprocess.run([os.path.join(bin_dir(), "lanyardctl"), "console", "--listen", "0.0.0.0:0"], env={**os.environ, **daemon.env},
                       capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 1 and "loopback address only" in r.stderr


def test_a_connection_that_shows_no_credential_is_closed_at_the_first_request_deadline(console):
    """Finding 1: one byte now and then kept a connection (and a slot) for ever."""
    with socket.create_connection(("127.0.0.1", console.port), timeout=WAIT) as s:
        opened = time.monotonic()
        s.settimeout(2)
        s.sendall(b"GET /api/state HTTP/1.1\r\n")
        while time.monotonic() - opened < WAIT:
            try:
                if s.recv(1) == b"":
                    break
            except TimeoutError:
                s.sendall(b"X")  # a trickle: the idle timer alone never fires
            except ConnectionResetError:
                break
        else:
            raise AssertionError("the console kept a connection without a credential")
        assert 9 <= time.monotonic() - opened < 20


def test_a_borrowed_port_from_another_loopback_address_is_refused(console, agent_user):
    """Finding 1(a): the agent reads the source port P of a served connection in
    /proc/net/tcp, binds 127.0.0.2:P and connects; the console must look at the whole
    4-tuple, not the port alone."""
    session = console.session()
    with socket.create_connection(("127.0.0.1", console.port), timeout=WAIT) as served:
        port = served.getsockname()[1]
        assert run_as(agent_user, get_state, console.port, session, ("127.0.0.2", port)) == b""
        # The served connection still works.
        served.sendall(f"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:{console.port}\r\nX-Lanyard-Token: {session}\r\n\r\n".encode())
        assert served.recv(100).startswith(b"HTTP/1.1 200")


def connect_send_close(port: int, request_bytes: bytes, times: int) -> None:
    for _ in range(times):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(request_bytes)


def test_a_request_sent_then_closed_by_another_uid_is_not_served(daemon, console, agent_user):
    """Finding 1(b): a client that sends its request and closes at once leaves an orphan
    socket that /proc/net/tcp shows as uid 0, inode 0; the console (a non-root approver's)
    took that for root and served the buffered request. Here the agent holds a session (the
    uid check is what must stop it) and asks to deny its own request."""
    asked = ask(daemon, agent_user, "github:push", "repo/closed")
    session = console.session()
    body = json.dumps({"id": asked["approval_id"], "approve": False, "reason": "forged"}).encode()
    forged = (f"POST /api/decide HTTP/1.1\r\nHost: 127.0.0.1:{console.port}\r\nOrigin: http://127.0.0.1:{console.port}\r\n"
              f"X-Lanyard-Token: {session}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    run_as(agent_user, connect_send_close, console.port, forged, 20)
    # Then a served request after them on the same console: it has read and answered the
    # orphans' bytes by now, had it accepted them (it accepts in order; each is checked at once).
    assert get_state(console.port, session).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 2  # an absence: the forged denial would land within this
    while time.monotonic() < deadline:
        assert state_of(daemon, asked["approval_id"]) == "PENDING"
    assert not [r for r in daemon.audit() if r["event"] == "approval.deny"]


def test_the_link_opens_one_tab_once_and_leaves_the_address_bar(daemon, console, browser):
    """Finding 3: the link's token is exchanged for the tab's own session at once."""
    first = console.url
    browser.get(first)
    until(browser).until(lambda drv: drv.find_element(By.ID, "live").text == "live")
    assert browser.current_url == f"http://127.0.0.1:{console.port}/"  # history.replaceState
    assert console.token not in browser.page_source
    second = console.next_link()  # printed when the first was used
    assert second != first
    browser.switch_to.new_window("tab")
    browser.get(first)  # from the history or scrollback: used up
    assert "used already" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(second)
    until(browser).until(lambda drv: drv.find_element(By.ID, "live").text == "live")
    assert request(console, "GET", "/api/state", {"Host": f"127.0.0.1:{console.port}", "X-Lanyard-Token": console.token}).status == 403


def test_approving_a_request_the_console_does_not_know_needs_a_code(daemon, console):
    """Finding 5: without a known MEDIUM risk the console refuses an approval with no code
    (lanyardd takes a HIGH approval without one on this call)."""
    session = console.session()
    headers = {"Host": f"127.0.0.1:{console.port}", "Origin": f"http://127.0.0.1:{console.port}", "X-Lanyard-Token": session,
               "Content-Type": "application/json"}
    r = request(console, "POST", "/api/decide", headers, json.dumps({"id": "ap-unknown", "approve": True}).encode())
    assert r.status == 400 and b"binding code" in r.body  # type: ignore[attr-defined]


def test_screenshot_with_requests_and_the_admin_overview(daemon, console, browser, agent_user, approver_user, tmp_path):
    """Acceptance 2: the console with a few requests and the admin overview, as a PNG."""
    done = ask(daemon, agent_user, "github:push", "repo/docs", ("branch=main",))
    daemon.ctl_ok(["approvals", "approve", done["approval_id"]], as_user=approver_user)
    denied = ask(daemon, agent_user, "github:push", "repo/infra", ("branch=prod",))
    daemon.ctl_ok(["approvals", "deny", denied["approval_id"], "--reason", "not on prod"], as_user=approver_user)
    for _ in range(3):
        command_as(agent_user, [os.path.join(bin_dir(), "lanyardctl"), "authorize", "github:read", "--resource", "repo/docs"], env=daemon.env)
    leased = command_as(agent_user, [os.path.join(bin_dir(), "lanyardctl"), "provision", "github", "--scope", "github:read"],
                        env=daemon.env)
    assert leased.returncode == 0, leased.stderr
    medium = ask(daemon, agent_user, "github:push", "repo/web", ("branch=release-2.4", "force=false"))
    high = ask(daemon, agent_user, "github:admin", "org/settings", ("change=branch-protection",))
    browser.get(console.url)
    card(browser, medium["approval_id"])
    card(browser, high["approval_id"])
    until(browser).until(lambda drv: drv.find_element(By.ID, "overview").is_displayed()
                                       and drv.find_elements(By.CSS_SELECTOR, "#chart rect"))
    browser.find_element(By.CSS_SELECTOR, "button.verify-now").click()
    until(browser).until(lambda drv: "intact" in drv.find_element(By.CSS_SELECTOR, "dd.verify").text)
    chart = browser.find_element(By.ID, "chart").text
    assert "builder" in chart and re.search(r"4 / 1 / 2", chart)  # the reads and the lease, the human denial, the two waiting
    until(browser).until(lambda drv: "1: github" in drv.find_element(By.ID, "agents").text)
    until(browser).until(lambda drv: "DENIED" in drv.find_element(By.ID, "history").text)
    until(browser).until(lambda drv: all(b.is_enabled() for b in drv.find_elements(By.CSS_SELECTOR, "#pending button.approve")))
    # The whole page, not just the window: Chromium's own screenshot beyond the viewport.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                               "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}})
    path = tmp_path / "console.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOT:
        shutil.copy(path, SCREENSHOT)
