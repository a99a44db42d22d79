"""Importing with --text-back: past callers go through the missed-call policy, and quiet hours hold strictly."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from core.importing import read_past_calls, record_past_calls
from core.outbox import Pending
from tests.webhooks.policy_support import world

LA = ZoneInfo("America/Los_Angeles")
LA_CALLER, OPTED_OUT = "+13105550123", "+13105550188"


def _import(w, text: str, *, text_back: bool) -> None:
    runtime = w.textback.runtime
    tenant = runtime.tenants.get("smith-law")
    checked = read_past_calls(text, tenant=tenant, now=runtime.now())
    assert checked.bad == []
    pending = Pending()
    with runtime.db.transaction() as session:
        record_past_calls(session, tenant=tenant, calls=checked.calls, now=runtime.now(), pending=pending,
                          text_back=text_back)
    runtime.dispatch(pending.ids)
    w.textback.drain()


def test_past_callers_texted_back_wait_for_eight_in_their_zone_and_opted_out_ones_never_hear(
        stack, sqlite_db, tmp_path, monkeypatch):
    with world(stack=stack, db=sqlite_db, tmp_path=tmp_path, monkeypatch=monkeypatch) as w:
        # Given: it is 22:30 for the callers, one of whom opted out long ago
        w.clock.set(datetime(2031, 12, 1, 22, 30, tzinfo=LA))
        w.update_lead(OPTED_OUT, opted_out_at=datetime(2031, 6, 1, tzinfo=LA))

        # When: last month's log is imported with --text-back
        _import(w, "caller,time\n"
                   f"{LA_CALLER},2031-11-03 10:00 -08:00\n"
                   f'{OPTED_OUT},"Nov 4, 2031 11:00 AM PST"\n', text_back=True)

        # Then: nobody is texted at night (an imported call is not one just made) ...
        assert w.texts(LA_CALLER) == [] and w.texts(OPTED_OUT) == []
        w.later(hours=9, minutes=31)  # 08:01 for the callers
        # ... the caller is texted at eight, and the opted-out caller never
        assert len(w.texts(LA_CALLER)) == 1 and w.texts(OPTED_OUT) == []
        assert sorted(w.skip_reasons(), key=str) == [None, "opted_out"]


def test_without_text_back_nobody_is_texted_even_in_the_daytime(stack, sqlite_db, tmp_path, monkeypatch):
    with world(stack=stack, db=sqlite_db, tmp_path=tmp_path, monkeypatch=monkeypatch) as w:
        w.clock.set(datetime(2031, 12, 1, 11, 0, tzinfo=LA))

        _import(w, f"caller,time,name\n{LA_CALLER},2031-11-03 10:00,Dana Cole\n", text_back=False)
        w.later(hours=30)

        assert w.texts(LA_CALLER) == []
        [contact] = stack.hubspot.objects("contacts")
        assert contact["properties"]["phone"] == LA_CALLER and contact["properties"]["firstname"] == "Dana"
