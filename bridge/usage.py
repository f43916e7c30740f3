"""Per-call token usage and an estimated cost, from the Realtime API's own usage reports.

Two meters run per call. The Realtime model reports `usage` on every `response.done`; the
transcription model that writes down the caller (when the session asks for one) reports
its own `usage` on `conversation.item.input_audio_transcription.completed`, billed at that
model's prices, either as tokens or as seconds of audio. Both arrive from the network (or
from a gateway that may trim them), so every reader here takes any shape and never raises.

The cost is an estimate: prices change, and the operator can correct them with
REALTIME_PRICES (see `parse_price_overrides`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

_PER_TOKEN = 1e-6  # prices are per 1M tokens
# The model name of the built-in local echo agent (what `serve` runs on with no backend
# configured). Nobody bills for it: its calls cost nothing, and say so.
LOCAL_AGENT_MODEL = "local-echo-agent"


def is_local_agent(model: str | None) -> bool:
    return model == LOCAL_AGENT_MODEL


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """USD per 1M tokens; `per_minute` prices usage reported as seconds of audio."""

    text_in: float
    text_cached: float
    text_out: float
    audio_in: float
    audio_cached: float
    audio_out: float
    per_minute: float | None = None


_TOKEN_FIELDS = ("text_in", "text_cached", "text_out", "audio_in", "audio_cached", "audio_out")
_ALL_FIELDS = tuple(f.name for f in fields(ModelPrices))

# Sources, as read in 2026 (OpenAI's model pages at developers.openai.com unless noted):
#   gpt-realtime, gpt-realtime-mini: ../shared/spec/PROTOCOLS.md; the same figures are on
#     https://developers.openai.com/api/docs/models/compare?model=gpt-realtime and the
#     "quick comparison" of https://developers.openai.com/api/docs/models/gpt-realtime-2.1-mini
#   gpt-realtime-1.5: https://developers.openai.com/api/docs/models/gpt-realtime-1.5.md
#   gpt-realtime-2: https://developers.openai.com/api/docs/models/gpt-realtime-2.md
#   gpt-realtime-2.1-mini: https://developers.openai.com/api/docs/models/gpt-realtime-2.1-mini.md
#   gpt-4o-mini-realtime-preview:
#     https://developers.openai.com/api/docs/models/gpt-4o-mini-realtime-preview.md
#     (its cached text is 0.30, not gpt-realtime-mini's 0.06)
#   gpt-4o-realtime-preview (the 2024-12-17 and 2025-06-03 snapshots): no OpenAI docs page
#     found; from the pricing page as quoted on OpenAI's forum,
#     https://community.openai.com/t/help-me-understand-the-realtime-usage-block/1060242
#     (text 5 in, cached 2.50 for text and audio) and
#     https://community.openai.com/t/realtime-api-cost-anomaly-disproportionate-charges-on-audio-input/1285295
#     (audio 40 in, 80 out); text out 20 from
#     https://tokenmix.ai/blog/gpt-4o-realtime-audio-api-guide-2026. Its first snapshot,
#     2024-10-01 (retired), cost more and is priced here as the later ones: override it
#     if you still have it.
# Explicit entries for the newer names matter beyond their prices: lookup falls back to
# the longest "name-" prefix, so without them "gpt-realtime-2.1-mini" would be priced as
# gpt-realtime (three times mini's audio rate).
#
# Transcription models bill text in, text out and audio in (never audio out), with no
# cached rate (the compare page lists cached input as "-"), so cached = uncached here.
#   gpt-4o-transcribe: text 2.50 in / 10 out on
#     https://developers.openai.com/api/docs/models/gpt-4o-transcribe.md (that page heads
#     the table "Audio tokens", but a transcriber has no audio output: they are the text
#     rates); audio in 6.00 from OpenAI's cookbook,
#     https://github.com/openai/openai-cookbook/commit/a22e6cbbf6b6f0e767d0f7ae9d84c683dec000a1
#     ("$2.50 text in, $10.00 text out and $6.00 audio input all per 1M tokens").
#   gpt-4o-mini-transcribe: text 1.25 in / 5 out on
#     https://developers.openai.com/api/docs/models/compare?model=gpt-4o-mini-transcribe;
#     audio in 3.00 from the pricing page as quoted at https://halfpower.work/?p=3800.
#   Their per-minute figures (0.006, 0.003) are OpenAI's own per-minute estimates, as
#     quoted at https://tokenmix.ai/blog/gpt-4o-transcribe-speech-to-text-api-guide-2026;
#     they only apply if one of them ever reports usage as seconds.
#   whisper-1: 0.006 per minute, https://developers.openai.com/fr-FR/api/docs/models/whisper-1
#   gpt-realtime-whisper: 0.017 per minute,
#     https://developers.openai.com/api/docs/models/gpt-realtime-whisper.md
#   These two are billed by duration only, hence no token prices.
DEFAULT_PRICES: dict[str, ModelPrices] = {
    "gpt-realtime": ModelPrices(4.0, 0.40, 16.0, 32.0, 0.40, 64.0),
    "gpt-realtime-mini": ModelPrices(0.60, 0.06, 2.40, 10.0, 0.30, 20.0),
    "gpt-realtime-1.5": ModelPrices(4.0, 0.40, 16.0, 32.0, 0.40, 64.0),
    "gpt-realtime-2": ModelPrices(4.0, 0.40, 24.0, 32.0, 0.40, 64.0),
    "gpt-realtime-2.1-mini": ModelPrices(0.60, 0.06, 2.40, 10.0, 0.30, 20.0),
    "gpt-4o-realtime-preview": ModelPrices(5.0, 2.50, 20.0, 40.0, 2.50, 80.0),
    "gpt-4o-mini-realtime-preview": ModelPrices(0.60, 0.30, 2.40, 10.0, 0.30, 20.0),
    "gpt-4o-transcribe": ModelPrices(2.50, 2.50, 10.0, 6.0, 6.0, 0.0, per_minute=0.006),
    "gpt-4o-mini-transcribe": ModelPrices(1.25, 1.25, 5.0, 3.0, 3.0, 0.0, per_minute=0.003),
    "whisper-1": ModelPrices(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, per_minute=0.006),
    "gpt-realtime-whisper": ModelPrices(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, per_minute=0.017),
}


_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


class PriceTable:
    """Prices by model name, matched case-insensitively, dated snapshots to their family."""

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[str, ModelPrices] | None = None) -> None:
        source = DEFAULT_PRICES if prices is None else prices
        self._prices: dict[str, ModelPrices] = {k.strip().lower(): v for k, v in source.items()}

    def lookup(self, model: str | None) -> ModelPrices | None:
        if not isinstance(model, str):
            return None
        name = model.strip().lower()
        if not name:
            return None
        exact = self._prices.get(name)
        if exact is not None:
            return exact
        # A dated snapshot costs what its family does ("gpt-realtime-mini-2025-10-06" is
        # gpt-realtime-mini). Any other suffix is another model ("gpt-realtime-3"), which is
        # left unpriced rather than guessed at.
        snapshot = _SNAPSHOT_SUFFIX.search(name)
        if snapshot is None:
            return None
        return self._prices.get(name[: snapshot.start()])

    def with_overrides(self, overrides: Mapping[str, ModelPrices]) -> PriceTable:
        merged = dict(self._prices)
        merged.update({k.strip().lower(): v for k, v in overrides.items()})
        return PriceTable(merged)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and model.strip().lower() in self._prices

    def __repr__(self) -> str:
        return f"PriceTable({sorted(self._prices)})"


def parse_price_overrides(text: str) -> dict[str, ModelPrices]:
    """Read REALTIME_PRICES: a JSON object, or the path of a file holding one.

    `{"gpt-realtime": {"audio_in": 30}, "my-model": {"text_in": 1, ...all six...}}`.
    A model already in DEFAULT_PRICES may give only the fields that changed; any other
    model must give all six token prices. Errors are one line naming the model and field.
    """
    if not isinstance(text, str):
        raise ValueError(f"price overrides must be JSON text or a file path, got {_kind(text)}")
    stripped = text.strip()
    if not stripped:
        return {}
    data, origin = _load_json(stripped)
    if not isinstance(data, dict):
        raise ValueError(
            f"{origin}must be a JSON object mapping model name to prices, got {_kind(data)}"
        )
    result: dict[str, ModelPrices] = {}
    for raw_name, entry in data.items():
        name = raw_name.strip().lower()
        if not name:
            raise ValueError(f"{origin}has an empty model name")
        if name in result:
            raise ValueError(f"{origin}gives model {raw_name!r} twice (names ignore case)")
        result[name] = _parse_entry(raw_name, name, entry, origin)
    return result


def _load_json(text: str) -> tuple[Any, str]:
    try:
        return json.loads(text), ""
    except json.JSONDecodeError as exc:
        json_error = exc
    path = os.path.expanduser(text)
    if not os.path.isfile(path):
        raise ValueError(
            f"price overrides are not valid JSON ({json_error.msg} at line {json_error.lineno} "
            f"column {json_error.colno}) nor the path of an existing file"
        ) from None
    origin = f"price file {text}: "
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f), origin
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{origin}not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{origin}cannot be read ({exc})") from None


def _parse_entry(raw_name: str, name: str, entry: object, origin: str) -> ModelPrices:
    where = f"{origin}model {raw_name!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: prices must be a JSON object, got {_kind(entry)}")
    values: dict[str, Any] = {}  # floats, and per_minute may be None
    for key, value in entry.items():
        if key not in _ALL_FIELDS:
            raise ValueError(f"{where}: unknown field {key!r} (allowed: {', '.join(_ALL_FIELDS)})")
        if key == "per_minute" and value is None:
            values[key] = None
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(
                f"{where}: field {key!r} must be a non-negative number, got {json.dumps(value)}"
            )
        values[key] = float(value)
    base = DEFAULT_PRICES.get(name)
    if base is not None:
        return replace(base, **values)
    missing = [f for f in _TOKEN_FIELDS if f not in values]
    if missing:
        raise ValueError(
            f"{where}: not a default model, so it needs all six token prices; "
            f"missing {', '.join(missing)}"
        )
    return ModelPrices(**values)  # all six present, checked above


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


@dataclass(slots=True)
class TokenCounts:
    """Tokens by modality. `*_in` are the uncached input tokens and `*_cached` the cached
    ones, so text_in + text_cached + audio_in + audio_cached is the reported input_tokens."""

    text_in: int = 0
    text_cached: int = 0
    audio_in: int = 0
    audio_cached: int = 0
    text_out: int = 0
    audio_out: int = 0

    def add(self, other: TokenCounts) -> None:
        self.text_in += other.text_in
        self.text_cached += other.text_cached
        self.audio_in += other.audio_in
        self.audio_cached += other.audio_cached
        self.text_out += other.text_out
        self.audio_out += other.audio_out

    @property
    def input(self) -> int:
        return self.text_in + self.text_cached + self.audio_in + self.audio_cached

    @property
    def output(self) -> int:
        return self.text_out + self.audio_out

    @property
    def total(self) -> int:
        return self.input + self.output

    def cost(self, prices: ModelPrices) -> float:
        return _PER_TOKEN * (
            self.text_in * prices.text_in
            + self.text_cached * prices.text_cached
            + self.text_out * prices.text_out
            + self.audio_in * prices.audio_in
            + self.audio_cached * prices.audio_cached
            + self.audio_out * prices.audio_out
        )


def _count(value: object) -> int:
    # type() rather than isinstance: True is an int, and a gateway's `true` is no count.
    return value if type(value) is int and value > 0 else 0


def _details(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def counts_from_usage(usage: object) -> TokenCounts:
    """Token counts from `response.done`'s `response.usage`; zeros for None or garbage.

    Two gaps are filled by rule, both erring towards the higher estimate:
    - Tokens whose modality is not reported (input_tokens or output_tokens above the sum
      of their text and audio details, or details missing) count as audio: on a phone
      call most tokens are audio, and audio is the dearer rate in every table.
    - Cached tokens without `cached_tokens_details` are put on text first, up to the text
      input, and the rest on audio. Audio's cache discount is the larger one (32 -> 0.40
      against 4 -> 0.40 on gpt-realtime), so this under-claims the discount rather than
      over-claims it; it also follows the cache, which is a prefix of the conversation
      and so starts with the session's text instructions. When the details are there
      they are used, each capped at its modality's input.
    """
    if not isinstance(usage, Mapping):
        return TokenCounts()
    in_details = _details(usage.get("input_token_details"))
    out_details = _details(usage.get("output_token_details"))

    in_text = _count(in_details.get("text_tokens"))
    in_audio = _count(in_details.get("audio_tokens"))
    in_audio += max(0, _count(usage.get("input_tokens")) - in_text - in_audio)
    out_text = _count(out_details.get("text_tokens"))
    out_audio = _count(out_details.get("audio_tokens"))
    out_audio += max(0, _count(usage.get("output_tokens")) - out_text - out_audio)

    cached_details = _details(in_details.get("cached_tokens_details"))
    cached_text = min(_count(cached_details.get("text_tokens")), in_text)
    cached_audio = min(_count(cached_details.get("audio_tokens")), in_audio)
    rest = max(0, _count(in_details.get("cached_tokens")) - cached_text - cached_audio)
    if rest:
        extra = min(rest, in_text - cached_text)
        cached_text += extra
        cached_audio += min(rest - extra, in_audio - cached_audio)

    return TokenCounts(
        text_in=in_text - cached_text,
        text_cached=cached_text,
        audio_in=in_audio - cached_audio,
        audio_cached=cached_audio,
        text_out=out_text,
        audio_out=out_audio,
    )


def _transcription_counts(usage: Mapping[str, Any]) -> TokenCounts:
    # A transcriber reads audio (plus a text prompt) and writes text: input of unreported
    # modality is audio, all output is text. It reports no cached tokens.
    details = _details(usage.get("input_token_details"))
    in_text = _count(details.get("text_tokens"))
    in_audio = _count(details.get("audio_tokens"))
    in_audio += max(0, _count(usage.get("input_tokens")) - in_text - in_audio)
    return TokenCounts(
        text_in=in_text, audio_in=in_audio, text_out=_count(usage.get("output_tokens"))
    )


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value > 0 else 0.0


class CallUsage:
    """Running totals for one call."""

    __slots__ = ("model", "responses", "transcription", "transcription_seconds")

    def __init__(self) -> None:
        self.responses = 0  # response.done events that carried usage
        self.model = TokenCounts()
        self.transcription = TokenCounts()
        self.transcription_seconds = 0.0

    def add_response_done(self, response: object) -> None:
        """Count the `response` object of a `response.done` event."""
        try:
            usage = response.get("usage") if isinstance(response, Mapping) else None
        except Exception:  # a hostile Mapping; losing one count beats losing the call
            return
        self.add_model_usage(usage)

    def add_model_usage(self, usage: object) -> None:
        """Count a response's `usage` report."""
        try:
            counts = counts_from_usage(usage)
        except Exception:  # a hostile Mapping; losing one count beats losing the call
            return
        if counts.total:
            self.responses += 1
            self.model.add(counts)

    def add_transcription(self, usage: object) -> None:
        """Count the `usage` of a caller-transcription `.completed` event."""
        try:
            if not isinstance(usage, Mapping):
                return
            kind = usage.get("type")
            if kind == "duration" or (kind is None and "seconds" in usage):
                self.transcription_seconds += _seconds(usage.get("seconds"))
            else:
                self.transcription.add(_transcription_counts(usage))
        except Exception:
            return

    @property
    def has_transcription(self) -> bool:
        return bool(self.transcription.total or self.transcription_seconds)

    def transcription_cost(
        self, prices: PriceTable, transcription_model: str | None
    ) -> float | None:
        """The transcriber's cost, 0.0 when it reported nothing, None when it is unpriced."""
        if not self.has_transcription:
            return 0.0
        table = prices.lookup(transcription_model)
        if table is None:
            return None
        cost = self.transcription.cost(table)
        if self.transcription_seconds:
            if table.per_minute is None:
                return None
            cost += self.transcription_seconds / 60.0 * table.per_minute
        return cost

    def cost(
        self, prices: PriceTable, model: str | None, transcription_model: str | None
    ) -> float | None:
        """The estimated USD cost; None if the model is unpriced. An unpriced
        transcription is left out (the summary says so) rather than hiding the rest. The
        local echo agent costs nothing (its stand-in transcription neither)."""
        if is_local_agent(model):
            return 0.0
        table = prices.lookup(model)
        if table is None:
            return None
        cost = self.model.cost(table)
        transcription = self.transcription_cost(prices, transcription_model)
        return cost if transcription is None else cost + transcription

    def summary(
        self, prices: PriceTable, model: str | None, transcription_model: str | None
    ) -> str:
        m = self.model
        plural = "" if self.responses == 1 else "s"
        parts = [
            f"usage: {self.responses} response{plural}, model tokens in {m.input} "
            f"(text {m.text_in + m.text_cached}, audio {m.audio_in + m.audio_cached}, "
            f"cached {m.text_cached + m.audio_cached}) out {m.output} "
            f"(text {m.text_out}, audio {m.audio_out})"
        ]
        transcription_cost = self.transcription_cost(prices, transcription_model)
        if self.has_transcription:
            heard = []
            if self.transcription.total or not self.transcription_seconds:
                heard.append(f"{self.transcription.total} tokens")
            if self.transcription_seconds:
                heard.append(f"{self.transcription_seconds:.1f} s of audio")
            note = ""
            if transcription_cost is None:
                if prices.lookup(transcription_model) is None:
                    note = f" (unpriced: no price for model {transcription_model!r})"
                else:
                    note = f" (unpriced: no per-minute price for {transcription_model!r})"
            parts.append(f"transcription {', '.join(heard)}{note}")
        cost = self.cost(prices, model, transcription_model)
        if is_local_agent(model):
            parts.append("no cost (the built-in local echo agent)")
        elif cost is None:
            parts.append(f"est. cost unknown (no price for model {model!r}; set REALTIME_PRICES)")
        else:
            priced = str(model)
            if self.has_transcription:
                if transcription_cost is None:
                    priced += "; transcription not included"
                else:
                    priced += f" + {transcription_model}"
            parts.append(f"est. cost ${cost:.4f} ({priced})")
        return "; ".join(parts)
