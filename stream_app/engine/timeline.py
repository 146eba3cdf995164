"""One user's timeline: timers and events in the user's order.

`take_event` applies an event at once, after the user's own timers due up to its time have fired.
`advance(profile, until)` fires every time-driven change due at or before `until` (a timer due at the
same moment as an event goes first). Advancing in several steps gives the same result as advancing
once, and a user's events arriving in timestamp order give the same result whenever the clock fires
the timers in between: this is what makes the Kafka path and the replay path agree.

`pending` is empty in every profile written now. Earlier releases held events there until the partition
clock passed them; `advance` still applies such events in time order, so an older profile catches up
at its first step.

Every function takes an optional `catalog.RuleDues` of the profile: the rules' due times as last
computed, told here which fields each step changed, so that the next due time is computed again only
for the rules concerned. Without it every rule's is computed; the results are the same.
"""

from __future__ import annotations

from ..events import Event
from ..segments import catalog
from ..segments.config import CatalogConfig
from ..state.aggregates import apply_event, expire
from ..state.profile import Profile, forget
from ..transitions import Change

ENGAGED = ("engaged", "loyal_advocate")


def next_timer(profile: Profile, cfg: CatalogConfig, dues: catalog.RuleDues | None = None) -> int | None:
    """Next moment after profile.t at which time alone may change something (including dormancy)."""
    if profile.last_event == 0:  # nothing applied yet: only pending events
        return None
    due = catalog.next_change(profile, cfg) if dues is None else dues.next_change(profile, cfg)
    dormant = profile.last_event + cfg.dormant_after_ms
    if dormant > profile.t and (due is None or dormant < due):
        due = dormant
    return due


def next_due(profile: Profile, cfg: CatalogConfig, dues: catalog.RuleDues | None = None) -> int | None:
    """When this user next needs attention: its earliest pending event or its next timer."""
    timer = next_timer(profile, cfg, dues)
    if profile.pending:
        first = profile.pending[0][0]
        return first if timer is None or first < timer else timer
    return timer


_DECIDED = ("members", "engaged_until")  # the fields a decision itself changes


def _diff(user_id: str, profile: Profile, t: int, cfg: CatalogConfig, cause_type: str, cause_ref: str,
          touched: set[str] | None = None, dues: catalog.RuleDues | None = None) -> list[Change]:
    """The changes of membership at ``t``; after an event, ``touched`` names the fields it changed."""
    new = catalog.memberships(profile, t, cfg, touched)
    old = profile.members
    if new == old:
        return []
    if dues is not None:
        dues.touch(_DECIDED)
    if old.get("lifecycle") in ENGAGED and new.get("lifecycle") not in ENGAGED:
        profile.engaged_until = t - 1  # the last moment engaged, for churn_risk ("at some moment in 60 days")
    changes = []
    for segment in sorted(set(old) | set(new)):
        before, after = old.get(segment), new.get(segment)
        if before != after:
            changes.append(
                Change(user_id, segment, before, after, t, cause_type, cause_ref, catalog.traits(segment, profile, t, cfg))
            )
    profile.members = new
    return changes


def _apply(user_id: str, profile: Profile, event: Event, cfg: CatalogConfig, decided: bool = True,
           dues: catalog.RuleDues | None = None) -> list[Change]:
    """Apply an event and decide the user at max(its time, the user's time). ``decided``: the user's
    members were decided at profile.t on its current fields (not after `forget`, nor an older
    profile's pending events), so only the rules the event concerns are evaluated again."""
    t = max(event.ts, profile.t)
    touched = apply_event(profile, event, cfg)
    if dues is not None:
        dues.touch(touched)
    profile.t = t
    expire(profile, t, cfg)
    return _diff(user_id, profile, t, cfg, "event", event.message_id, touched if decided else None, dues)


def reevaluate(user_id: str, profile: Profile, cfg: CatalogConfig, loaded_at: int,
               dues: catalog.RuleDues | None = None) -> list[Change]:
    """Decide the user's memberships again at their current moment under new definitions. The cause
    names the definitions and when they were loaded, so loading A, B, A, B never repeats an id."""
    if profile.last_event == 0:
        return []
    return _diff(user_id, profile, profile.t, cfg, "definitions", f"{cfg.version}@{loaded_at}", dues=dues)


def refresh(user_id: str, profile: Profile, t: int, cfg: CatalogConfig, population_version: str,
            dues: catalog.RuleDues | None = None) -> list[Change]:
    """A new RFM population (cfg.rfm_population): decide the user again at ``t``, the clock the user
    follows (live or backfill). Every timer due by ``t`` has fired, so moving the user's time to ``t``
    changes nothing else."""
    if profile.last_event == 0:
        return []
    if t > profile.t:
        profile.t = t
        expire(profile, t, cfg)
    return _diff(user_id, profile, profile.t, cfg, "refresh", f"{population_version}@{profile.t}", dues=dues)


def take_event(user_id: str, profile: Profile, event: Event, cfg: CatalogConfig,
               dues: catalog.RuleDues | None = None) -> list[Change]:
    """An event takes effect at once: the user's own timers due up to its time fire first, then it is
    applied and the user decided at max(its time, the user's decided-until time). A user silent for the
    dormancy period is forgotten first (no transitions for the drop) and comes back as a new user."""
    changes, dormant = advance(user_id, profile, event.ts, cfg, dues)
    if dormant:
        forget(profile)
        if dues is not None:
            dues.reset()
    changes.extend(_apply(user_id, profile, event, cfg, not dormant and profile.last_event != 0, dues))
    return changes


def erase(user_id: str, profile: Profile, event: Event) -> list[Change]:
    """An erasure request (a Segment-spec `delete` event): the user leaves every segment at once, at
    max(the request's time, the user's time), with cause `erasure` and no traits (nothing of the user's
    data travels with it). No timer fires first and no pending event is applied: the caller drops the
    profile whole."""
    at = max(event.ts, profile.t)
    return [Change(user_id, segment, member, None, at, "erasure", event.message_id, {})
            for segment, member in sorted(profile.members.items())]


def advance(user_id: str, profile: Profile, until: int, cfg: CatalogConfig,
            dues: catalog.RuleDues | None = None) -> tuple[list[Change], bool]:
    """Process everything due at or before ``until``. Returns (changes, dormant) where dormant means the
    profile has reached its 400-day silence and must be dropped without transitions."""
    changes: list[Change] = []
    while True:
        timer = next_timer(profile, cfg, dues)
        pending_ts = profile.pending[0][0] if profile.pending else None
        if pending_ts is not None and pending_ts <= until and (timer is None or pending_ts < timer):
            event = Event.from_compact(user_id, profile.pending.pop(0))
            changes.extend(_apply(user_id, profile, event, cfg, False, dues))
        elif timer is not None and timer <= until:
            if timer >= profile.last_event + cfg.dormant_after_ms:
                if not profile.pending:
                    return changes, True
                forget(profile)  # silent for 400 days, then back: a new user, with no transitions for the drop
                if dues is not None:
                    dues.reset()
                continue
            profile.t = timer
            expire(profile, timer, cfg)
            changes.extend(_diff(user_id, profile, timer, cfg, "timer", str(timer), dues=dues))
        else:
            return changes, False
