"""Sign-in cannot be flooded or guessed: 100 wrong passwords do not delay another account's
sign-in, a guessed account waits (even with the right password), a full queue answers 429."""

from __future__ import annotations

import asyncio
import time

import httpx

from mes.auth import throttle
from mes.auth.throttle import SignInGuard, TooManyAttempts
from mes.node import FarmNode
from tests.accounts import make_user

PASSWORD = "correct horse battery staple"


async def sign_in(api: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await api.post("/api/v1/session", json={"name": name, "password": password},
                          headers={"Authorization": ""})


async def test_a_flood_of_wrong_passwords_does_not_delay_another_account(
        node: FarmNode, api: httpx.AsyncClient) -> None:
    await make_user(api, "mallory", password=PASSWORD)
    await make_user(api, "ada", password=PASSWORD)
    started = time.perf_counter()
    assert (await sign_in(api, "ada", PASSWORD)).status_code == 200
    usual = time.perf_counter() - started

    flood = [asyncio.create_task(sign_in(api, "mallory", f"guess {n}")) for n in range(100)]
    await asyncio.sleep(0)  # the flood is in flight
    started = time.perf_counter()
    mine = await sign_in(api, "ada", PASSWORD)
    elapsed = time.perf_counter() - started
    answers = await asyncio.gather(*flood)
    assert mine.status_code == 200, mine.text
    # at most the checks already admitted run before it: a few hashes, not a hundred
    assert elapsed < 4 * usual + 1.0, (elapsed, usual)
    codes = [a.status_code for a in answers]
    assert set(codes) <= {401, 429} and codes.count(429) >= 80, codes
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "too_many_attempts"
    # guessed one try at a time, the account waits, even with its right password
    tries = [await sign_in(api, "mallory", f"slow guess {n}") for n in range(10)]
    assert [t.status_code for t in tries[:4]] == [401] * 4
    assert tries[-1].status_code == 429
    again = await sign_in(api, "mallory", PASSWORD)
    assert again.status_code == 429 and "wait" in again.json()["error"]["message"]
    assert (await sign_in(api, "ada", PASSWORD)).status_code == 200


async def test_the_wait_doubles_and_a_success_clears_it(node: FarmNode) -> None:
    await node.read(lambda c: None)
    now = [1000.0]
    guard = SignInGuard(node.read, clock=lambda: now[0])

    async def fail() -> None:
        assert await guard.check("nobody", "wrong", "10.9.9.9") is None

    for _ in range(throttle.ACCOUNT_FAILURES):
        await fail()
    try:
        await guard.check("nobody", "wrong", "10.9.9.9")
        raise AssertionError("a locked account was checked")
    except TooManyAttempts as exc:
        assert exc.retry_after == 1
    now[0] += 1.0
    await fail()  # the sixth failure: 2 s
    try:
        await guard.check("nobody", "x")
        raise AssertionError("a locked account was checked")
    except TooManyAttempts as exc:
        assert exc.retry_after == 2
    now[0] += 2.0
    await fail()
    assert guard.failures == throttle.ACCOUNT_FAILURES + 2
