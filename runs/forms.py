"""Forms: validation of everything a user types."""

import re

from django import forms
from django.contrib.auth import get_user_model
from django.utils.text import slugify

from runs.crypto import TOKEN_PREFIX
from runs.models import Membership, Organisation, Role

# Champ tokens are `api_` followed by random characters (CHAMP_API.md).
TOKEN_RE = re.compile(r"^api_[A-Za-z0-9_\-\.]{8,256}$")


class OrganisationForm(forms.ModelForm):
    class Meta:
        model = Organisation
        fields = ["name", "slug", "api_base_url"]
        help_texts = {"slug": "Used in URLs and in the webhook address. Leave blank to derive it."}

    slug = forms.SlugField(max_length=80, required=False)
    api_base_url = forms.URLField(
        label="Champ API base URL",
        assume_scheme="https",
        help_text="https://api.champ.ai for real Champ; the built-in simulator by default.",
    )

    def clean_slug(self):
        slug = self.cleaned_data.get("slug") or slugify(self.cleaned_data.get("name", ""))
        if not slug:
            raise forms.ValidationError("Give the organisation a name or a slug.")
        clash = Organisation.objects.filter(slug=slug).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("An organisation with this slug already exists.")
        return slug

    def clean_api_base_url(self):
        return self.cleaned_data["api_base_url"].rstrip("/")


class TokenForm(forms.Form):
    label = forms.CharField(max_length=100, help_text="What the token is for, e.g. “CI bot”.")
    secret = forms.CharField(
        label="Champ API token",
        max_length=300,
        strip=True,
        # render_value=False: a re-displayed form never echoes the token back.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Created in Champ under Tokens → Create Token (scope “API”). "
        "It is encrypted at once and never shown again.",
    )

    def clean_secret(self):
        secret = self.cleaned_data["secret"]
        if not secret.startswith(TOKEN_PREFIX):
            raise forms.ValidationError(
                "That is not a Champ API token: API tokens start with “api_”."
            )
        if not TOKEN_RE.match(secret):
            raise forms.ValidationError(
                "That token looks malformed: after “api_” expect at least 8 letters, "
                "digits, dashes or underscores, and no spaces."
            )
        return secret


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)

    def __init__(self, *args, organisation: Organisation, **kwargs):
        super().__init__(*args, **kwargs)
        self.organisation = organisation

    def clean_username(self):
        username = self.cleaned_data["username"]
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"There is no active user called “{username}”.")
        if Membership.objects.filter(user=user, organisation=self.organisation).exists():
            raise forms.ValidationError(f"{username} is already a member.")
        self.member = user
        return username


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
