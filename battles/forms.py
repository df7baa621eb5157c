from django import forms
from django.conf import settings

from battles.models import Vote
from llm_providers.models import LLMModel


class PromptForm(forms.Form):
    prompt = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Ask anything…"}),
        strip=True,
        error_messages={
            "required": "Type a prompt first: it cannot be empty.",
            "null_characters_not_allowed": "The prompt contains a NUL character; remove it.",
        },
    )

    def clean_prompt(self) -> str:
        prompt = self.cleaned_data["prompt"]
        if not any(ch.isprintable() and not ch.isspace() for ch in prompt):
            # Only invisible characters (zero-width spaces and the like): nothing to answer.
            raise forms.ValidationError(self.fields["prompt"].error_messages["required"])
        limit = settings.ARENA_PROMPT_MAX_CHARS
        if len(prompt) > limit:
            raise forms.ValidationError(
                f"The prompt is {len(prompt):,} characters long; the limit is {limit:,}."
            )
        return prompt


def _model_by_name(label: str) -> forms.ModelChoiceField:
    """An active model chosen by its public name: typed or picked in a filterable list
    (`<input list>` and its `<datalist>`), so a long catalog stays searchable without script."""
    return forms.ModelChoiceField(
        queryset=LLMModel.objects.active(),
        to_field_name="name",
        label=label,
        error_messages={
            "required": f"Choose {label.lower()}.",
            "invalid_choice": "No active model has that name: pick one from the list.",
        },
    )


class CompareForm(PromptForm):
    """Side by side: two models chosen by name and the first prompt."""

    model_a = _model_by_name("Model A")
    model_b = _model_by_name("Model B")

    def clean(self):
        cleaned = super().clean()
        a, b = cleaned.get("model_a"), cleaned.get("model_b")
        if a is not None and a == b:
            self.add_error("model_b", "Choose two different models to compare.")
        return cleaned


class ChatForm(PromptForm):
    """A chat: one model chosen by name and the first prompt."""

    model = _model_by_name("A model")


class VoteForm(forms.Form):
    choice = forms.ChoiceField(
        choices=Vote.Choice.choices,
        error_messages={
            "required": "Choose A, B, tie or both bad.",
            "invalid_choice": "Unknown vote. Choose A, B, tie or both bad.",
        },
    )


class RenameForm(forms.Form):
    title = forms.CharField(max_length=120, strip=True)

    def clean_title(self) -> str:
        title = " ".join(self.cleaned_data["title"].split())
        if not title or "\x00" in title:
            raise forms.ValidationError("Give the session a name.")
        return title


class SidebarPageForm(forms.Form):
    offset = forms.IntegerField(min_value=0, required=False)

    def clean_offset(self) -> int:
        return self.cleaned_data["offset"] or 0
