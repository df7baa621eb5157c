from celery import shared_task

from battles import generation


@shared_task(name="battles.tasks.reply_generate_task", ignore_result=True)
def reply_generate_task(*reply_ids: int) -> None:
    """Both sides of a turn travel in one task (a single id from the reaper or a retry)."""
    generation.reply_generate(reply_ids=reply_ids)


@shared_task(name="battles.tasks.replies_reap_task", ignore_result=True)
def replies_reap_task() -> None:
    generation.replies_reap()
