from celery import shared_task

from battles import services


@shared_task(name="battles.tasks.reply_generate_task", ignore_result=True)
def reply_generate_task(reply_id: int) -> None:
    services.reply_generate(reply_id=reply_id)


@shared_task(name="battles.tasks.replies_reap_task", ignore_result=True)
def replies_reap_task() -> None:
    services.replies_reap()
