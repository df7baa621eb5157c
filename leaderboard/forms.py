from django import forms

from leaderboard.categories import OVERALL, is_valid_category
from leaderboard.selectors import SORTS, BoardFilters


class BoardForm(forms.Form):
    """The leaderboard's query string: category, search, filters and sort."""

    category = forms.CharField(required=False, max_length=40)
    q = forms.CharField(required=False, max_length=100, strip=True)
    organization = forms.CharField(required=False, max_length=200)
    license = forms.CharField(required=False, max_length=100)
    retired = forms.BooleanField(required=False)
    sort = forms.ChoiceField(required=False, choices=[(key, key) for key in SORTS])
    dir = forms.ChoiceField(required=False, choices=[("asc", "asc"), ("desc", "desc")])

    def clean_category(self) -> str:
        category = self.cleaned_data["category"] or OVERALL
        if not is_valid_category(category):
            raise forms.ValidationError(
                "Unknown category: choose one from the list (overall is shown)."
            )
        return category

    def selected_category(self) -> str:
        return self.cleaned_data.get("category") or OVERALL

    def filters(self) -> BoardFilters:
        """The valid part of the query; an invalid field falls back to its default."""
        data = self.cleaned_data
        return BoardFilters(
            q=data.get("q", ""),
            organization=data.get("organization", ""),
            license=data.get("license", ""),
            show_retired=data.get("retired", False),
            sort=data.get("sort") or "rank",
            descending=data.get("dir") == "desc",
        )
