from django.apps import AppConfig


class LlmProvidersConfig(AppConfig):
    name = "llm_providers"
    verbose_name = "LLM providers"
