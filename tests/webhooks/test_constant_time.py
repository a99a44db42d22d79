"""Comparisons of secrets are constant-time (issue 14 item 5), and a plain `==` on one cannot come back unseen.

The modules that check a presented proof are read as Python syntax trees. Two rules:

1. No `==`, `!=`, `in` or `not in` between values whose names say they are a secret, signature, token, key,
   CSRF token, clientState, password or digest, unless one side is a literal (`len(token) == 64` and
   `signature == ""` reveal nothing). Such comparisons go through `core.constant_time.equal`.
2. `hmac.compare_digest` / `secrets.compare_digest` are called only by `core.constant_time`, which gives them
   bytes: on a `str` beyond ASCII they raise TypeError, a 500 for a forged "é" (the forgery matrix has one
   such case per entry point).

A lookup in a database query (`AdminSession.token_sha256 == _sha256(token)`, a mapped column on the left) is
not a comparison in Python: the stored side is a SHA-256 or an identifier that names a row before the proof
is checked, so it is not flagged.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from core import constant_time

ROOT = Path(__file__).resolve().parents[2]
AUTH_MODULES = sorted({*ROOT.glob("webhooks/**/*.py"), ROOT / "core/admin_accounts.py",
                       ROOT / "core/store/sync_state.py", ROOT / "connectors/oauth_flow.py",
                       ROOT / "core/secrets.py", ROOT / "core/store/connections.py"})
SECRET_NAME = re.compile(r"secret|token|signature|password|csrf|client_?state|api_?key|digest|sha256|hmac", re.I)
EQUALITY = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _names(node: ast.AST) -> set[str]:
    found = set()
    for part in ast.walk(node):
        if isinstance(part, ast.Name):
            found.add(part.id)
        elif isinstance(part, ast.Attribute):
            found.add(part.attr)
        elif isinstance(part, ast.Constant) and isinstance(part.value, str):
            found.add(part.value)  # headers.get("X-Hook-Signature") names what it holds
    return {name for name in found if SECRET_NAME.search(name)}


def _mapped_column(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id[:1].isupper()


def plain_comparisons_of_secrets(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not any(isinstance(op, EQUALITY) for op in node.ops):
            continue
        sides = [node.left, *node.comparators]
        if any(isinstance(side, ast.Constant) for side in sides) or _mapped_column(node.left):
            continue
        if any(_names(side) for side in sides):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def direct_compare_digest(source: str) -> list[str]:
    return [f"line {node.lineno}: {ast.unparse(node)}" for node in ast.walk(ast.parse(source))
            if (isinstance(node, ast.Attribute) and node.attr == "compare_digest")
            or (isinstance(node, ast.ImportFrom) and any(a.name == "compare_digest" for a in node.names))]


@pytest.mark.parametrize("module", AUTH_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_auth_module_compares_a_secret_with_plain_equality(module):
    assert plain_comparisons_of_secrets(module.read_text()) == []


@pytest.mark.parametrize("module", [p for p in ROOT.glob("*/**/*.py")
                                    if p.parts[len(ROOT.parts)] in ("webhooks", "sync", "core", "connectors")
                                    and p.name != "constant_time.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_core_constant_time_calls_compare_digest(module):
    assert direct_compare_digest(module.read_text()) == []


def test_the_scan_catches_the_comparisons_it_is_for_and_leaves_the_rest():
    flagged = plain_comparisons_of_secrets(
        "a = expected == request.headers.get('X-Hook-Signature')\n"
        "b = presented != subscription.secret_sha256\n"
        "c = csrf in viewer.tokens\n"
        "d = hmac.new(k, body, sha256).hexdigest() == signature\n")
    passed = plain_comparisons_of_secrets(
        "a = signature == ''\n"
        "b = len(token) == 64\n"
        "c = AdminSession.token_sha256 == _sha256(token)\n"
        "d = state == 'exists'\n"
        "e = hook.provider != 'clio'\n"
        "f = token is None\n")

    assert [line.split(":")[0] for line in flagged] == ["line 1", "line 2", "line 3", "line 4"]
    assert passed == []
    assert direct_compare_digest("import hmac\nok = hmac.compare_digest(a, b)\n") == ["line 2: hmac.compare_digest"]
    assert direct_compare_digest("from secrets import compare_digest\n") == ["line 1: from secrets import compare_digest"]


@pytest.mark.parametrize("presented, expected, same", [
    ("abc", "abc", True), ("abc", "abd", False), ("signatur\u00e9", "signature", False),
    ("\u00e9", "\u00e9", True), (b"abc", "abc", True), (None, "abc", False), ("abc", None, False),
    ("", "", True), ("\ud800", "x", False),
])
def test_constant_time_equal_answers_for_any_text_without_raising(presented, expected, same):
    assert constant_time.equal(presented, expected) is same
