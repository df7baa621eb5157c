from django.apps import AppConfig


class BattlesConfig(AppConfig):
    name = "battles"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from battles.signals import adopt_anonymous_battles

        user_logged_in.connect(adopt_anonymous_battles, dispatch_uid="battles.adopt_on_login")
