"""Device-code login into the Store, doctor checks, log redaction, the chat outbox and the cooldown gate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import threading

import twitchio.http
from twitch_harness import BOT, OWNER, make_settings

from streamer.control.twitch import auth as twitch_auth
from streamer.control.twitch import component as twitch
from streamer.control.twitch.chat_outbox import ChatOutbox, clip
from streamer.control.twitch.commands import CooldownGate, parse_poll
from streamer.store import Store
from streamer.testing.fake_twitch import FakeTwitch


def _write_config(tmp_path, **twitch_keys) -> str:  # noqa: ANN001
    lines = ["[store]", f'path = "{tmp_path / "streamer.db"}"', "[twitch]",
             *(f'{k} = "{v}"' for k, v in twitch_keys.items())]
    path = tmp_path / "streamer.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@contextlib.contextmanager
def _fake_on_a_thread(monkeypatch):  # noqa: ANN001, ANN202
    """FakeTwitch on its own loop, so login_command and doctor_checks (each runs asyncio.run itself) can reach it."""
    fake = FakeTwitch()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(fake.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        fake.patch_twitchio(monkeypatch)
        fake.add_user(OWNER, "streamer", "affiliate")
        fake.add_user(BOT, "aibot")
        monkeypatch.setenv("TWITCH_CLIENT_SECRET", fake.client_secret)
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_device_login_stores_tokens_and_doctor_validates_them(monkeypatch, tmp_path, capsys):
    with _fake_on_a_thread(monkeypatch) as fake:
        cfg = _write_config(tmp_path, client_id=fake.client_id, bot_id=BOT, owner_id=OWNER)

        def approve_when_shown() -> None:  # the person approves the code in a browser
            while not fake.device_codes:
                threading.Event().wait(0.02)
            code = next(iter(fake.device_codes.values()))["user_code"]
            fake.approve_device(code, BOT)

        threading.Thread(target=approve_when_shown, daemon=True).start()
        assert twitch_auth.login_command(argparse.Namespace(config=cfg, role="bot")) == 0
        out = capsys.readouterr().out
        token = fake.user_token(BOT)
        assert "logged in as aibot" in out and token.access not in out and token.refresh not in out
        store = Store(tmp_path / "streamer.db")
        stored = twitch_auth.TokenStore(store).get(BOT)
        store.close()
        assert stored.access_token == token.access and set(twitch_auth.BOT_SCOPES) <= set(stored.scopes)
        assert token.access not in repr(stored)

        # a login as the wrong account is refused and stores nothing
        threading.Thread(target=lambda: (threading.Event().wait(0.3),
                                         fake.approve_device(next(iter(fake.device_codes.values()))["user_code"],
                                                             BOT)), daemon=True).start()
        assert twitch_auth.login_command(argparse.Namespace(config=cfg, role="broadcaster")) == 1

        settings = make_settings(tmp_path, client_id=fake.client_id)
        checks = {c.name: c for c in twitch.doctor_checks(settings)}
        assert checks["twitch client secret"].status == "OK"
        assert checks["twitch bot scopes"].status == "OK" and checks["twitch bot token"].status == "OK"
        assert checks["twitch broadcaster login"].status == "WARN"  # polls/points off, chat works
        fake.expire_token(token.access)
        fake.tokens.pop(token.access)
        checks = {c.name: c for c in twitch.doctor_checks(settings)}
        assert checks["twitch bot token"].status == "WARN"
        monkeypatch.delenv("TWITCH_CLIENT_SECRET")
        assert {c.name: c for c in twitch.doctor_checks(settings)}["twitch client secret"].status == "FAIL"


def test_doctor_checks_the_scopes_twitch_reports_not_the_stored_list(monkeypatch, tmp_path):
    with _fake_on_a_thread(monkeypatch) as fake:
        settings = make_settings(tmp_path)
        store = Store(settings.store.path)
        tokens = twitch_auth.TokenStore(store)
        # The stored lists claim every scope; Twitch's validate answers with what the tokens really carry.
        bot = fake.issue_token(BOT, ["user:read:chat", "user:bot"])
        owner = fake.issue_token(OWNER, ["channel:bot", "channel:read:polls", "channel:manage:redemptions"])
        tokens.save(user_id=BOT, login="aibot", role="bot", access=bot.access, refresh=bot.refresh,
                    scopes=twitch_auth.BOT_SCOPES, client_id=fake.client_id)
        tokens.save(user_id=OWNER, login="streamer", role="broadcaster", access=owner.access, refresh=owner.refresh,
                    scopes=twitch_auth.BROADCASTER_SCOPES, client_id=fake.client_id)
        store.close()
        checks = {c.name: c for c in twitch.doctor_checks(settings)}
        bot_scopes, owner_scopes = checks["twitch bot scopes"], checks["twitch broadcaster scopes"]
        assert bot_scopes.status == "FAIL" and "user:write:chat" in bot_scopes.detail
        assert bot_scopes.fix == "streamer twitch login --as bot"
        # manage:redemptions covers read:redemptions; read:polls cannot create polls
        assert owner_scopes.status == "FAIL" and owner_scopes.detail.endswith("lacks channel:manage:polls")
        assert owner_scopes.fix == "streamer twitch login --as broadcaster"
        assert checks["twitch bot token"].status == "OK"  # the token itself is fine
        # with chat polls the broadcaster needs no poll scope
        chat_polls = make_settings(tmp_path, polls="chat")
        assert {c.name: c for c in twitch.doctor_checks(chat_polls)}["twitch broadcaster scopes"].status == "OK"
        # Twitch unreachable: a WARN for the token, the stored list for the scopes, never a FAIL
        monkeypatch.setattr(twitchio.http.Route, "ID_BASE", "http://127.0.0.1:9/")
        checks = {c.name: c for c in twitch.doctor_checks(settings)}
        assert checks["twitch bot token"].status == "WARN" and checks["twitch bot scopes"].status == "OK"
        assert "not confirmed" in checks["twitch bot scopes"].detail
        assert all(c.status != "FAIL" for c in checks.values())


def test_doctor_warns_when_twitch_is_unreachable(monkeypatch, tmp_path):
    monkeypatch.setattr(twitchio.http.Route, "ID_BASE", "http://127.0.0.1:9/")  # nothing listens there
    monkeypatch.setenv("TWITCH_CLIENT_SECRET", "x" * 30)
    settings = make_settings(tmp_path, client_id="abc")
    store = Store(settings.store.path)
    twitch_auth.TokenStore(store).save(user_id=BOT, login="aibot", role="bot", access="a" * 30, refresh="r" * 50,
                                       scopes=twitch_auth.BOT_SCOPES, client_id="abc")
    store.close()
    checks = {c.name: c for c in twitch.doctor_checks(settings)}
    assert checks["twitch bot token"].status == "WARN" and "could not reach" in checks["twitch bot token"].detail
    assert checks["twitch bot scopes"].status == "OK"  # from the stored list, said to be unconfirmed


def test_redaction_scrubs_tokens_and_oauth_parameters(caplog):
    twitch_auth.install_redaction("supersecretclientvalue")
    twitch_auth.redaction().add("accesstoken123456")
    logger = logging.getLogger("twitchio.http")
    with caplog.at_level(logging.DEBUG, logger="twitchio.http"):
        logger.error("Request POST https://id.twitch.tv/oauth2/token?client_id=x&client_secret=%s&refresh_token=%s failed",
                     "supersecretclientvalue", "abcdefrefresh")
        try:
            raise RuntimeError('re-authenticate user with token: "accesstoken123456"')
        except RuntimeError:
            logger.exception("boom")
    text = caplog.text
    assert "supersecretclientvalue" not in text and "abcdefrefresh" not in text and "accesstoken123456" not in text
    assert "<redacted>" in text


def test_outbox_keeps_to_the_rate_limit_and_batches():
    async def body():
        sent: list[tuple[str, str | None]] = []
        now = [0.0]

        async def send(text: str, reply_to: str | None) -> None:
            sent.append((text, reply_to))

        box = ChatOutbox(send, per_window=3, max_queue=100, window_s=30.0, clock=lambda: now[0])
        task = asyncio.create_task(box.run())
        box.post("hello", reply_to="m1")
        await asyncio.sleep(0.01)
        assert sent == [("hello", "m1")]
        for i in range(2):
            box.post(f"msg {i}")
            await asyncio.sleep(0.01)
        assert len(sent) == 3
        for i in range(40):  # a burst while the window is full: waits, then goes out joined
            box.post(f"@viewer{i} your prompt is queued")
        await asyncio.sleep(0.05)
        assert len(sent) == 3
        now[0] = 31.5
        await asyncio.sleep(0.05)  # the waiting runner re-checks the (fake) clock when a message is posted
        box.post("last")
        await asyncio.sleep(0.2)
        task.cancel()
        assert 3 < len(sent) <= 6 and all(len(t) <= 500 for t, _ in sent)
        assert " | " in sent[3][0] and sent[3][1] is None

    asyncio.run(asyncio.wait_for(body(), 10))


def test_outbox_drops_oldest_when_full_and_clips():
    async def body():
        box = ChatOutbox(lambda t, r: asyncio.sleep(0), per_window=1, max_queue=3)
        for i in range(5):
            box.post(f"m{i}")
        assert len(box) == 3 and box.dropped == 2
        assert len(clip("x" * 900)) == 500 and clip("a\n\n b") == "a b"

    asyncio.run(body())


def test_cooldown_gate_does_not_charge_a_refused_use():
    now = [0.0]
    gate = CooldownGate(user_s=30.0, global_s=2.0, clock=lambda: now[0])
    assert gate.take("a") == 0
    assert gate.take("b") > 0  # global
    now[0] = 2.5
    assert gate.take("a") > 0  # own cooldown; must not restart the global one
    assert gate.take("b") == 0
    now[0] = 31.0
    assert gate.take("a") == 0


def test_parse_poll():
    assert parse_poll("a | b | c 90", 60) == (["a", "b", "c"], 90)
    assert parse_poll("a | b", 60) == (["a", "b"], 60)
    assert parse_poll("route 66 | b", 60) == (["route 66", "b"], 60)
