from celery import shared_task

from battles import generation


@shared_task(name="battles.tasks.reply_generate_task", ignore_result=True)
def reply_generate_task(reply_id: int) -> None:
    generation.reply_generate(reply_id=reply_id)


@shared_task(name="battles.tasks.replies_reap_task", ignore_result=True)
def replies_reap_task() -> None:
    generation.replies_reap()
