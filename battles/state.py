"""A battle's state, in one place: whether its replies are running, which sides failed, what the
visitor may do next (vote, follow up, retry, regenerate, stop) and what they may see (the
models' names, only once they have voted).

`BattleState.of(battle, replies)` reads a battle row and its last turn's replies, and runs no
query. The pages read it (`selectors.BattleView`); the services enforce it on the locked row
(`services._locked`), where a refused action raises the one `BattleError` its rule names.
Every rule of what a visitor may do or see is written here, so a new kind of battle changes
them in one place: the three modes (`Mode`) differ only here. A blind battle hides the names
until the vote; a side-by-side ("named") battle shows them from the start and its vote is
kept apart from the ratings; a chat has one side and no vote.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from battles.errors import AlreadyVotedError, BattleError
from battles.models import Battle, Mode, Reply

RUNNING = (Reply.Status.PENDING, Reply.Status.STREAMING)
SIDES = ("a", "b")


@dataclass(frozen=True)
class BattleState:
    voted: bool
    # The status of each side's reply in the last turn.
    statuses: dict[str, str]
    turns_taken: int
    max_turns: int
    mode: str = Mode.BLIND

    @classmethod
    def of(cls, battle: Battle, replies: Iterable[Reply]) -> "BattleState":
        return cls(
            mode=battle.mode,
            voted=battle.status == Battle.Status.VOTED,
            statuses={reply.side: reply.status for reply in replies},
            turns_taken=battle.turn_count,
            max_turns=settings.ARENA_MAX_TURNS,
        )

    # --- facts ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return any(status in RUNNING for status in self.statuses.values())

    @property
    def failed_sides(self) -> list[str]:
        return [side for side in SIDES if self.statuses.get(side) == Reply.Status.FAILED]

    @property
    def finished(self) -> bool:
        """Both sides of the last turn ended with an answer (a stopped one counts)."""
        return bool(self.statuses) and all(s in Reply.FINISHED for s in self.statuses.values())

    @property
    def turns_left(self) -> int:
        return max(0, self.max_turns - self.turns_taken)

    @property
    def blind(self) -> bool:
        return self.mode == Mode.BLIND

    @property
    def chat(self) -> bool:
        return self.mode == Mode.CHAT

    @property
    def names_revealed(self) -> bool:
        """In a blind battle the models' names show only after the vote; the visitor chose
        them in the other modes."""
        return self.voted or not self.blind

    # --- the rules: why an action is refused now, or None ---------------------------------------

    def vote_refusal(self) -> BattleError | None:
        if self.chat:
            return BattleError("A chat has no vote.")
        if self.voted:
            return AlreadyVotedError("This battle already has your vote.")
        if not self.finished:
            return BattleError(
                "Both answers must finish before you vote (retry a failed side first)."
            )
        return None

    def follow_up_refusal(self) -> BattleError | None:
        if self.voted:
            return BattleError("This battle is closed. Start a new round to keep chatting.")
        if not self.turns_left:
            if self.chat:
                return BattleError(
                    f"This chat has reached its limit of {self.max_turns} turns. "
                    "Start a new chat to keep going."
                )
            return BattleError(
                f"This battle has reached its limit of {self.max_turns} turns. "
                "Vote, then start a new round."
            )
        if not self.finished:
            if self.chat:
                return BattleError("Wait until the answer is finished (or retry it).")
            return BattleError("Wait until both answers are finished (or retry the failed side).")
        return None

    def retry_refusal(self, side: str) -> BattleError | None:
        """Only a failed side runs again; the other keeps its answer."""
        if self.voted:
            return BattleError("This battle is closed.")
        if self.statuses.get(side) != Reply.Status.FAILED:
            return BattleError("Only a failed answer can be retried.")
        return None

    def regenerate_refusal(self) -> BattleError | None:
        """Both sides answer again: allowed before the vote once nothing is running."""
        if self.voted:
            return BattleError("This battle is closed.")
        if self.running or not self.statuses:
            return BattleError("Wait until both answers are finished before regenerating.")
        return None

    # --- what the page offers -------------------------------------------------------------------

    @property
    def may_vote(self) -> bool:
        return self.vote_refusal() is None

    @property
    def may_follow_up(self) -> bool:
        return self.follow_up_refusal() is None

    @property
    def retryable_sides(self) -> list[str]:
        return [side for side in SIDES if self.retry_refusal(side) is None]

    @property
    def may_regenerate(self) -> bool:
        return self.regenerate_refusal() is None

    @property
    def may_stop(self) -> bool:
        return self.running
