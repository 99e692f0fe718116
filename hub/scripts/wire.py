"""What a script's helpers hand the hub after each call, checked field by field.

The prelude's helpers check their arguments in JS, but the script runs in the same context: it
can replace JSON.stringify, define Object.prototype.toJSON or call internals, and so hand the
hub any text. Nothing from that text is trusted: it is decoded into these Structs (a tagged
union on `t`, with the limits the helpers apply), and anything else is the script's failure.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec

MAX_TEXT = 64 * 1024                # a log line, a Slack text (prelude.js MAX_TEXT)
MAX_BODY = 16 * MAX_TEXT            # a webhook body
MAX_ACTIONS = 1000                  # per call (prelude.js MAX_ACTIONS)
TAG = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"
URL = r"^https?://[^/\s]+"

Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT + 64)]     # + the "… (N characters)" suffix
Tags = Annotated[list[Annotated[str, msgspec.Meta(pattern=TAG)]], msgspec.Meta(max_length=64)]
Url = Annotated[str, msgspec.Meta(pattern=URL, max_length=8192)]
JobName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class Log(msgspec.Struct, tag_field="t", tag="log", forbid_unknown_fields=True):
    level: Literal["info", "warn", "error"]
    text: Text


class Tag(msgspec.Struct, tag_field="t", tag="tag", forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(pattern=r"^.+:[0-9]+$", max_length=300)]
    add: Tags
    remove: Tags


class Webhook(msgspec.Struct, tag_field="t", tag="webhook", forbid_unknown_fields=True):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    url: Url
    body: Annotated[str, msgspec.Meta(max_length=MAX_BODY)]
    type: Literal["", "text/plain; charset=utf-8", "application/json"]


class Slack(msgspec.Struct, tag_field="t", tag="slack", forbid_unknown_fields=True):
    url: Url
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class Snapshot(msgspec.Struct, tag_field="t", tag="snapshot", forbid_unknown_fields=True):
    query: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
    # the prelude's SCRIPT-YYYYMMDDTHHMMSS-N.pcap: no path, no dot first (checked against the
    # script's own name by `check`)
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}-[0-9]{8}T[0-9]{6}-[0-9]{1,9}\.pcap$")]


class HubAction(msgspec.Struct, tag_field="t", tag="action", forbid_unknown_fields=True):
    action: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    data: Annotated[str, msgspec.Meta(max_length=MAX_BODY)]      # JSON text


class Job(msgspec.Struct, tag_field="t", tag="job", forbid_unknown_fields=True, omit_defaults=True):
    op: Literal["schedule", "remove"]
    name: JobName
    cron: Annotated[str, msgspec.Meta(max_length=200)] = ""


Action = Union[Log, Tag, Webhook, Slack, Snapshot, HubAction, Job]


class Drain(msgspec.Struct, forbid_unknown_fields=True):
    actions: Annotated[list[Action], msgspec.Meta(max_length=MAX_ACTIONS)] = []
    dropped: Annotated[int, msgspec.Meta(ge=0)] = 0
    result: str | None = None          # onItemQueried: the entry as JSON text


_decoder = msgspec.json.Decoder(Drain)


def decode(answer: str, script: str) -> tuple[list[dict[str, Any]], int, str | None]:
    """The helpers' answer -> (actions as dicts with `t`, dropped, result); ValueError saying
    what is wrong (the path of the field, as msgspec names it) otherwise."""
    try:
        drain = _decoder.decode(answer)
    except msgspec.ValidationError as error:
        raise ValueError(f"the helpers' answer is not what they make: {error}") from None
    except msgspec.DecodeError as error:
        raise ValueError(f"the helpers' answer is not JSON: {error}") from None
    for index, action in enumerate(drain.actions):
        if isinstance(action, Snapshot) and not action.name.startswith(script + "-"):
            raise ValueError(f"the helpers' answer is not what they make: a snapshot name must start with "
                             f"the script's own name - at `$.actions[{index}].name`")
        if isinstance(action, Job) and action.op == "schedule" and not action.cron:
            raise ValueError(f"the helpers' answer is not what they make: a schedule needs a cron - "
                             f"at `$.actions[{index}].cron`")
    return [msgspec.to_builtins(action) for action in drain.actions], drain.dropped, drain.result


class _Identified(msgspec.Struct):
    id: str


def not_the_entry(result: str, entry_json: str) -> str | None:
    """Why an onItemQueried result cannot stand for the entry (an object with its id), or None."""
    try:
        returned = msgspec.json.decode(result)
        entry_id = msgspec.json.decode(entry_json, type=_Identified).id
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        return f"the entry handed back is not JSON with an id: {error}"
    if not isinstance(returned, dict) or returned.get("id") != entry_id:
        return f"the entry handed back is not entry {entry_id} (an object with its id)"
    return None
