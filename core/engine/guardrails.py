"""Guardrails on every interpretation and every outbound text.

Inbound, they name what a reply is doing besides answering: trying to steer the
assistant (prompt injection), asking whether it is a bot, asking for a person,
asking for advice or prices, asking something else, or being hostile. The
engine decides what to do with these signals; an injection attempt never
changes what the engine does, it is read as an unclear answer.

Outbound, `screen` rejects a text that gives advice, promises an outcome, quotes
a price or claims to be human, unless the sentence is one of the facts the
business configured. Playbooks are screened when they load; the engine screens
every reply again before it leaves, and a reply that fails is replaced by the
holding reply and a handoff.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_I = re.I

INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}\b(?:instruction|instructions|rules|prompt|prompts|"
    r"guidelines|directions|previous|above|programming|system)\b"
    r"|\b(?:system|developer)\s*(?:prompt|message|mode)\b|\bjail\s*break"
    r"|\byou\s+are\s+now\b|\b(?:act|behave)\s+as\s+(?:if|an?|my)\b|\bpretend\s+(?:to\s+be|you\s*(?:are|'re))\b"
    r"|\bnew\s+instructions?\b|\bfrom\s+now\s+on\s+(?:you|reply|respond|answer|say)\b"
    r"|\brepeat\s+after\s+me\b|\b(?:say|reply|respond|answer)\s+(?:with\s+)?(?:exactly|only|verbatim)\b"
    r"|</?\s*(?:system|assistant|user|instructions?)\s*>|\[\s*(?:system|inst)\s*\]|###\s*(?:system|instruction)"
    r"|\b(?:print|reveal|show|tell\s+me)\s+(?:me\s+)?(?:your|the)\s+(?:instructions|prompt|rules|system)",
    _I,
)
BOT_QUESTION = re.compile(
    r"\b(?:are|r)\s+(?:you|u)\s+(?:a\s+|an\s+)?(?:real\s+)?(?:bot|robot|human|person|computer|machine|ai|"
    r"automated|people|real|live|chat\s*bot)\b"
    r"|\bis\s+this\s+(?:a\s+|an\s+)?(?:real\s+)?(?:bot|robot|human|person|computer|machine|ai|automated|"
    r"auto\s*reply|recording|chat\s*bot|real)\b"
    r"|\b(?:talking|texting|chatting|speaking)\s+(?:to|with)\s+(?:a\s+)?(?:real\s+)?(?:bot|robot|human|person|"
    r"machine|computer|ai)\b|\bwho\s+(?:is\s+this|am\s+i\s+(?:talking|texting))\b",
    _I,
)
HUMAN = re.compile(
    r"\b(?:speak|talk|chat|text)\s+(?:to|with)\s+(?:a\s+|an\s+|the\s+|your\s+|some\s*)?(?:real\s+|live\s+|actual\s+)?"
    r"(?:person|human|one|body|someone|somebody|lawyer|attorney|doctor|nurse|agent|realtor|staff|manager|"
    r"representative|receptionist|tech|technician|owner)\b"
    r"|\b(?:please|can\s+you|could\s+you|can\s+someone|could\s+someone|have\s+someone|someone|pls|plz)\s+"
    r"(?:please\s+)?call\s+me\b|\bcall\s+me\s+(?:back|asap|now|please|right|today|at)\b"
    r"|\b(?:real|live|actual)\s+(?:person|human)\b|\bhuman\s+please\b|\b(?:representative|operator)\b"
    r"|\b(?:want|need|get\s+me|give\s+me|connect\s+me\s+(?:with|to)|put\s+me\s+through\s+to|transfer\s+me\s+to)\s+"
    r"(?:a|an|the|to|with|some)?\s*(?:real\s+|live\s+|actual\s+)?(?:person|human|agent|someone|somebody|nurse|"
    r"lawyer|attorney|realtor|technician|receptionist)\b"
    r"|\bgive\s+me\s+a\s+call\b|\bi\s+(?:want|need|would\s+like)\s+(?:a\s+)?(?:call\s*back|callback|phone\s+call)\b",
    _I,
)
ADVICE = re.compile(
    r"\bshould\s+i\b(?!\s+(?:bring|arrive|come|park|call|wear|fill|send|text|book|schedule|expect))|\bdo\s+i\s+(?:have\s+a\s+(?:good\s+|strong\s+)?case|need\s+to|have\s+to)\b|\bcan\s+i\s+sue\b"
    r"|\bwill\s+i\s+(?:win|lose|get|go\s+to\s+jail|be\s+ok)\b|\bwhat\s+(?:are|r)\s+my\s+(?:chances|odds|options|rights)\b"
    r"|\bis\s+(?:it|this|that)\s+(?:legal|illegal|normal|serious|safe|bad|a\s+good\s+(?:time|idea|deal|investment))\b"
    r"|\bwhat\s+(?:should|would|do)\s+(?:i|you)\s+(?:do|recommend|suggest|advise)\b|\badvice\b|\badvise\b"
    r"|\bwhat\s+do\s+you\s+think\b|\bam\s+i\s+(?:liable|at\s+fault|in\s+trouble|eligible|entitled)\b"
    r"|\bcan\s+(?:they|he|she)\s+(?:do\s+that|take|sue|evict|fire)\b|\bhow\s+much\s+(?:will|could|can)\s+i\s+get\b"
    r"|\bwhat\s+(?:medication|medicine|dose|dosage)\b|\bhow\s+much\s+can\s+i\s+afford\b|\bwhat\s+(?:rate|interest)\b",
    _I,
)
PRICE = re.compile(r"\bhow\s+much\b|\bcost|\bprice|\bpricing\b|\bfees?\b|\bcharge|\brates?\b|\bquote\b",
                   _I)
QUESTION = re.compile(
    r"\?\s*$|^\s*(?:what|how|when|where|why|who|which|whats|what's|do\s+you|does|did|can\s+you|could\s+you|"
    r"are\s+you|is\s+(?:there|it|this)|will\s+you|would\s+you|have\s+you)\b",
    _I,
)
HOSTILE = re.compile(
    r"\b(?:fuck\w*|f\*+k\w*|shit\w*|bitch\w*|asshole\w*|bastard\w*|cunt\w*|motherf\w*|wtf|stfu|"
    r"screw\s+you|go\s+to\s+hell|piss\s+off|shut\s+up|stupid|idiot\w*|moron\w*|useless|scum)\b",
    _I,
)
HEALTH_DETAILS = re.compile(
    r"\b(?:pain|hurts?|bleeding|fever|rash|cough\w*|infection|vomit\w*|nausea|diarrh\w*|dizzy|lump|swollen|"
    r"swelling|migraine|headache|pregnan\w*|diabet\w*|cancer|hiv|std|depress\w*|anxiety|symptom\w*|diagnos\w*|"
    r"prescri\w*|medication|surgery|injur\w*|broke\s+my|sprain\w*)\b",
    _I,
)
_ASKS_HEALTH = re.compile(r"\b(?:symptom\w*|what(?:'s| is)\s+wrong|describe|diagnos\w*|condition|medication\w*|"
                          r"pain|how\s+(?:are|do)\s+you\s+feel)\b", _I)

# Outbound: what the assistant must never say on its own authority.
_ADVICE_OUT = re.compile(
    r"\byou\s+should\s+(?:sue|file|plead|sign|settle|take|stop|start|buy|sell|rent|invest|wait|not)\b"
    r"|\byou\s+(?:have|'ve\s+got)\s+a\s+(?:good|strong|solid|great)\s+case\b|\bi\s+(?:recommend|advise|suggest)\b"
    r"|\bmy\s+advice\b|\byou\s+(?:probably\s+)?have\s+(?:a|an)\s+\w*\s*(?:infection|condition|disease)\b"
    r"|\btake\s+\d+\s*(?:mg|milligrams|pills|tablets)\b",
    _I,
)
_PROMISE_OUT = re.compile(r"\bguarantee\w*|\bpromise\w*|\b100\s*%|\brisk[-\s]free\b|\bwill\s+definitely\b"
                          r"|\byou(?:'ll|\s+will)\s+(?:win|get\s+(?:full|your\s+money))\b|\bno\s+risk\b", _I)
_PRICE_OUT = re.compile(r"[$€£]\s?\d|\b\d[\d,.]*\s*(?:dollars|usd|bucks)\b|\bfree\s+(?:of\s+charge|consultation|"
                        r"estimate|quote)\b|\bno\s+(?:charge|cost|fee)\b|\b\d+\s*%\s*(?:off|discount)\b", _I)
_HUMAN_CLAIM_OUT = re.compile(r"\bi\s*(?:'m|\s+am)\s+(?:a\s+)?(?:real\s+)?(?:person|human)\b|\bnot\s+a\s+(?:bot|robot|"
                              r"machine|computer)\b|\bthis\s+is\s+not\s+(?:automated|a\s+bot)\b|\breal\s+person\s+here\b",
                              _I)


def injection(text: str) -> bool:
    return bool(INJECTION.search(text))


def asks_if_bot(text: str) -> bool:
    return bool(BOT_QUESTION.search(text))


def wants_human(text: str) -> bool:
    return bool(HUMAN.search(text))


def seeks_advice(text: str) -> bool:
    return bool(ADVICE.search(text))


def asks_price(text: str) -> bool:
    return bool(PRICE.search(text)) and is_question(text)


def is_question(text: str) -> bool:
    return bool(QUESTION.search(text))


def hostile(text: str) -> bool:
    return bool(HOSTILE.search(text))


def shares_health_details(text: str) -> bool:
    return bool(HEALTH_DETAILS.search(text))


def asks_health_details(text: str) -> bool:
    return bool(_ASKS_HEALTH.search(text))


def screen(text: str, *, facts: Iterable[str] = ()) -> list[str]:
    """What is wrong with an outbound text (empty when it may be sent). Approved facts may state anything."""
    for fact in facts:
        text = text.replace(fact, "")
    problems = []
    if _ADVICE_OUT.search(text):
        problems.append("gives advice")
    if _PROMISE_OUT.search(text):
        problems.append("promises an outcome or guarantees")
    if _PRICE_OUT.search(text):
        problems.append("states a price that is not a configured fact")
    if _HUMAN_CLAIM_OUT.search(text):
        problems.append("claims to be a person")
    return problems
