"""worker/redact.py on entries and bodies as the dissectors make them."""

from __future__ import annotations

import json
import random

import msgspec

from factories import tentry
from shark.model import Body, Entry
from shark.token import keyed_hash
from worker.redact_scan import message_left_alone
from worker.redact import (_SQL_HINT, DEFAULT_FIELDS, DEFAULT_HEADERS, MESSAGE_KEYS, NOT_TEXT_KEYS,
                           SUMMARY_READ, UNTOUCHED,
                           Redactor, _sql_hint, key_for)

KEY = "installation-token"


def mark(value: str) -> str:
    return f"[redacted:{keyed_hash(KEY, value)}]"


def test_headers_keep_scheme_and_cookie_names() -> None:
    entry = tentry(request={"method": "GET", "path": "/", "query": {}, "headers": {
        "authorization": "Basic Ym9iOnB3", "proxy-authorization": "opaque", "cookie": "a=1; b=2",
        "x-auth-token": "t", "x-other": "kept", "accept": "*/*"}},
        response={"status": 200, "headers": {"set-cookie": "a=1; Path=/\nb=2; Secure; HttpOnly"},
                  "trailers": {"x-api-key": "k"}})
    Redactor(KEY).entry(entry)
    assert entry.request["headers"] == {
        "authorization": f"Basic {mark('Ym9iOnB3')}", "proxy-authorization": mark("opaque"),
        "cookie": f"a={mark('1')}; b={mark('2')}", "x-auth-token": mark("t"), "x-other": "kept",
        "accept": "*/*"}
    assert entry.response["headers"]["set-cookie"] == f"a={mark('1')}; Path=/\nb={mark('2')}; Secure; HttpOnly"
    assert entry.response["trailers"] == {"x-api-key": mark("k")}
    # names are case-insensitive where a protocol keeps their case (AMQP's headers table)
    amqp = tentry(protocol="amqp", summary="basic.publish", request={"headers": {"X-Api-Key": 7, "n": 1}})
    Redactor(KEY).entry(amqp)
    assert amqp.request["headers"] == {"X-Api-Key": mark("7"), "n": 1}


def test_urls_in_headers_and_kubernetes_websocket_tokens() -> None:
    entry = tentry(request={"method": "GET", "path": "/", "query": {}, "headers": {
        "referer": "https://app.example/list?page=2&api_key=k1",
        "sec-websocket-protocol": "v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9r"}},
        response={"status": 302, "headers": {
            "location": "https://app.example/cb#access_token=t1&token_type=bearer",
            "content-location": "/plain/path"}})
    Redactor(KEY).entry(entry)
    assert entry.request["headers"] == {
        "referer": f"https://app.example/list?page=2&api_key={mark('k1')}",
        "sec-websocket-protocol": f"v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.{mark('dG9r')}"}
    assert entry.response["headers"] == {
        "location": f"https://app.example/cb#access_token={mark('t1')}&token_type=bearer",
        "content-location": "/plain/path"}


def test_query_summary_and_userinfo() -> None:
    entry = tentry(summary="GET http://bob:pw%21@example.com/x?Access_Token=a%2Bb&q=1",
                   request={"method": "GET", "path": "/x", "host": "bob:pw!@example.com",
                            "query": {"Access_Token": ["a+b"], "q": ["1"]}, "headers": {}})
    Redactor(KEY).entry(entry)
    # the same value shows the same hash whether it came decoded (query) or encoded (summary)
    assert entry.summary == f"GET http://{mark('bob:pw!')}@example.com/x?Access_Token={mark('a+b')}&q=1"
    assert entry.request["query"] == {"Access_Token": [mark("a+b")], "q": ["1"]}
    assert entry.request["host"] == f"{mark('bob:pw!')}@example.com"


def test_websocket_json_messages() -> None:
    entry = tentry(protocol="websocket", summary="text 40 bytes →",
                   request={"direction": "client", "opcode": "text",
                            "text": '{"type":"auth","access_token":"abc"}'}, response=None)
    Redactor(KEY).entry(entry)
    assert entry.request["text"] == f'{{"type":"auth","access_token":"{mark("abc")}"}}'


def test_websocket_text_prefilter_finds_what_the_json_regex_finds() -> None:
    # A text is skipped only when the regex could not match in it: quoted names in any case,
    # the non-ASCII foldings of re.I ('ſ' for 's', 'K' for 'k'), names inside longer names.
    pieces = ['"', '"token"', '"TOKEN"', '"ToKen"', "token", '"to', 'ken"', '"toKen":"v"', ":",
              '"aſſecret"', '"ſecret"', '"api\u212aey"', '"apiKey"', '"access_token"', "x", " ",
              '"passwd"', '"pass"', '{"a": 1}', "é", '"secret": 5', '"my_token"']
    rng = random.Random(5)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6))) for _ in range(4000)]
    for redactor in (Redactor(KEY), Redactor(KEY, fields=["Sessión"]), Redactor(KEY, fields=["x.y"])):
        for text in [*pieces, *texts]:
            if redactor._json.search(text):
                assert redactor._may_hold_field(text), (text, redactor.fields)
    assert not Redactor(KEY)._may_hold_field('{"event": "tick", "n": 5}')


def test_redis_credentials() -> None:
    auth = tentry(protocol="redis", summary="AUTH user", response=None,
                  request={"command": "AUTH", "key": None, "args": 2, "arguments": ["user", "s3cret"]})
    config = tentry(protocol="redis", summary="CONFIG SET requirepass", response=None,
                    request={"command": "CONFIG SET", "key": None, "args": 2, "arguments": ["requirepass", "pw"]})
    get = tentry(protocol="redis", summary="GET AUTH", response=None,
                 request={"command": "GET", "key": "AUTH", "args": 1, "arguments": ["AUTH"]})
    for entry in (auth, config, get):
        Redactor(KEY).entry(entry)
    assert auth.request["arguments"] == [mark("user"), mark("s3cret")] and auth.summary == f"AUTH {mark('user')}"
    assert config.request["arguments"] == ["requirepass", mark("pw")]
    assert config.summary == "CONFIG SET requirepass"
    assert get.request["arguments"] == ["AUTH"] and get.summary == "GET AUTH"


def test_redis_commands_outside_secret_commands_hold_no_credentials() -> None:
    """Redactor.entry looks into a Redis entry's arguments only for SECRET_COMMANDS: for every
    other command (known ones, sub-commands, any case) secret_arguments finds nothing, with
    arguments that would be hidden after one of those."""
    from worker.dissectors.redis import (CONTAINERS, KNOWN_COMMANDS, SECRET_COMMANDS,
                                         secret_arguments)
    args = ["AUTH", "user", "pass", "AUTH2", "u", "p", "requirepass", "masterauth"]
    subcommands = ("SET", "GET", "SETNAME", "AUTH", "HELLO", "MIGRATE")
    commands = {*KNOWN_COMMANDS, *(f"{c} {s}" for c in CONTAINERS for s in subcommands),
                "auth", "config set", "Hello", ""}
    for command in commands - SECRET_COMMANDS:
        assert secret_arguments(command, args) == [], command
    for command in SECRET_COMMANDS:
        assert secret_arguments(command, ["requirepass", *args]), command
        entry = tentry(protocol="redis", summary=command, response=None,
                       request={"command": command, "key": None, "args": 9, "arguments": ["requirepass", *args]})
        Redactor(KEY).entry(entry)
        assert entry.request["arguments"] != ["requirepass", *args], command


def test_sql_password_literals() -> None:
    redactor = Redactor(KEY)
    cases = {
        "ALTER ROLE app WITH ENCRYPTED PASSWORD 'it''s'": f"ALTER ROLE app WITH ENCRYPTED PASSWORD '{mark('it' + chr(39) * 2 + 's')}'",
        "CREATE USER 'a'@'%' IDENTIFIED BY 'pw1'": f"CREATE USER 'a'@'%' IDENTIFIED BY '{mark('pw1')}'",
        "ALTER USER a IDENTIFIED WITH mysql_native_password BY 'pw2'":
            f"ALTER USER a IDENTIFIED WITH mysql_native_password BY '{mark('pw2')}'",
        "SET PASSWORD FOR a = PASSWORD('pw3')": f"SET PASSWORD FOR a = PASSWORD('{mark('pw3')}')",
        "SELECT id FROM users WHERE password = 'pw4'": f"SELECT id FROM users WHERE password = '{mark('pw4')}'",
        "SELECT password_hash FROM users WHERE name = 'bob'": "SELECT password_hash FROM users WHERE name = 'bob'",
        "ALTER ROLE app PASSWORD 'cut sh": f"ALTER ROLE app PASSWORD '{mark('cut sh')}'",
    }
    for query, expected in cases.items():
        entry = tentry(protocol="postgres", summary=query, request={"kind": "simple", "query": query})
        redactor.entry(entry)
        assert (entry.request["query"], entry.summary) == (expected, expected), query


def test_sql_hint_finds_what_its_regex_finds() -> None:
    # ASCII text is tested without the regex; re.I folds 'ſ' to 's' and 'ı' to 'i' too.
    words = ["password", "PassWord", "IDENTIFIED", "identifie", "passwor d", "ſ", "ı", "k", "",
             " ", "x", "pAſſword", "ıdentified", "SELECT 1", "pass", "word", "İDENTIFIED"]
    rng = random.Random(3)
    texts = ["".join(rng.choice(words) for _ in range(rng.randrange(4))) for _ in range(3000)]
    for text in [*words, *texts]:
        assert _sql_hint(text) == bool(_SQL_HINT.search(text)), text


def test_protocols_without_secret_fields_are_left_alone() -> None:
    entry = tentry(protocol="postgres", summary="SELECT 1", request={"kind": "simple", "query": "SELECT 1"})
    Redactor(KEY).entry(entry)
    assert entry.request == {"kind": "simple", "query": "SELECT 1"} and entry.summary == "SELECT 1"


def test_protocols_the_dissection_does_not_redact_hold_nothing_to_redact() -> None:
    """worker.dissection skips Redactor.entry for UNTOUCHED protocols: their golden entries
    (every packet type and version the goldens have) go through it unchanged, even with extra
    header and field names, and none of their fields is one entry() reads."""
    from support.golden import GOLDEN, dissect_capture
    read = MESSAGE_KEYS
    redactor = Redactor(KEY, headers=["topic", "client_id"], fields=["topic", "client_id", "payload"])
    for protocol in UNTOUCHED:
        seen = 0
        for capture in sorted((GOLDEN / protocol).glob("*.pcap")):
            for made in dissect_capture(capture):
                entry = msgspec.convert(made, Entry)
                before = msgspec.json.encode(entry)
                redactor.entry(entry)
                assert msgspec.json.encode(entry) == before, (capture.name, made["summary"])
                for message in (made["request"], made["response"] or {}):
                    assert not read & message.keys(), (capture.name, made["summary"])
                seen += 1
        assert seen > 5, protocol


class _Reads(dict):
    """A message that records the keys read from it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key, default=None):  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):  # type: ignore[override]
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):  # type: ignore[override]
        self.read.add(key)
        return super().__contains__(key)


def test_entry_skips_only_sides_without_a_key_it_reads() -> None:
    """Redactor.entry passes over a side none of whose keys is in MESSAGE_KEYS: _message reads
    no other key (of a side holding every one, or none of them), and a side with any one of
    them alone is still redacted."""
    full = {"headers": {"cookie": "a=1"}, "trailers": {"x-api-key": "k"},
            "query": {"token": ["t"]}, "host": "u:p@h", "authority": "v:q@h", "text": '{"token": "x"}'}
    for message in (_Reads(full), _Reads({"method": "GET", "n": 1})):
        Redactor(KEY)._message(message, True)
        assert message.read <= MESSAGE_KEYS, message.read - MESSAGE_KEYS
    assert _Reads(full).keys() == MESSAGE_KEYS
    for key in MESSAGE_KEYS:
        for side in ("request", "response"):
            message = {"other": 1, key: full[key]}
            entry = tentry(protocol="amqp", summary="x", **{side: message})
            before = json.dumps(message, sort_keys=True)
            Redactor(KEY).entry(entry)
            assert json.dumps(getattr(entry, side), sort_keys=True) != before, (key, side)


def test_json_bodies_keep_their_shape_even_truncated() -> None:
    redactor = Redactor(KEY, fields=["PIN"])
    text = '{"user": "bob", "Password": "p\\"w", "n": {"apikey": 42, "x": [1]}, "pin": null, "secret": {"a": 1}}'
    out = json.loads(redactor.body_text(text, "application/json; charset=utf-8"))
    assert out == {"user": "bob", "Password": mark('p\\"w'), "n": {"apikey": mark("42"), "x": [1]},
                   "pin": mark("null"), "secret": {"a": 1}}
    assert redactor.body_text('{"token": "abcdef', "application/json") == f'{{"token": "{mark("abcdef")}"'
    assert redactor.body_text('{"token": "x"}', "") == f'{{"token": "{mark("x")}"}}'   # sniffed


def test_form_bodies_and_other_bodies() -> None:
    redactor = Redactor(KEY)
    assert redactor.body_text("user=bob&passwd=a+b%21&x=1", "application/x-www-form-urlencoded") == \
        f"user=bob&passwd={mark('a b!')}&x=1"
    assert redactor.body_text("password=plain text", "text/plain") == "password=plain text"


def test_detail_redacts_text_bodies_only() -> None:
    entry = tentry(request={"content_type": "application/json", "headers": {},
                            "body": Body(data='{"secret": "s"}')},
                   response={"content_type": "application/json",
                             "body": Body(data="eyJzZWNyZXQiOiAicyJ9", encoding="base64")})
    Redactor(KEY).detail(entry)
    assert entry.request["body"].data == f'{{"secret": "{mark("s")}"}}'
    assert entry.response["body"].data == "eyJzZWNyZXQiOiAicyJ9"


def test_names_added_and_described() -> None:
    described = Redactor(KEY, headers=["X-Session"], fields=["otp", "token"]).describe()
    assert described["enabled"] is True
    assert described["headers"] == [*DEFAULT_HEADERS, "x-session"]
    assert described["fields"] == [*DEFAULT_FIELDS, "otp"]


def test_key_without_a_token_is_kept_in_the_store(tmp_path) -> None:
    assert key_for("the-token", tmp_path) == "the-token"
    key = key_for(None, tmp_path)
    assert key_for(None, tmp_path) == key
    assert (tmp_path / "redaction.key").stat().st_mode & 0o777 == 0o600


def test_what_message_left_alone_passes_entry_leaves_unchanged() -> None:
    """worker.dissection skips Redactor.entry for an entry of a protocol outside SUMMARY_READ
    whose sides message_left_alone passes: random sides (the keys _message reads and others,
    secrets and not, JSON texts with and without field names) show that entry() changes none
    of those, and that the check is not vacuous (it lets through sides entry() changes)."""
    rng = random.Random(11)
    texts = ['{"token": "t"}', '{"event": "tick"}', '{"Password" : 5}', "token=x", "", '"',
             '{"ſecret": 1}', '{"a": "é", "apikey": "k"}', '{"n": 1}', 'plain "quoted" text']
    values = {
        "headers": [{"authorization": "Bearer x"}, {"accept": "*/*"}, {}],
        "trailers": [{"x-api-key": "k"}, {"grpc-status": "0"}],
        "query": [{"token": ["t"]}, {"q": ["1"]}, {}],
        "host": ["bob:pw@db", "db:5432", ""],
        "authority": ["u@h", "h"],
        "text": [*texts, None, 5, b'{"token": 1}'],
        "opcode": ["text"], "data": ['{"token": "t"}'], "payload": ['{"token": "t"}'],
    }
    protocols = ["websocket", "amqp", "tls", "tcp", "mqtt", "http", "redis", "postgres"]
    passed = changed = 0
    for redactor in (Redactor(KEY), Redactor(KEY, fields=["event", "Sessión"])):
        for _ in range(3000):
            sides = []
            for _ in range(2):
                keys = rng.sample(sorted(values), rng.randrange(0, 4))
                sides.append({key: rng.choice(values[key]) for key in keys})
            request, response = sides[0], sides[1] if rng.random() < 0.7 else None
            entry = tentry(protocol=rng.choice(protocols), summary="GET /?token=1",
                           request=request, response=response)
            before = msgspec.json.encode(entry)
            left = entry.protocol not in SUMMARY_READ and all(
                message_left_alone(side, NOT_TEXT_KEYS, redactor.quoted_names)
                for side in (request, response))
            redactor.entry(entry)
            if left:
                passed += 1
                assert msgspec.json.encode(entry) == before, (entry.protocol, request, response)
            else:
                changed += msgspec.json.encode(entry) != before
    assert passed > 500 and changed > 1000, (passed, changed)
    assert NOT_TEXT_KEYS == MESSAGE_KEYS - {"text"}
