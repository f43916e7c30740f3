"""The model's responses, in order: which one is in progress, whether one of ours is on
its way, which were interrupted, and what is owed.

A `response.create` while a response is active is refused ("already has an active
response"), and so is one sent before the previous `response.create` was answered. So the
bridge asks for a response only when none is active or requested, and otherwise owes one,
asked for as soon as the response in the way is done.
"""

from __future__ import annotations


class ResponseSequencer:
    __slots__ = ("_cancel_sent_for", "_interrupted", "_with_audio", "active", "owed", "requested")

    def __init__(self) -> None:
        self.active: str | None = None  # the response in progress
        # A response.create of ours is on its way: until its response.created, another
        # would be refused.
        self.requested = False
        self.owed = False  # a response.create waits for the active response to end
        self._cancel_sent_for: str | None = None
        # Responses the caller talked over: nothing more of them may play.
        self._interrupted: set[str] = set()
        # Responses that have spoken (an end_call in one of them follows its own goodbye).
        self._with_audio: set[str] = set()

    # --- what the session says -------------------------------------------------------------

    def created(self, response_id: str | None) -> None:
        self.active = response_id
        self.requested = False

    def done(self, response_id: str | None) -> None:
        if response_id == self.active:
            self.active = None
        if response_id is not None:
            # No delta of a finished response can follow: it need not be remembered.
            self._interrupted.discard(response_id)
            self._with_audio.discard(response_id)

    def refused(self, code: str | None) -> None:
        """The session refused a request with an error: if it was our response.create, ask
        again once the response in the way is done, so what it was for (a tool output,
        keys) gets its answer."""
        if self.requested:
            self.requested = False
            self.owed = code == "conversation_already_has_active_response"

    def spoke(self, response_id: str) -> None:
        """`response_id` has audio (called once per item, not per delta)."""
        self._with_audio.add(response_id)

    def has_spoken(self, response_id: str | None) -> bool:
        return response_id is not None and response_id in self._with_audio

    # --- what the bridge wants -------------------------------------------------------------

    def want(self) -> bool:
        """A response is wanted: True if it may be asked for now (it is then counted as
        requested); False if it is owed until the response in the way is done."""
        if self.active is None and not self.requested:
            self.requested = True
            self.owed = False  # (this is the one that was owed, if one was)
            return True
        self.owed = True
        return False

    def take_owed(self) -> bool:
        """The owed response, if one is owed and nothing is in the way now."""
        if self.owed and self.active is None:
            self.owed = False
            return True
        return False

    def request(self) -> None:
        """A response.create of ours (a greeting, a goodbye, a resume) goes out now."""
        self.requested = True

    @property
    def busy(self) -> bool:
        """A response is active, asked for, or owed."""
        return self.active is not None or self.requested or self.owed

    # --- interruptions ---------------------------------------------------------------------

    def interrupted(self, response_id: str | None) -> bool:
        return response_id is not None and response_id in self._interrupted

    def interrupt(self, response_ids: set[str], cancel: bool) -> bool:
        """The caller talked over the active response and `response_ids` (whose audio is
        still queued or incomplete): nothing more of them plays. True if the active
        response must be cancelled by us (`cancel`), once per response."""
        self._interrupted |= response_ids
        active = self.active
        if active is None:
            return False
        self._interrupted.add(active)
        if cancel and self._cancel_sent_for != active:
            # Cancel before truncating, so the item is not still growing when cut.
            self._cancel_sent_for = active
            return True
        return False

    def forget_session(self) -> None:
        """The session is gone: none of its responses will say anything more."""
        self.active = self._cancel_sent_for = None
        self._interrupted.clear()
        self._with_audio.clear()
        self.owed = False
        self.requested = False
